"""BinaryConnect layers, the MLP they make, and its checkpoint format.

After Courbariaux, Bengio and David, "BinaryConnect: Training Deep Neural
Networks with binary weights during propagations" (NeurIPS 2015), and their
Theano code: real-valued weights are kept for the updates, binarized for the
propagations, clipped to [-1, 1] after each step; the gradient with respect
to the binary weight is applied to the real weight unchanged.

Activations between layers are fake-quantized to exactly the unsigned A-bit
codes the hardware computes (see :func:`activation_codes`), so the float
model and the integer golden model agree on the class for nearly every input.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bchw.errors import BchwError, atomic_write_bytes

BINARIZE_MODES = ("det", "stoch", "float")
CHECKPOINT_FORMAT = "bchw-checkpoint"
CHECKPOINT_VERSION = 1
# Numbers in a checkpoint lie within these magnitudes (positive ones at least
# MIN_POSITIVE): beyond them they are nonsense for a network, and folding them
# into integers in bchw.export would overflow float64.
MAX_MAGNITUDE = 1e30
MIN_POSITIVE = 1e-30


def hard_sigmoid(w: torch.Tensor) -> torch.Tensor:
    """clip((w + 1) / 2, 0, 1): the probability that stochastic binarization gives +1."""
    return ((w + 1) / 2).clamp(0, 1)


def binarize(w: torch.Tensor, mode: str, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Binarize real weights to ±1 ('det', 'stoch') or pass them through ('float').

    'det' maps w >= 0 to +1 (zero included: the hardware stores bit 1 for
    w >= 0), 'stoch' draws +1 with probability hard_sigmoid(w) from
    ``generator`` (torch's global generator if None).
    """
    # (bool * 2 - 1 in place: a quarter of the time of torch.where on CPU.)
    if mode == "det":
        return (w >= 0).to(w.dtype).mul_(2).sub_(1)
    if mode == "stoch":
        u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        # u < hard_sigmoid(w)  <=>  2u - 1 < w, for u in [0, 1), without the clamp.
        return (u.mul_(2).sub_(1) < w).to(w.dtype).mul_(2).sub_(1)
    if mode == "float":
        return w
    raise ValueError(f"binarize mode must be one of {BINARIZE_MODES}, not {mode!r}")


