"""Train a BinaryConnect network (MLP or convolutional): the config, the loop, the evaluation.

The defaults are the paper's where it has one (batch 100, Adam from 1e-3
decaying exponentially to 3e-6, square hinge loss, Glorot-scaled learning
rate for the binary weights, weights clipped to [-1, 1], batch norm with
eps 1e-4 and momentum 0.15). A run writes, into ``out``: checkpoint.pt (the
epoch with the best validation error), config.json and metrics.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bchw.data import DATASETS, Dataset, load_dataset
from bchw.errors import BchwError, atomic_write_bytes
from bchw.nn import (
    BINARIZE_MODES,
    BinaryNet,
    canonical_spec,
    is_mlp_spec,
    load_checkpoint,
    model_from_checkpoint,
    parse_net_spec,
    parse_spec,
    save_checkpoint,
    square_hinge_loss,
)


@dataclass
class TrainConfig:
    spec: str = "784-256-256-256-10"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 20
    batch_size: int = 100
    lr_start: float = 1e-3
    lr_end: float = 3e-6
    binarize: str = "det"
    act_bits: int = 8
    # Post-BN pre-activations start near N(0, 1): [0, 2] holds 95% of the
    # positive half at 8 bits in steps of 2/255; BN's learned scale adapts the rest.
    act_clip: float = 2.0
    float_act: bool = False
    bn_eps: float = 1e-4
    bn_momentum: float = 0.15
    seed: int = 0
    device: str = "auto"
    out: str = "runs/train"

    def __post_init__(self):
        self.spec = canonical_spec(self.spec)
        checks = {
            "dataset": (self.dataset in DATASETS, f"one of {', '.join(DATASETS)}"),
            "epochs": (self.epochs >= 1, "at least 1"),
            "batch_size": (self.batch_size >= 2, "at least 2 (batch norm needs a batch)"),
            "lr_start": (self.lr_start > 0, "positive"),
            "lr_end": (self.lr_end > 0, "positive"),
            "binarize": (self.binarize in BINARIZE_MODES, f"one of {', '.join(BINARIZE_MODES)}"),
            "act_bits": (1 <= self.act_bits <= 16, "in 1..16"),
            "act_clip": (math.isfinite(self.act_clip) and self.act_clip > 0, "positive"),
            "bn_eps": (self.bn_eps > 0, "positive"),
            "bn_momentum": (0 < self.bn_momentum <= 1, "in (0, 1]"),
            "device": (self.device in ("auto", "cpu") or self.device.startswith("cuda"),
                       "auto, cpu or cuda[:N]"),
        }
        for field, (ok, right) in checks.items():
            if not ok:
                raise BchwError(f"must be {right}, not {getattr(self, field)!r}", field=field)


# Named presets: the network and data set of each reference model, on the
# paper's recipe (TrainConfig's defaults). Any option given beside --preset wins.
PRESETS: dict[str, dict] = {
    # The paper's MNIST MLP (784-1024x3-10, batch 100, Adam 1e-3 -> 3e-6, square
    # hinge, BN eps 1e-4 / alpha 0.15, Glorot LR scale, U(-1, 1) init, clipping),
    # on Fashion-MNIST within a CPU budget of 50 epochs.
    "fmnist-mlp1024": {"spec": "784-1024-1024-1024-10", "dataset": "fashion-mnist",
                       "epochs": 50},
    # The same on full MNIST, where the user has the IDX files (--data-dir).
    "mnist-mlp1024": {"spec": "784-1024-1024-1024-10", "dataset": "mnist", "epochs": 50},
    "fmnist-mlp256": {"spec": "784-256-256-256-10", "dataset": "fashion-mnist",
                      "epochs": 20},
    "mnist5k-mlp256": {"spec": "784-256-256-256-10", "dataset": "mnist5k", "epochs": 100},
    "digits-mlp": {"spec": "64-64-64-10", "dataset": "digits", "epochs": 100},
    # A small binary-weight CNN on Fashion-MNIST (A = 8, deterministic
    # binarization, the paper's recipe), aimed at 92% test accuracy: about 65 s
    # an epoch on one CPU core, so 30 epochs fit in 35 minutes.
    "fmnist-cnn": {"spec": "32C3-MP2-64C3-MP2-512FC-10", "dataset": "fashion-mnist",
                   "epochs": 30},
}


def preset_config(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of preset ``name``, with ``overrides`` applied."""
    if name not in PRESETS:
        raise BchwError(f"must be one of {', '.join(PRESETS)}, not {name!r}", field="preset")
    return TrainConfig(**{**PRESETS[name], **overrides})


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The paper's schedule: lr_start * decay**epoch, decay = (lr_end / lr_start)**(1 / epochs)."""
    return config.lr_start * (config.lr_end / config.lr_start) ** (epoch / config.epochs)


