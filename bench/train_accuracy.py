"""Reproduction benchmark: BinaryConnect against float, in the shape of the paper's Table 2.

Trains each data set's preset (the paper's recipe, bchw.train.PRESETS) in five
variants, one process per run:

    float            no binarization, plain ReLU           (the paper's "no regularizer")
    det-float-act    BinaryConnect det., plain ReLU        (the paper's det. row)
    det              BinaryConnect det., A-bit activations (what the hardware runs)
    stoch-float-act  BinaryConnect stoch., plain ReLU      (the paper's stoch. row)
    stoch            BinaryConnect stoch., A-bit activations

Test error is taken at the best-validation epoch. Stochastic runs are scored
twice: with binary weights (the hardware's evaluation) and with the real
weights (the paper's). A-bit runs are also exported to a bundle and scored by
the integer golden model, which must stay within 0.3 points of the float model.

Runs land in --runs (one directory each, with its train.log); a run whose
metrics.json exists for the same config is reused, so an interrupted
benchmark resumes. Writes bench/results/train_accuracy.{md,json} and
bench/results/train_curves_<data set>.png.

    .venv/bin/python bench/train_accuracy.py --jobs 2                       # everything
    .venv/bin/python bench/train_accuracy.py --datasets digits --seeds 0,1,2 --jobs 2
    .venv/bin/python bench/train_accuracy.py --datasets mnist --mnist-dir /data/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bchw.train import PRESETS, TrainConfig, preset_config  # noqa: E402

PRESET_OF = {"fashion-mnist": "fmnist-mlp1024", "mnist5k": "mnist5k-mlp256",
             "digits": "digits-mlp", "mnist": "mnist-mlp1024"}
TITLE = {"fashion-mnist": "Fashion-MNIST", "mnist5k": "MNIST-5k", "digits": "digits",
         "mnist": "MNIST"}
VARIANTS = {
    "float": ({"binarize": "float", "float_act": True}, "Float weights (no regularizer)"),
    "det-float-act": ({"binarize": "det", "float_act": True}, "BinaryConnect det."),
    "det": ({"binarize": "det"}, "BinaryConnect det., A-bit activations"),
    "stoch-float-act": ({"binarize": "stoch", "float_act": True}, "BinaryConnect stoch."),
    "stoch": ({"binarize": "stoch"}, "BinaryConnect stoch., A-bit activations"),
}
# The paper's Table 2, MNIST test error (%), 784-1024x3-10 MLP, float activations.
PAPER = {"float": "1.30 ± 0.04", "det-float-act": "1.29 ± 0.08",
         "stoch-float-act": "1.18 ± 0.04"}


def run_config(dataset: str, variant: str, seed: int, runs: Path, epochs: int | None,
               data_dir: str | None) -> TrainConfig:
    overrides = dict(VARIANTS[variant][0], seed=seed, device="cpu",
                     out=str(runs / dataset / variant / f"seed{seed}"))
    if epochs:
        overrides["epochs"] = epochs
    if data_dir:
        overrides["data_dir"] = data_dir
    return preset_config(PRESET_OF[dataset], **overrides)


def train_args(config: TrainConfig, preset: str) -> list[str]:
    """`bchw train` options that give ``config`` from ``preset``."""
    base = dataclasses.asdict(preset_config(preset))
    args = ["--preset", preset]
    for key, value in dataclasses.asdict(config).items():
        if value != base[key]:
            flag = "--" + key.replace("_", "-")
            args += ([flag] if value is True else [f"--no-{flag[2:]}"] if value is False
                     else [flag, str(value)])
    return args


def run(config: TrainConfig, preset: str, threads: int) -> dict:
    """Train (unless a finished run of the same config is there) and score the bundle."""
    out = Path(config.out)
    want = dataclasses.asdict(config)
    done = out / "metrics.json"
    if done.is_file() and _same_config(out / "config.json", want):
        metrics = json.loads(done.read_text())
    else:
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "bchw.cli", "train", *train_args(config, preset)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with open(out / "train.log", "w") as log:
            log.write("$ bchw train " + shlex.join(command[4:]) + "\n")
            log.flush()
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True,
                           cwd=ROOT)
        metrics = json.loads(done.read_text())
    if config.binarize == "stoch" and not metrics.get("bn_recalibrated"):
        from bchw.train import recalibrate_checkpoint  # a run from before training did it

        metrics = recalibrate_checkpoint(out / "checkpoint.pt")
    if not config.float_act and config.binarize != "float" and "golden_accuracy" not in metrics:
        metrics["golden_accuracy"] = golden_accuracy(out, config)
        done.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _same_config(path: Path, want: dict) -> bool:
    """Whether a finished run was trained with ``want`` (fields it predates at their defaults)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    saved = json.loads(path.read_text())
    return all(saved.get(key, defaults[key]) == value for key, value in want.items())