class _StraightThrough(torch.autograd.Function):
    """Binarized weights forward, the gradient passed to the real weights unchanged
    (identity straight-through), without the extra tensors of ``w + (wb - w).detach()``."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, mode: str, generator: torch.Generator | None
                ) -> torch.Tensor:
        return binarize(w, mode, generator)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class BinaryLinear(nn.Module):
    """Linear layer without bias whose propagations use binarized weights.

    ``weight`` [out, in] holds the real values, initialised U(-1, 1) and kept
    in [-1, 1] by :meth:`clip_`. Training forwards binarize with ``mode``
    (identity straight-through gradient); eval forwards binarize
    deterministically, as the hardware does ('float' never binarizes), unless
    ``eval_weights`` is 'real': then they use the real weights, the paper's
    test-time rule for stochastic BinaryConnect (its Theano code's
    ``deterministic and stochastic`` case).
    ``lr_scale`` is the paper's per-layer Glorot learning-rate scale.
    """

    def __init__(self, in_features: int, out_features: int, mode: str = "det",
                 generator: torch.Generator | None = None):
        super().__init__()
        if mode not in BINARIZE_MODES:
            raise ValueError(f"mode must be one of {BINARIZE_MODES}, not {mode!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.mode = mode
        self.generator = generator
        self.lr_scale = 1.0 / math.sqrt(1.5 / (in_features + out_features))
        self.eval_weights = "binary"
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))

    def binary_weight(self) -> torch.Tensor:
        if self.mode == "float" or (not self.training and self.eval_weights == "real"):
            return self.weight
        if not self.training:
            return binarize(self.weight, "det")
        return _StraightThrough.apply(self.weight, self.mode, self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.binary_weight().t()

    @torch.no_grad()
    def clip_(self) -> None:
        self.weight.clamp_(-1, 1)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, mode={self.mode}"


def activation_codes(z: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """The hardware's activation: clamp(round(z / s), 0, 2**bits - 1), s = clip / (2**bits - 1).

    Rounding is half up, floor(z / s + 1/2), which is what an integer
    requantizer ``(acc * m + o) >> shift`` computes when ``o`` carries the half.
    """
    top = 2**bits - 1
    return torch.floor(z / (clip / top) + 0.5).clamp(0, top)


class _QuantizedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.clip = clip
        return activation_codes(z, bits, clip) * (clip / (2**bits - 1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        return grad * ((z >= 0) & (z <= ctx.clip)).to(grad.dtype), None, None


class ActQuant(nn.Module):
    """ReLU fake-quantized to ``bits`` unsigned bits over [0, clip].

    The output is exactly ``code * s`` with ``code`` from
    :func:`activation_codes`; the gradient passes straight through the
    rounding and is zero outside [0, clip]. ``quantize=False`` gives a plain
    ReLU, for float baselines.
    """

    def __init__(self, bits: int = 8, clip: float = 2.0, quantize: bool = True):
        super().__init__()
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in 1..16, not {bits}")
        if not clip > 0:
            raise ValueError(f"clip must be positive, not {clip}")
        self.bits = bits
        self.clip = float(clip)
        self.quantize = quantize

    @property
    def step(self) -> float:
        return self.clip / (2**self.bits - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.quantize:
            return torch.relu(z)
        return _QuantizedReLU.apply(z, self.bits, self.clip)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip={self.clip}, quantize={self.quantize}"


def parse_spec(spec: Any) -> list[int]:
    """Layer sizes from a spec such as "784-256-256-10" (at least two positive ints)."""
    if not isinstance(spec, str) or not re.fullmatch(r"\d+(-\d+)+", spec.strip()):
        raise BchwError(f"layer sizes must look like '784-256-10' (two or more positive "
                        f"integers joined by '-'), not {spec!r}", field="spec")
    sizes = [int(s) for s in spec.strip().split("-")]
    if min(sizes) < 1:
        raise BchwError(f"layer sizes must be positive, not {spec!r}", field="spec")
    return sizes


def square_hinge_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean(max(0, 1 - t * y)**2) with targets t = 2 * onehot - 1, as in the paper."""
    t = 2 * nn.functional.one_hot(labels, scores.shape[1]).to(scores.dtype) - 1
    return (1 - t * scores).clamp(min=0).square().mean()


class BinaryMLP(nn.Module):
    """BinaryLinear -> BatchNorm1d -> ActQuant per hidden layer; BinaryLinear -> BatchNorm1d last.

    Input: pixels 0..255 as a float tensor [batch, features]; the model
    normalises them itself, x = (pix / 255 - input_mean) / input_std, with
    scalar buffers set from the training set (:meth:`set_input_norm`).
    Output: class scores [batch, classes].
    """

    def __init__(self, spec: str, *, act_bits: int = 8, act_clip: float = 2.0,
                 binarize: str = "det", float_act: bool = False, bn_eps: float = 1e-4,
                 bn_momentum: float = 0.15, generator: torch.Generator | None = None):
        super().__init__()
        self.sizes = parse_spec(spec)
        self.spec = "-".join(map(str, self.sizes))
        self.act_bits = act_bits
        self.act_clip = float(act_clip)
        self.binarize = binarize
        self.float_act = float_act
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.linears = nn.ModuleList(BinaryLinear(i, o, binarize, generator) for i, o in pairs)
        self.norms = nn.ModuleList(nn.BatchNorm1d(o, eps=bn_eps, momentum=bn_momentum)
                                   for _, o in pairs)
        self.acts = nn.ModuleList(ActQuant(act_bits, act_clip, quantize=not float_act)
                                  for _ in pairs[:-1])
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(1.0))

    def set_input_norm(self, mean: float, std: float) -> None:
        self.input_mean.fill_(mean)
        self.input_std.fill_(std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255 - self.input_mean) / self.input_std
        for i, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            x = norm(linear(x))
            if i < len(self.acts):
                x = self.acts[i](x)
        return x

    def clip_(self) -> None:
        for linear in self.linears:
            linear.clip_()

    def set_eval_weights(self, kind: str) -> None:
        """Evaluate with 'binary' weights (the hardware's, the default) or 'real' ones."""
        if kind not in ("binary", "real"):
            raise ValueError(f"eval weights must be 'binary' or 'real', not {kind!r}")
        for linear in self.linears:
            linear.eval_weights = kind

    def architecture(self) -> dict:
        """The settings a checkpoint's config must record to rebuild this model."""
        return {"spec": self.spec, "act_bits": self.act_bits, "act_clip": self.act_clip,
                "binarize": self.binarize, "float_act": self.float_act}