def make_optimizer(model: BinaryNet, lr: float) -> torch.optim.Adam:
    """Adam with the paper's per-layer Glorot scale on each binary layer's learning rate.

    One param group per binary layer, in the order of the spec, then one for
    the batch norms. Each group keeps its ``lr_scale``; set
    ``group["lr"] = lr * group["lr_scale"]``.
    """
    groups = [{"params": [layer.weight], "lr": lr * layer.lr_scale,
               "lr_scale": layer.lr_scale} for layer in model.binary_layers]
    groups.append({"params": list(model.norms.parameters()), "lr": lr, "lr_scale": 1.0})
    return torch.optim.Adam(groups, lr=lr)


class _World:
    """The data-parallel group when torchrun started this process (WORLD_SIZE > 1), else one."""

    def __init__(self, device: torch.device):
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.joined = False
        if self.size > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo")
            self.joined = True

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor with its mean over the ranks."""
        for t in tensors if self.size > 1 else ():
            torch.distributed.all_reduce(t)
            t.div_(self.size)

    def identical(self, model: torch.nn.Module) -> bool:
        """Whether every rank holds the same parameters and buffers (a checksum each)."""
        if self.size == 1:
            return True
        state = model.state_dict().values()
        total = sum(t.double().sum() * (k + 1) for k, t in enumerate(state))
        sums = [torch.zeros_like(total) for _ in range(self.size)]
        torch.distributed.all_gather(sums, total)
        return all(bool(x == sums[0]) for x in sums)

    def leave(self, ok: bool = True) -> None:
        """Leave together: every rank waits at a barrier, drops what still holds the
        group (DistributedDataParallel's reducer), then destroys it. A rank that tore
        its group down while another was still writing, or left gloo's threads to
        interpreter shutdown, could abort ("terminate called without an active
        exception") after a successful run."""
        if self.joined:
            try:
                if ok:  # a failed rank must not wait for the others
                    torch.distributed.barrier()
            finally:
                gc.collect()
                torch.distributed.destroy_process_group()


def train(config: TrainConfig, progress: Callable[[str], None] = print) -> dict:
    """Train, keep the best-validation epoch, write it to ``config.out``; return the metrics.

    Started by ``torchrun --nproc-per-node N``, it trains data-parallel: every
    rank shuffles the same way and draws the same stochastic binary weights
    (same seeds), takes its 1/N of each batch of ``batch_size``, and the
    gradients are averaged (DistributedDataParallel), so the update is that of
    the whole batch; clipping then acts on identical weights on every rank.
    Batch-norm statistics are per rank within a step (as with any DDP batch
    norm) and averaged over the ranks after each epoch. Rank 0 writes the output.
    """
    start = time.time()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if config.device == "auto" and
                          torch.cuda.is_available()
                          else "cpu" if config.device == "auto" else config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BchwError("CUDA is not available here; use --device cpu or auto", field="device")
    world = _World(device)
    try:
        metrics = _train(config, progress if world.rank == 0 else lambda _: None, device,
                         world, start)
    except BaseException:
        world.leave(ok=False)
        raise
    world.leave()
    return metrics


def _train(config: TrainConfig, progress: Callable[[str], None], device: torch.device,
           world: _World, start: float) -> dict:
    data = load_dataset(config.dataset, config.data_dir)
    _check_spec_fits(config.spec, data)
    if len(data.train) < config.batch_size:
        raise BchwError(f"larger than the {len(data.train)} training images",
                        field="batch_size")

    if config.batch_size % world.size:
        raise BchwError(f"must be a multiple of the {world.size} data-parallel processes, "
                        f"not {config.batch_size}", field="batch_size")
    per_rank = config.batch_size // world.size
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    model = BinaryNet(config.spec, data.image_shape, act_bits=config.act_bits,
                      act_clip=config.act_clip, binarize=config.binarize,
                      float_act=config.float_act, bn_eps=config.bn_eps,
                      bn_momentum=config.bn_momentum,
                      generator=torch.Generator(device).manual_seed(config.seed + 1))
    pixels = data.train.images / 255.0
    model.set_input_norm(float(pixels.mean()), float(pixels.std()))
    model.to(device)

    optimizer = make_optimizer(model, config.lr_start)
    net = model
    if world.size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False)
    norm_stats = [b for norm in model.norms for b in (norm.running_mean, norm.running_var)]

    x_train = torch.as_tensor(data.train.images, dtype=torch.float32, device=device)
    y_train = torch.as_tensor(data.train.labels, device=device)
    steps = len(data.train) // config.batch_size  # the last partial batch is dropped
    real_eval = config.binarize == "stoch"
    curves = {k: [] for k in ("lr", "train_loss", "val_error", "test_error", "seconds")}
    if real_eval:
        curves.update(val_error_real=[], test_error_real=[])
    best_epoch, best_state = -1, None
    for epoch in range(config.epochs):
        t0 = time.time()
        lr = lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle).to(device)
        total = torch.zeros((), device=device)
        for step in range(steps):
            first = step * config.batch_size + world.rank * per_rank
            idx = order[first:first + per_rank]
            loss = square_hinge_loss(net(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.clip_()
            total += loss.detach()
        world.average_([total, *norm_stats])
        val_error = 1 - _accuracy(model, data.val.images, data.val.labels, device)
        test_error = 1 - _accuracy(model, data.test.images, data.test.labels, device)
        seconds = time.time() - t0
        for key, value in zip(curves, (lr, float(total) / steps, val_error, test_error,
                                       seconds)):
            curves[key].append(value)
        real = ""
        if real_eval:  # the paper's test-time rule for stochastic BinaryConnect
            model.set_eval_weights("real")
            for split in ("val", "test"):
                part = data.split(split)
                curves[f"{split}_error_real"].append(
                    1 - _accuracy(model, part.images, part.labels, device))
            model.set_eval_weights("binary")
            real = (f"  real weights: val err {curves['val_error_real'][-1]:7.2%}  "
                    f"test err {curves['test_error_real'][-1]:7.2%}")
        if best_state is None or val_error < curves["val_error"][best_epoch]:
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        progress(f"epoch {epoch + 1:3d}/{config.epochs}  lr {lr:.2e}  "
                 f"loss {curves['train_loss'][-1]:.4f}  val err {val_error:7.2%}  "
                 f"test err {test_error:7.2%}  {seconds:5.1f}s{real}")

    model.load_state_dict(best_state)
    metrics = {
        "best_epoch": best_epoch + 1,
        "best_val_accuracy": 1 - curves["val_error"][best_epoch],
        "test_accuracy": 1 - curves["test_error"][best_epoch],
    }
    if config.binarize == "stoch":
        metrics.update(recalibrate_for_binary_weights(model, data, device))
    if real_eval:
        # Selected on its own validation curve, as the paper's code does (its
        # validation pass uses the real weights too).
        best_real = min(range(config.epochs), key=curves["val_error_real"].__getitem__)
        metrics.update({
            "best_epoch_real": best_real + 1,
            "best_val_accuracy_real": 1 - curves["val_error_real"][best_real],
            "test_accuracy_real": 1 - curves["test_error_real"][best_real],
        })
    metrics.update({
        "epochs": curves,
        "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "wall_seconds": time.time() - start,
        "device": str(device),
        "processes": world.size,
        "torch_version": str(torch.__version__),
        "git_commit": _git_commit(),
    })
    if not world.identical(model):
        raise RuntimeError("data-parallel replicas diverged: their weights differ")
    out = Path(config.out)
    config_dict = dataclasses.asdict(config)
    if world.rank != 0:
        return metrics
    save_checkpoint(out / "checkpoint.pt", model.cpu(), config_dict, metrics)
    _write_json(out / "config.json", config_dict)
    _write_json(out / "metrics.json", metrics)
    progress(f"best epoch {best_epoch + 1}: val acc {metrics['best_val_accuracy']:.2%}, "
             f"test acc {metrics['test_accuracy']:.2%}; wrote {out}")
    if real_eval:
        progress(f"real weights (the paper's stochastic evaluation): best epoch "
                 f"{metrics['best_epoch_real']}: val acc {metrics['best_val_accuracy_real']:.2%}, "
                 f"test acc {metrics['test_accuracy_real']:.2%}")
    return metrics


def _check_spec_fits(spec: str, data: Dataset) -> None:
    """Raise a BchwError (field 'spec') unless ``spec`` takes ``data``'s images to its classes."""
    if is_mlp_spec(spec):
        sizes = parse_spec(spec)
        if sizes[0] != data.num_features or sizes[-1] != data.num_classes:
            raise BchwError(f"{data.name} has {data.num_features} features and "
                            f"{data.num_classes} classes, so the spec must be "
                            f"'{data.num_features}-...-{data.num_classes}', not {spec!r}",
                            field="spec")
        return
    classes = parse_net_spec(spec, data.image_shape)[-1].out_channels
    if classes != data.num_classes:
        raise BchwError(f"{data.name} has {data.num_classes} classes, so the spec must end "
                        f"with {data.num_classes}, not {classes} ({spec!r})", field="spec")


@torch.no_grad()
def recalibrate_for_binary_weights(model: BinaryNet, data, device: torch.device | str = "cpu",
                                   batch: int = 100) -> dict:
    """Re-estimate batch-norm statistics for the deterministic binary weights; return metrics.

    A stochastic run's running statistics average over sampled weights, but
    the hardware (and the binary-weight evaluation) uses sign(w): one pass over
    the training images with those weights, batch norm averaging its batch
    statistics (cumulative average), gives the statistics of the network that
    actually runs. The weights and the learned BN scale and shift are unchanged.
    """
    before_val = _accuracy(model, data.val.images, data.val.labels, device)
    before_test = _accuracy(model, data.test.images, data.test.labels, device)
    model.eval()
    momenta = [norm.momentum for norm in model.norms]
    for norm in model.norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    images = data.train.images
    for i in range(0, len(images) - batch + 1, batch):
        model(torch.as_tensor(images[i:i + batch], dtype=torch.float32, device=device))
    for norm, momentum in zip(model.norms, momenta):
        norm.momentum = momentum
    model.eval()
    return {"bn_recalibrated": True,
            "val_accuracy_before_recalibration": before_val,
            "test_accuracy_before_recalibration": before_test,
            "val_accuracy_recalibrated": _accuracy(model, data.val.images, data.val.labels,
                                                   device),
            "test_accuracy": _accuracy(model, data.test.images, data.test.labels, device)}


def recalibrate_checkpoint(path: str | os.PathLike) -> dict:
    """Apply :func:`recalibrate_for_binary_weights` to a saved stochastic run, in place.

    For runs made before training did it itself; rewrites checkpoint.pt and
    (beside it) metrics.json, and returns the updated metrics.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    cfg = ckpt["config"]
    metrics = dict(ckpt["metrics"])
    metrics.update(recalibrate_for_binary_weights(
        model, load_dataset(cfg["dataset"], cfg.get("data_dir"))))
    save_checkpoint(path, model, cfg, metrics)
    _write_json(path.parent / "metrics.json", metrics)
    return metrics


def evaluate_float(checkpoint_path: str | os.PathLike, dataset_name: str | None = None,
                   data_dir: str | os.PathLike | None = None, split: str = "test") -> dict:
    """Accuracy of a checkpoint's float model (eval mode) on a split of its data set."""
    ckpt = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(ckpt)
    name = dataset_name or ckpt["config"]["dataset"]
    data = load_dataset(name, data_dir or ckpt["config"].get("data_dir"))
    if (data.num_features != model.in_features or data.num_classes != model.num_classes
            or model.in_shape not in (None, data.image_shape)):
        raise BchwError(f"model {model.spec} does not fit {name} ({data.num_features} "
                        f"features, {'×'.join(map(str, data.image_shape))} images, "
                        f"{data.num_classes} classes)", path=checkpoint_path, field="dataset")
    part = data.split(split)
    predictions = predict(model, part.images)
    return {"dataset": name, "split": split, "images": len(part),
            "accuracy": float((predictions == part.labels).mean()),
            "predictions": predictions, "labels": part.labels}


@torch.no_grad()
def predict(model: BinaryNet, images: np.ndarray, device: torch.device | str = "cpu",
            batch: int = 1000) -> np.ndarray:
    """Classes (first index of the maximum score) of uint8 images, in eval mode."""
    model.eval()
    out = [model(torch.as_tensor(images[i:i + batch], dtype=torch.float32, device=device))
           .argmax(1).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def _accuracy(model: BinaryNet, images: np.ndarray, labels: np.ndarray,
              device: torch.device) -> float:
    return float((predict(model, images, device) == labels).mean())


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, check=True,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _write_json(path: Path, value: dict) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


# Command-line options, one per TrainConfig field; `bchw train` wires them up.

_HELP = {
    "spec": "the network: an MLP's layer sizes, input to classes (784-256-256-256-10), or "
            "a convolutional one (32C3-MP2-64C3-MP2-512FC-10: NCk N kxk convolutions, "
            "padding (k-1)/2; MPk kxk max pooling; NFC N fully connected; last the "
            "classes; 2x128C3 repeats a layer)",
    "dataset": f"data set: {', '.join(DATASETS)}",
    "data_dir": "directory of the IDX files (fashion-mnist, mnist)",
    "epochs": "training epochs",
    "batch_size": "mini-batch size",
    "lr_start": "Adam learning rate of the first epoch",
    "lr_end": "learning rate the exponential per-epoch decay reaches after the last epoch",
    "binarize": "weight binarization while training: det, stoch, or float (no binarization)",
    "act_bits": "activation bits A between layers (1..16)",
    "act_clip": "activation range [0, act_clip] quantized to 2**A - 1 steps",
    "float_act": "plain ReLU activations instead of A-bit ones (baselines only)",
    "bn_eps": "batch-norm epsilon",
    "bn_momentum": "batch-norm running-average momentum (new = (1-m) old + m batch)",
    "seed": "seed of initialisation, shuffling and stochastic binarization",
    "device": "auto (cuda if available), cpu, or cuda[:N]",
    "out": "output directory for checkpoint.pt, config.json, metrics.json",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --preset and one --option per TrainConfig field.

    Options left out take the preset's value, else TrainConfig's default
    (hence ``default=SUPPRESS``: :func:`config_from_args` sees only what was given).
    """
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="a reference model's network, data set and epochs: "
                             + "; ".join(f"{k} ({v['spec']} on {v['dataset']}, "
                                         f"{v['epochs']} epochs)" for k, v in PRESETS.items()))
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help = f"{_HELP[field.name]} (default: {field.default})"
        common = {"default": argparse.SUPPRESS, "help": help}
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif field.name in ("binarize", "dataset"):
            parser.add_argument(flag, **common,
                                choices=BINARIZE_MODES if field.name == "binarize" else DATASETS)
        else:
            kind = str if field.default is None else type(field.default)
            parser.add_argument(flag, type=kind, **common)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    preset = getattr(args, "preset", None)
    return preset_config(preset, **given) if preset else TrainConfig(**given)
