"""Random BinaryConnect networks, as checkpoint dictionaries, for testing the hardware path.

Random ±1 weights and random batch-norm statistics (negative scales
included) give requantization parameters of every sign and size, which the
trained reference models alone would not exercise.  :func:`random_state`
makes multilayer perceptrons, :func:`random_cnn_state` convolutional
networks; :func:`bchw.export.export_state` makes either a bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def random_state(sizes: list[int], *, act_bits: int = 8, seed: int = 0,
                 act_clip: float = 2.0, negative_scales: bool = True) -> dict[str, Any]:
    """A checkpoint dictionary (the :mod:`bchw.nn` contract) of a random MLP.

    The batch-norm statistics are those of random calibration images, jittered,
    so that every layer's outputs spread over their range instead of
    saturating, as in a trained network.
    """
    rng = np.random.default_rng(seed)
    mean, std = 0.3, 0.3
    x = (random_images(256, sizes[0], seed + 1) / 255.0 - mean) / std
    step = act_clip / ((1 << act_bits) - 1)
    layers = []
    for _i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weight = rng.uniform(-1, 1, size=(n_out, n_in))
        y = x @ np.where(weight >= 0, 1.0, -1.0).T
        mu = y.mean(axis=0) + rng.normal(0, 0.2, n_out) * (y.std(axis=0) + 1e-3)
        var = (y.var(axis=0) + 1e-3) * rng.uniform(0.5, 2.0, n_out)
        gamma = rng.uniform(0.5, 2.0, size=n_out)
        if negative_scales:
            gamma *= rng.choice([-1.0, 1.0], size=n_out, p=[0.2, 0.8])
        beta = rng.normal(0.5, 0.5, size=n_out)
        z = gamma * (y - mu) / np.sqrt(var + 1e-4) + beta
        x = np.clip(np.round(z / step), 0, (1 << act_bits) - 1) * step
        layers.append({
            "weight": torch.tensor(weight, dtype=torch.float32),
            "bn_mean": torch.tensor(mu, dtype=torch.float32),
            "bn_var": torch.tensor(var, dtype=torch.float32),
            "bn_weight": torch.tensor(gamma, dtype=torch.float32),
            "bn_bias": torch.tensor(beta, dtype=torch.float32),
            "bn_eps": 1e-4,
        })
    return {
        "format": "bchw-checkpoint", "version": 1,
        "config": {"spec": "-".join(map(str, sizes)), "act_bits": act_bits,
                   "act_clip": act_clip, "dataset": "random", "binarize": "det", "seed": seed},
        "input_norm": {"mean": mean, "std": std},
        "layers": layers,
        "metrics": {},
    }


def random_cnn(spec: str, in_shape: Sequence[int], *, act_bits: int = 8, seed: int = 0,
               act_clip: float = 2.0, stat_images: int = 512):
    """A :class:`bchw.nn.BinaryNet` of ``spec`` (:func:`bchw.nn.parse_net_spec`, convolutions
    included) on images of ``in_shape`` [C, H, W], with random weights, in eval mode.

    The weights are PyTorch's random initialisation; every third channel of each batch norm
    has a negative scale (a convolution that pools then takes the minimum of those codes);
    the running statistics are those of a batch of ``stat_images`` random images, so that
    every layer's outputs spread over their range.  The global torch random state is left
    as it was.
    """
    from bchw.nn import BinaryNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BinaryNet(spec, in_shape, act_bits=act_bits, act_clip=act_clip,
                          bn_momentum=1.0)
        model.set_input_norm(0.3, 0.35)
        with torch.no_grad():
            for norm in model.norms:
                n = norm.weight.numel()
                flip = torch.where(torch.arange(n) % 3 == 1, -1.0, 1.0)
                norm.weight.copy_(torch.empty(n).uniform_(0.5, 2.0) * flip)
                norm.bias.uniform_(-0.5, 1.0)
            model.train()      # momentum 1: the running statistics are this batch's
            model(torch.tensor(random_images(stat_images, model.in_features, seed + 1),
                               dtype=torch.float32))
    return model.eval()


def random_cnn_state(spec: str, in_shape: Sequence[int], *, act_bits: int = 8, seed: int = 0,
                     act_clip: float = 2.0, stat_images: int = 512) -> dict[str, Any]:
    """The checkpoint dictionary (the :mod:`bchw.nn` contract) of :func:`random_cnn`."""
    from bchw.nn import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    model = random_cnn(spec, in_shape, act_bits=act_bits, seed=seed, act_clip=act_clip,
                       stat_images=stat_images)
    layers = [{"weight": layer.weight.detach().float().clone(),
               "bn_mean": norm.running_mean.detach().float().clone(),
               "bn_var": norm.running_var.detach().float().clone(),
               "bn_weight": norm.weight.detach().float().clone(),
               "bn_bias": norm.bias.detach().float().clone(),
               "bn_eps": float(norm.eps)}
              for layer, norm in zip(model.binary_layers, model.norms)]
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "config": {**model.architecture(), "dataset": "random", "seed": seed},
        "input_norm": {"mean": 0.3, "std": 0.35},
        "layers": layers,
        "metrics": {},
    }


def random_images(n: int, n_in: int, seed: int = 0) -> np.ndarray:
    """u8 images: uniform noise, with some all-zero and all-255 ones for the extremes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, n_in), dtype=np.uint8)
    if n >= 3:
        images[0] = 0
        images[1] = 255
    return images


_PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
           83, 89, 97, 101, 127, 131, 151, 173, 197, 211, 229, 251, 257, 263, 277, 293]


@dataclass(frozen=True)
class Architecture:
    """A random network and accelerator configuration."""

    sizes: list[int]
    act_bits: int
    pe: list[int]
    simd: list[int]
    in_lanes: int
    seed: int

    @property
    def name(self) -> str:
        fold = ",".join(f"{p}x{s}" for p, s in zip(self.pe, self.simd))
        return f"{'-'.join(map(str, self.sizes))}_A{self.act_bits}_{fold}_L{self.in_lanes}"


def random_architecture(seed: int, max_width: int = 300, max_lanes: int = 64,
                        max_steps: int = 2048) -> Architecture:
    """1 to 4 layers of widths 1..max_width (primes and small ones often), A from 1 to 8, and
    a random folding, PE and SIMD dividing the sizes or not. An engine gets at most
    ``max_lanes`` adder lanes (which bounds the simulators' build time) and, as far as that
    allows, at most ``max_steps`` cycles per image (which bounds the simulation time)."""
    rng = np.random.default_rng([seed, 0xBC])

    def width() -> int:
        kind = rng.integers(0, 4)
        if kind == 0:
            return int(rng.choice(_PRIMES))
        if kind == 1:
            return int(rng.integers(1, 9))
        return int(rng.integers(1, max_width + 1))

    def log_uniform(hi: int) -> int:
        return min(hi, max(1, round(2 ** rng.uniform(0, np.log2(hi) + 0.5))))

    n_layers = int(rng.integers(1, 5))
    sizes = [width() for _ in range(n_layers + 1)]
    pe, simd = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        need = -(-n_in * n_out // max_steps)
        lanes = int(rng.integers(min(need, max_lanes), max_lanes + 1))
        p = log_uniform(min(n_out, lanes))
        pe.append(p)
        simd.append(min(n_in, -(-lanes // p)))
    return Architecture(sizes=sizes, act_bits=int(rng.integers(1, 9)), pe=pe, simd=simd,
                        in_lanes=log_uniform(min(sizes[0], 32)), seed=seed)