# Checkpoints: plain tensors, numbers, strings, lists and dicts, so that
# torch.load(weights_only=True) reads them without running pickled code.

def save_checkpoint(path: str | os.PathLike, model: BinaryMLP, config: dict,
                    metrics: dict) -> None:
    """Write ``model`` with its training ``config`` and ``metrics`` (plain JSON types)."""
    arch = model.architecture()
    for key, value in arch.items():
        if key in config and config[key] != value:
            raise ValueError(f"config[{key!r}] = {config[key]!r} but the model has {value!r}")
    layers = [{"weight": linear.weight.detach().float().cpu().clone(),
               "bn_mean": norm.running_mean.detach().float().cpu().clone(),
               "bn_var": norm.running_var.detach().float().cpu().clone(),
               "bn_weight": norm.weight.detach().float().cpu().clone(),
               "bn_bias": norm.bias.detach().float().cpu().clone(),
               "bn_eps": float(norm.eps)}
              for linear, norm in zip(model.linears, model.norms)]
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": {**config, **arch},
            "input_norm": {"mean": float(model.input_mean), "std": float(model.input_std)},
            "layers": layers, "metrics": metrics}
    _validate_checkpoint(ckpt, path)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    try:  # refuse to write what load_checkpoint could not read
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"config and metrics must hold plain JSON types only: {e}") from None
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint; every problem is a BchwError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise BchwError("no such checkpoint file (train one with `bchw train`)", path=path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # torch raises many types for truncated or foreign files; all mean the same here.
    except Exception as e:  # noqa: BLE001
        # One line, the reason only: not torch's advice to load the pickled code anyway.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise BchwError(f"not a readable bchw checkpoint (truncated, corrupt, or holding "
                        f"more than tensors and plain data): {type(e).__name__}: "
                        f"{reason.split('. ', 1)[0]}", path=path) from None
    _validate_checkpoint(ckpt, path)
    return ckpt