def golden_accuracy(out: Path, config: TrainConfig) -> float:
    """Export the run's checkpoint and score the integer golden model on its test set."""
    from bchw import golden
    from bchw.data import load_dataset
    from bchw.export import HardwareConfig, export_bundle
    from bchw.nn import parse_spec

    sizes = parse_spec(config.spec)
    hw = HardwareConfig(pe=[1] * (len(sizes) - 1), simd=[1] * (len(sizes) - 1))
    bundle = export_bundle(out / "checkpoint.pt", out / "bundle", hw)
    test = load_dataset(config.dataset, config.data_dir).test
    return float((golden.infer(bundle, test.images).classes == test.labels).mean())


def summary(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def write_results(results: dict, datasets: list[str], command: str, out: Path) -> str:
    cols = [d for d in datasets if d in results]
    head = ["Test error (%)"] + [f"{TITLE[d]} ({PRESETS[PRESET_OF[d]]['spec']}, "
                                 f"{_epochs(results[d])} ep.)" for d in cols]
    head.append("Paper, MNIST (1024×3)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, key, variant, paper=""):
        cells = [summary([100 * (1 - m[key]) for m in results[d].get(variant, [])
                          if key in m]) + _n(results[d].get(variant, [])) for d in cols]
        lines.append("| " + " | ".join([label, *cells, paper]) + " |")

    for variant, (_, label) in VARIANTS.items():
        if variant.startswith("stoch"):
            row(label + ", binary test weights", "test_accuracy_before_recalibration", variant)
            row(label + ", binary test weights, BN re-estimated (the hardware's)",
                "test_accuracy", variant)
            row(label + ", real test weights (the paper's evaluation)", "test_accuracy_real",
                variant, PAPER.get(variant, ""))
        else:
            row(label, "test_accuracy", variant, PAPER.get(variant, ""))
    for variant in ("det", "stoch"):
        row(f"{VARIANTS[variant][1]}: integer golden model", "golden_accuracy", variant)
    table = "\n".join(lines)
    text = (f"# BinaryConnect reproduction\n\n{table}\n\n"
            f"Mean ± standard deviation over seeds (n = number of seeds). Test error at the "
            f"best-validation epoch; stochastic runs with real test weights are selected on "
            f"their own real-weight validation curve, as in the paper's code. \"BN "
            f"re-estimated\": after training, one pass over the training images with the "
            f"deterministic binary weights replaces the batch-norm statistics gathered with "
            f"sampled weights (what the exported model and the hardware use). The golden rows "
            f"are the exported bundle run by bchw's integer model on the whole test set.\n\n"
            f"Command: `{command}`\n\nCurves: "
            + ", ".join(f"train_curves_{d}.png" for d in cols) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_accuracy.md").write_text(text)
    (out / "train_accuracy.json").write_text(json.dumps(
        {"command": command, "results": results}, indent=2) + "\n")
    return text


def _epochs(by_variant: dict) -> int:
    return max((len(m["epochs"]["val_error"]) for runs in by_variant.values() for m in runs),
               default=0)


def _n(runs: list) -> str:
    return f" (n={len(runs)})" if len(runs) > 1 else ""


def plot_curves(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for dataset, by_variant in results.items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for variant, runs in by_variant.items():
            curves = runs[0]["epochs"]  # the first seed
            epochs = range(1, len(curves["train_loss"]) + 1)
            axes[0].plot(epochs, curves["train_loss"], label=variant)
            axes[1].plot(epochs, [100 * e for e in curves["val_error"]], label=variant)
            axes[2].plot(epochs, [100 * e for e in curves["test_error"]], label=variant)
            if "test_error_real" in curves:
                axes[2].plot(epochs, [100 * e for e in curves["test_error_real"]], ":",
                             label=variant + " (real weights)")
        for ax, title in zip(axes, ("training loss (square hinge)", "validation error (%)",
                                    "test error (%)")):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].set_yscale("log")
        for ax in axes[1:]:
            low = min(min(line.get_ydata()) for line in ax.lines)
            ax.set_ylim(max(0, low - 1), low + 12)
        axes[2].legend(fontsize=8)
        fig.suptitle(f"BinaryConnect on {TITLE[dataset]} "
                     f"({PRESETS[PRESET_OF[dataset]]['spec']}), seed {0}")
        fig.tight_layout()
        fig.savefig(out / f"train_curves_{dataset}.png", dpi=90)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="fashion-mnist,mnist5k,digits",
                        help="comma-separated, from " + ", ".join(PRESET_OF))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2",
                        help="seeds of the small sets (mnist5k, digits)")
    parser.add_argument("--large-seeds", default="0",
                        help="seeds of the 1024-wide sets (fashion-mnist, mnist)")
    parser.add_argument("--epochs", type=int, default=None, help="override the presets'")
    parser.add_argument("--mnist-dir", default=None, help="MNIST IDX files, for --datasets mnist")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "train_accuracy")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    bad = [d for d in datasets if d not in PRESET_OF]
    if bad or (("mnist" in datasets) and not args.mnist_dir):
        parser.error(f"unknown data sets {bad}" if bad else "mnist needs --mnist-dir")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)

    jobs = []
    for dataset in datasets:
        seeds = args.large_seeds if dataset in ("fashion-mnist", "mnist") else args.seeds
        for variant in args.variants.split(","):
            for seed in map(int, seeds.split(",")):
                config = run_config(dataset, variant, seed, args.runs, args.epochs,
                                    args.mnist_dir if dataset == "mnist" else None)
                jobs.append((dataset, variant, config))
    # The 1024-wide sets first, and in each what the hardware runs (A-bit activations)
    # before the baselines: stochastic, deterministic, then float activations, then float.
    order = ["stoch", "det", "stoch-float-act", "det-float-act", "float"]
    jobs.sort(key=lambda j: (-len(j[2].spec), order.index(j[1])))
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [(d, v, c, pool.submit(run, c, PRESET_OF[d], threads)) for d, v, c in jobs]
        results: dict = {}
        for dataset, variant, config, future in futures:
            metrics = future.result()
            results.setdefault(dataset, {}).setdefault(variant, []).append(metrics)
            print(f"{dataset:13s} {variant:15s} seed {config.seed}: test acc "
                  f"{metrics['test_accuracy']:.2%}"
                  + (f", real weights {metrics['test_accuracy_real']:.2%}"
                     if "test_accuracy_real" in metrics else "")
                  + (f", golden {metrics['golden_accuracy']:.2%}"
                     if "golden_accuracy" in metrics else "")
                  + f"  ({metrics['wall_seconds']:.0f} s)", flush=True)
    command = "python bench/train_accuracy.py " + shlex.join(sys.argv[1:])
    ordered = {d: {v: results[d][v] for v in VARIANTS if v in results[d]} for d in datasets}
    print(write_results(ordered, datasets, command, args.results))
    plot_curves(ordered, args.results)
    print(f"{len(jobs)} runs in {time.time() - started:.0f} s; wrote {args.results}")


if __name__ == "__main__":
    main()