def model_from_checkpoint(ckpt: dict | str | os.PathLike) -> BinaryMLP:
    """Rebuild the model of a checkpoint (a loaded dict or a path), in eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = ckpt["config"]
    model = BinaryMLP(cfg["spec"], act_bits=cfg["act_bits"], act_clip=cfg["act_clip"],
                      binarize=cfg["binarize"], float_act=cfg.get("float_act", False))
    with torch.no_grad():
        for layer, linear, norm in zip(ckpt["layers"], model.linears, model.norms):
            linear.weight.copy_(layer["weight"])
            norm.running_mean.copy_(layer["bn_mean"])
            norm.running_var.copy_(layer["bn_var"])
            norm.weight.copy_(layer["bn_weight"])
            norm.bias.copy_(layer["bn_bias"])
            norm.eps = layer["bn_eps"]
    model.set_input_norm(ckpt["input_norm"]["mean"], ckpt["input_norm"]["std"])
    return model.eval()


def _validate_checkpoint(ckpt: Any, path: str | os.PathLike) -> None:
    def fail(field: str | None, message: str):
        raise BchwError(message, path=path, field=field)

    def get(d: dict, key: str, types: type | tuple, where: str) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in d:
            fail(name, "missing")
        value = d[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                    else (types,)):
            fail(name, f"must be {_type_names(types)}, not a bool")
        if not isinstance(value, types):
            fail(name, f"must be {_type_names(types)}, not {type(value).__name__}")
        return value

    def number(d: dict, key: str, where: str, *, positive: bool) -> float:
        value = get(d, key, (int, float), where)
        lo = MIN_POSITIVE if positive else -MAX_MAGNITUDE
        if not lo <= value <= MAX_MAGNITUDE:  # NaN fails too; exact for huge ints
            fail(f"{where}.{key}", f"must be a number in {lo:g}..{MAX_MAGNITUDE:g}, "
                                   f"not {_show(value)}")
        return float(value)

    if not isinstance(ckpt, dict):
        fail(None, f"must hold a dict, not {type(ckpt).__name__}")
    if get(ckpt, "format", str, "") != CHECKPOINT_FORMAT:
        fail("format", f"must be {CHECKPOINT_FORMAT!r}, not {_show(ckpt['format'])}")
    if get(ckpt, "version", int, "") != CHECKPOINT_VERSION:
        fail("version", f"this bchw reads version {CHECKPOINT_VERSION}, "
                        f"not {_show(ckpt['version'])}")

    cfg = get(ckpt, "config", dict, "")
    try:
        sizes = parse_spec(get(cfg, "spec", str, "config"))
    except BchwError as e:
        fail("config.spec", e.message)
    act_bits = get(cfg, "act_bits", int, "config")
    if not 1 <= act_bits <= 16:
        fail("config.act_bits", f"must be in 1..16, not {_show(act_bits)}")
    number(cfg, "act_clip", "config", positive=True)
    if get(cfg, "binarize", str, "config") not in BINARIZE_MODES:
        fail("config.binarize", f"must be one of {BINARIZE_MODES}, not {_show(cfg['binarize'])}")
    if "float_act" in cfg:
        get(cfg, "float_act", bool, "config")
    get(cfg, "dataset", str, "config")
    get(cfg, "seed", int, "config")

    norm = get(ckpt, "input_norm", dict, "")
    number(norm, "mean", "input_norm", positive=False)
    number(norm, "std", "input_norm", positive=True)

    layers = get(ckpt, "layers", list, "")
    if len(layers) != len(sizes) - 1:
        fail("layers", f"spec {cfg['spec']!r} has {len(sizes) - 1} layers, "
                       f"the checkpoint {len(layers)}")
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            fail(where, f"must be a dict, not {type(layer).__name__}")
        shapes = {"weight": (sizes[i + 1], sizes[i]), "bn_mean": (sizes[i + 1],),
                  "bn_var": (sizes[i + 1],), "bn_weight": (sizes[i + 1],),
                  "bn_bias": (sizes[i + 1],)}
        for key, shape in shapes.items():
            t = get(layer, key, torch.Tensor, where)
            if t.layout != torch.strided or t.device.type != "cpu":
                fail(f"{where}.{key}", f"must be a dense CPU tensor, not {t.layout} on "
                                       f"{t.device.type}")
            if not t.is_floating_point():
                fail(f"{where}.{key}", f"must be a floating-point tensor, not {t.dtype}")
            if tuple(t.shape) != shape:
                fail(f"{where}.{key}", f"shape must be {list(shape)} for spec "
                                       f"{cfg['spec']!r}, not {list(t.shape)}")
            if not torch.isfinite(t).all():
                fail(f"{where}.{key}", "holds NaN or infinite values")
            if t.abs().max() > MAX_MAGNITUDE:
                fail(f"{where}.{key}", f"holds values beyond ±{MAX_MAGNITUDE:g}")
        if (layer["bn_var"] < 0).any():
            fail(f"{where}.bn_var", "holds negative variances")
        number(layer, "bn_eps", where, positive=True)

    get(ckpt, "metrics", dict, "")


def _show(value: Any) -> str:
    """A short one-line repr for a message: no huge integers, long strings cut."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _type_names(types: type | tuple) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)
