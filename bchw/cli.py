"""The ``bchw`` command line: train, export, verilog, eval, sim, sample, demo, synth.

Errors a user can cause print one line, ``bchw: error: FILE: field 'F': what``,
and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bchw.errors import BchwError

SIMULATORS = ("verilator", "icarus")
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "fmnist-mlp256"


# --------------------------------------------------------------------------- helpers

def _checkpoint_path(path: str) -> Path:
    """A checkpoint file, or a model/run directory holding ``checkpoint.pt``."""
    p = Path(path)
    if p.is_dir():
        if not (p / "checkpoint.pt").is_file():
            raise BchwError("directory holds no checkpoint.pt", path=p)
        return p / "checkpoint.pt"
    return p


def _hardware_config(args: argparse.Namespace):
    from bchw.export import HardwareConfig, parse_int_list

    if args.config:
        if args.pe or args.simd:
            raise BchwError("give either --config or --pe/--simd, not both", field="--config")
        hw = HardwareConfig.from_file(args.config)
    else:
        if not args.pe or not args.simd:
            raise BchwError("give the folding: --pe and --simd (one value per layer), or --config",
                            field="--pe/--simd")
        hw = HardwareConfig(pe=parse_int_list(args.pe, "--pe"),
                            simd=parse_int_list(args.simd, "--simd"))
    if args.in_lanes is not None:
        hw.in_lanes = args.in_lanes
    return hw


def _images(bundle, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The images to run: a sample file, or the test split of a data set."""
    if getattr(args, "samples", None):
        return (*_load_samples(args.samples, bundle.n_in), str(args.samples))
    from bchw.data import load_dataset

    name = args.dataset or bundle.dataset
    if not name:
        raise BchwError("the bundle records no data set: give --dataset or --samples",
                        field="--dataset")
    data = load_dataset(name, args.data_dir)
    if data.num_features != bundle.n_in:
        raise BchwError(f"data set {name} has {data.num_features} features, the bundle takes "
                        f"{bundle.n_in}", field="--dataset")
    shape = bundle.layers[0].in_shape
    if bundle.has_conv and tuple(data.image_shape) != shape:
        raise BchwError(f"data set {name} has {'×'.join(map(str, data.image_shape))} images, "
                        f"the bundle takes {'×'.join(map(str, shape))}", field="--dataset")
    return data.test.images, data.test.labels, name


def _load_samples(path: str | os.PathLike, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """A held-out sample: ``.npz`` with ``images`` u8 [N, n_in] and ``labels`` [N]."""
    def why(e: Exception) -> str:  # one line: the first sentence, not advice to unpickle
        text = str(e).strip()
        first = text.splitlines()[0].split(". ", 1)[0] if text else ""
        return f"{type(e).__name__}: {first}" if first else type(e).__name__

    # zipfile, zlib and numpy raise many types for corrupt or absurd archives
    # (BadZipFile, zlib.error, NotImplementedError, MemoryError, ...): all mean the same here.
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BchwError("sample file not found", path=path) from None
    except Exception as e:  # noqa: BLE001
        raise BchwError(f"not a readable .npz file ({why(e)})", path=path) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BchwError("not an .npz archive of images and labels (a single .npy array?)",
                        path=path)
    arrays = {}
    with archive:
        for name in ("images", "labels"):
            if name not in archive.files:
                raise BchwError("missing array", path=path, field=name)
            try:
                arrays[name] = archive[name]
            except Exception as e:  # noqa: BLE001
                raise BchwError(f"not a readable array ({why(e)})", path=path,
                                field=name) from None
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != n_in:
        raise BchwError(f"must be uint8 [N, {n_in}], got {images.dtype} {list(images.shape)}",
                        path=path, field="images")
    if not len(images):
        raise BchwError("holds no images", path=path, field="images")
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
        raise BchwError(f"must be integers [{len(images)}], got {labels.dtype} "
                        f"{list(labels.shape)}", path=path, field="labels")
    if (labels < 0).any() or (labels > np.iinfo(np.int64).max).any():
        raise BchwError("holds a label that is not a class number", path=path, field="labels")
    return images, labels.astype(np.int64)


def _limit(images: np.ndarray, labels: np.ndarray | None, n: str
           ) -> tuple[np.ndarray, np.ndarray | None]:
    if n == "all":
        return images, labels
    try:
        k = int(n)
    except ValueError:
        raise BchwError(f"expected a positive integer or 'all', got {n!r}",
                        field="--images") from None
    if k < 1:
        raise BchwError(f"expected a positive integer or 'all', got {n!r}", field="--images")
    if k > len(images):
        raise BchwError(f"only {len(images)} images are available", field="--images")
    return images[:k], None if labels is None else labels[:k]


def _print_table(rows: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def _emit(result: dict, as_json: bool, rows: Sequence[tuple[str, Any]]) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        _print_table(rows)


def _sim_ok(result: dict) -> bool:
    return (result["mismatches"] == 0 and result["cycles_match"] and result["reset_ok"]
            and not result["deadlock"])


# --------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    from bchw.train import config_from_args, train

    train(config_from_args(args), progress=lambda line: print(line, flush=True))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A data-parallel rank ends here with its group left (barrier, then destroyed)
        # and rank 0's files written. It skips the interpreter's teardown, where what
        # torch.distributed leaves behind (gloo's threads) is destroyed in no set order
        # and has aborted a rank after a successful run ("terminate called without an
        # active exception": CI, one run in tens, on a loaded machine).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bchw.export import export_bundle
    from bchw.romfmt import FORMATS

    formats = tuple(args.formats.split(","))
    bad = [f for f in formats if f not in FORMATS]
    if bad or "hex" not in formats:
        raise BchwError(f"formats must include hex and come from {', '.join(FORMATS)}",
                        field="--formats")
    ckpt = _checkpoint_path(args.checkpoint)
    searched = args.target_fps is not None or args.max_luts is not None
    if searched:
        if args.config or args.pe or args.simd:
            raise BchwError("give a folding (--config, --pe/--simd) or a target "
                            "(--target-fps, --max-luts), not both", field="--target-fps")
        hw, folding = _searched_folding(ckpt, args)
    else:
        hw = _hardware_config(args)
    bundle = export_bundle(ckpt, args.output, hw, formats)
    print(f"wrote bundle {args.output}: {len(bundle.layers)} layers, "
          f"folding {[(la.pe, la.simd) for la in bundle.layers]}")
    if searched:
        print(f"folding search: interval {folding.interval} cycles (lower bound "
              f"{folding.lower_bound:.1f}), {folding.lanes} adder lanes, adder utilisation "
              f"{folding.utilisation:.1%}, about {folding.luts:,} LUTs, "
              f"{folding.inferences_per_s:,.0f} inferences/s at {folding.clock_mhz:g} MHz")
    return 0


def _searched_folding(ckpt: Path, args: argparse.Namespace):
    from bchw.export import HardwareConfig
    from bchw.folding import search_net_folding
    from bchw.nn import is_mlp_spec, load_checkpoint, parse_net_spec

    cfg = load_checkpoint(ckpt)["config"]
    layers = parse_net_spec(cfg["spec"], None if is_mlp_spec(cfg["spec"]) else cfg["in_shape"])
    folding = search_net_folding(layers, cfg["act_bits"], target_fps=args.target_fps,
                                 max_luts=args.max_luts, clock_mhz=args.clock_mhz)
    in_lanes = args.in_lanes if args.in_lanes is not None else folding.in_lanes
    return HardwareConfig(pe=folding.pe, simd=folding.simd, in_lanes=in_lanes), folding


def cmd_verilog(args: argparse.Namespace) -> int:
    from bchw.export import load_bundle
    from bchw.gateware.top import write_verilog

    bundle = load_bundle(args.bundle)
    out = write_verilog(bundle, args.output)
    print(f"wrote {out}/bchw_top.v, bchw_rom.v, bchw_mul.v and {2 * len(bundle.layers)} hex images")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from bchw import golden
    from bchw.export import load_bundle, resolve_bundle_dir

    if args.float:
        from bchw.train import evaluate_float

        ckpt = _checkpoint_path(args.path)
        if args.samples:
            from bchw.nn import model_from_checkpoint
            from bchw.train import predict

            model = model_from_checkpoint(ckpt)
            images, labels = _load_samples(args.samples, model.in_features)
            r = {"dataset": args.samples, "images": len(images),
                 "accuracy": float((predict(model, images) == labels).mean())}
        else:
            r = evaluate_float(ckpt, args.dataset, args.data_dir)
        result = {"mode": "float", "dataset": r["dataset"], "images": r["images"],
                  "accuracy": r["accuracy"]}
    else:
        bundle = load_bundle(resolve_bundle_dir(args.path))
        images, labels, name = _images(bundle, args)
        classes = golden.classify(bundle, images)
        result = {"mode": "golden", "dataset": name, "images": len(images),
                  "accuracy": float((classes == labels).mean())}
    _emit(result, args.json, [("data set", result["dataset"]), ("model", result["mode"]),
                              ("images", result["images"]),
                              ("accuracy", f"{result['accuracy']:.2%}")])
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from bchw.cosim import cosimulate
    from bchw.export import load_bundle
    from bchw.gateware.top import write_verilog

    if args.jobs < 1:
        raise BchwError(f"expected a positive number of processes, got {args.jobs}",
                        field="--jobs")
    bundle = load_bundle(args.bundle)
    images, labels, name = _images(bundle, args)
    images, labels = _limit(images, labels, args.images)
    with tempfile.TemporaryDirectory(prefix="bchw-rtl-") as tmp:
        rtl = Path(args.rtl) if args.rtl else write_verilog(bundle, Path(tmp) / "rtl")
        if not (rtl / "bchw_top.v").is_file():
            raise BchwError("no bchw_top.v here (generate it with 'bchw verilog')", path=rtl)
        if args.jobs > 1:
            if args.waves:
                raise BchwError("waves come from one process: use --jobs 1", field="--waves")
            from bchw.cosim.shard import run_sharded

            r = run_sharded(bundle, rtl, images, labels, args.simulator, args.jobs,
                            build_dir=args.build_dir, seed=args.seed,
                            progress=None if args.json else
                            lambda line: print(line, file=sys.stderr, flush=True))
        else:
            r = cosimulate(bundle, rtl, images, labels, args.simulator, seed=args.seed,
                           waves=args.waves, build_dir=args.build_dir)
    result = _sim_result(r, name)
    rows = [("simulator", result["simulator"]), ("images", result["images"]),
            ("accuracy (RTL)", f"{result['accuracy']:.2%}" if labels is not None else "-"),
            ("mismatches", result["mismatches"]),
            *_timing_rows(result),
            ("reset in mid-stream recovered", result["reset_ok"]),
            ("simulated", f"{result['sim_cycles']:,} cycles: {result['images_per_s']:.1f} "
                          f"images/s, {result['sim_cycles_per_s']:,.0f} cycles/s "
                          f"({result['wall_s']:.1f} s in all)")]
    if r.get("first_mismatch"):
        rows += _mismatch_rows(r["first_mismatch"])
    if r.get("first_cycle_mismatch"):
        rows.append(("first cycle that differs", r["first_cycle_mismatch"]))
    if r.get("waves"):
        rows.append(("waves", r["waves"]))
    _emit(result, args.json, rows)
    ok = _sim_ok(r)
    if not ok and not args.json:
        print("bchw: RTL and models DIFFER", file=sys.stderr)
    return 0 if ok else 1


def _mismatch_rows(m: dict) -> list[tuple[str, Any]]:
    where = f"image {m['image']} ({m['phase']} phase)"
    if m.get("layer") is not None:
        where += f", layer {m['layer']}"
        if m.get("neuron") is not None:
            where += (f", neuron {m['neuron']}: expected {m['layer_expected']}, "
                      f"got {m['layer_got']}")
    rows = [("first difference", where)]
    if m.get("note"):
        rows.append(("", m["note"]))
    return rows + [("  expected (class, scores)", _outcome(m["expected"])),
                   ("  RTL gave", _outcome(m["got"]))]


def _outcome(o: dict | None) -> str:
    return "nothing" if o is None else f"{o['class']}, {o['scores']}"


def _timing_rows(result: dict) -> list[tuple[str, Any]]:
    return [("latency cycles (measured / model)",
             f"{result['latency_cycles_measured']} / {result['latency_cycles_model']}"),
            ("interval cycles (measured / model)",
             f"{result['interval_cycles_measured']} / {result['interval_cycles_model']}"),
            ("every output cycle as modelled", result["cycles_match"]),
            ("  (with random gaps and back-pressure)", result["stress_cycles_match"])]


def _sim_result(r: dict, dataset: str) -> dict:
    keys = ("images", "simulator", "mismatches", "latency_cycles_measured",
            "latency_cycles_model", "interval_cycles_measured", "interval_cycles_model",
            "cycles_match", "stress_cycles_match", "reset_ok", "deadlock", "first_mismatch",
            "first_cycle_mismatch", "sim_cycles", "wall_s")
    result = {k: r.get(k) for k in keys}
    result["dataset"] = dataset
    result["accuracy"] = r.get("accuracy")
    result["jobs"] = r.get("jobs", 1)
    # rates of the simulation itself; a sharded run reports its own, over its wall time
    seconds = r.get("sim_wall_s") or result["wall_s"]
    result["images_per_s"] = r.get("images_per_s", result["images"] / seconds)
    result["sim_cycles_per_s"] = r.get("sim_cycles_per_s", result["sim_cycles"] / seconds)
    return json.loads(json.dumps(result, default=_jsonable))


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def cmd_sample(args: argparse.Namespace) -> int:
    from bchw.data import load_dataset
    from bchw.errors import atomic_write_bytes

    split = load_dataset(args.dataset, args.data_dir).split(args.split)
    images, labels = _limit(split.images, split.labels, args.images)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=labels)
    atomic_write_bytes(args.output, buf.getvalue())
    print(f"wrote {args.output}: the first {len(images)} images of {args.dataset}'s "
          f"{args.split} split")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bchw import golden, perf
    from bchw.cosim import cosimulate
    from bchw.export import HardwareConfig, export_bundle
    from bchw.gateware.top import write_verilog
    from bchw.nn import model_from_checkpoint
    from bchw.train import predict

    start = time.monotonic()
    model_dir = Path(args.model)
    ckpt_path = _checkpoint_path(str(model_dir))
    hw = HardwareConfig.from_file(model_dir / "hardware.json")
    with tempfile.TemporaryDirectory(prefix="bchw-demo-") as tmp:
        bundle = export_bundle(ckpt_path, Path(tmp) / "bundle", hw)
        rtl = write_verilog(bundle, Path(tmp) / "rtl")
        images, labels = _load_samples(model_dir / "sample.npz", bundle.n_in)
        images, labels = _limit(images, labels, args.images)
        float_classes = predict(model_from_checkpoint(ckpt_path), images)
        golden_classes = golden.infer(bundle, images).classes
        r = cosimulate(bundle, rtl, images, labels, args.simulator, seed=args.seed,
                       build_dir=args.build_dir)
    model = perf.cycle_model(bundle)
    result = _sim_result(r, str(model_dir / "sample.npz"))
    result.update({
        "model": model_dir.name,
        "float_accuracy": float((float_classes == labels).mean()),
        "golden_accuracy": float((golden_classes == labels).mean()),
        "rtl_accuracy": r.get("accuracy"),
        "float_golden_agreement": float((float_classes == golden_classes).mean()),
        "throughput_at_100mhz": 100e6 / model.interval,
        "time_s": round(time.monotonic() - start, 1),
    })
    result.pop("accuracy")
    rows = [("model", (f"{result['model']} ({bundle.manifest['model']['spec']}, "
                      f"A={bundle.manifest['arithmetic']['act_bits']})")),
            ("folding (PE x SIMD)", ", ".join(f"{la.pe}x{la.simd}" for la in bundle.layers)),
            ("simulator", result["simulator"]),
            ("images (held-out sample)", result["images"]),
            ("float accuracy", f"{result['float_accuracy']:.2%}"),
            ("golden accuracy", f"{result['golden_accuracy']:.2%}"),
            ("RTL accuracy", f"{result['rtl_accuracy']:.2%}"),
            ("float/golden class agreement", f"{result['float_golden_agreement']:.2%}"),
            ("mismatches (RTL vs golden)", result["mismatches"]),
            *_timing_rows(result),
            ("throughput at 100 MHz", f"{result['throughput_at_100mhz']:,.0f} inferences/s"),
            ("time taken", f"{result['time_s']} s")]
    _emit(result, args.json, rows)
    return 0 if _sim_ok(r) else 1


def cmd_synth(args: argparse.Namespace) -> int:
    import shutil

    from bchw.errors import atomic_dir
    from bchw.export import load_bundle
    from bchw.synth import ToolError, check_target, relocate, synth_bundle

    check_target(args.target)
    bundle = load_bundle(args.bundle)
    options = {"freq_mhz": args.freq, "seed": args.seed, "nodsp": args.nodsp,
               "router": args.router}
    failure = None
    if args.keep:
        keep = Path(args.keep)
        with atomic_dir(keep) as tmp:
            try:
                result = relocate(synth_bundle(bundle, args.target, tmp, **options), keep)
            except ToolError as e:   # keep the logs that say why
                failure = e, keep / e.log.name
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bchw-synth-"))
        try:
            result = relocate(synth_bundle(bundle, args.target, tmp, **options), None)
        except ToolError as e:   # leave the directory for its logs
            failure = e, e.log
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failure is not None:
        e, log = failure
        print(f"bchw: synth failed: {e.tool} {e.message} (log: {log})", file=sys.stderr)
        return 1
    r = result

    def used(n: int, total: int | None, fraction: float | None) -> str:
        return f"{n:,}" if total is None else f"{n:,} / {total:,} ({fraction:.1%})"

    if r.place_and_route:
        fmax = (f"{r.fmax_mhz:.1f} MHz ({'meets' if r.timing_met else 'misses'} the "
                f"{r.freq_mhz:g} MHz constraint, seed {r.seed}, {r.router})")
    else:
        fmax = f"- (yosys only: {r.target} is not placed and routed)"
    rows = [("target", f"{r.target} ({r.device or 'no device: yosys synth -lut 4'})"),
            ("LUTs", used(r.luts, r.device_luts, r.lut_fraction)),
            ("flip-flops", used(r.ffs, r.device_ffs, r.ff_fraction)),
            ("block RAMs", used(r.brams, r.device_brams, r.bram_fraction)),
            ("DSPs" + (" (--nodsp)" if r.nodsp else ""), used(r.dsps, r.device_dsps,
                                                            r.dsp_fraction)),
            ("Fmax", fmax),
            ("interval / latency", f"{r.interval_cycles} / {r.latency_cycles} cycles"),
            ("inferences/s at Fmax",
             "-" if r.inferences_per_s is None else f"{r.inferences_per_s:,.0f}"),
            ("counted", "the core alone, out of context (not its pin wrapper)"),
            ("tools", ", ".join(f"{k} {v}" for k, v in r.tools.items())),
            ("time", f"synthesis {r.synth_s:.1f} s" + (
                "" if r.pnr_s is None else f", place and route {r.pnr_s:.1f} s"))]
    if r.fits is False:
        rows.append(("DOES NOT FIT", f"the core needs more than the {r.device} has"))
    if r.work_dir:
        rows.append(("logs", r.work_dir))
    _emit(r.as_dict(), args.json, rows)
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from bchw.romfmt import FORMATS

    parser = argparse.ArgumentParser(prog="bchw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a BinaryConnect network (MLP or CNN)")
    from bchw.train import add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="fold, quantize and pack a checkpoint (MLP or CNN) into a "
                                      "bundle")
    p.add_argument("checkpoint", help="checkpoint.pt, or a directory holding one")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument("--pe", help="output neurons (a convolution's: output channels) per cycle, "
                                "one per layer: 16,16,10")
    p.add_argument("--simd", help="inputs (a convolution's: of its k·k·C window) per cycle, one "
                                  "per layer: 28,16,16")
    p.add_argument("--config", help="hardware config JSON: {\"layers\": [{\"pe\":..,\"simd\":..}]"
                                    ", \"in_lanes\": ..}")
    p.add_argument("--in-lanes", type=int,
                   help="u8 values per input beat (default: layer 0's SIMD; a convolutional "
                        "network takes one pixel a beat: its channels)")
    p.add_argument("--target-fps", type=float,
                   help="choose the folding: the cheapest balanced one reaching this many "
                        "inferences/s at --clock-mhz (a convolutional network: by its simulated "
                        "interval)")
    p.add_argument("--max-luts", type=int,
                   help="choose the folding: the fastest one the resource model fits in "
                        "this many LUTs (with --target-fps: both must hold)")
    p.add_argument("--clock-mhz", type=float, default=150.0,
                   help="clock for --target-fps (default: %(default)s)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help="ROM image formats to write (default: %(default)s)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verilog", help="generate the accelerator's Verilog from a bundle")
    p.add_argument("bundle")
    p.add_argument("-o", "--output", required=True, help="directory to write")
    p.set_defaults(func=cmd_verilog)

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", help="data set (default: the bundle's)")
        p.add_argument("--data-dir", help="directory of the data set's IDX files")
        p.add_argument("--samples", help=".npz with images and labels, instead of a data set")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("eval", help="accuracy of a bundle (golden model) or checkpoint (--float)")
    p.add_argument("path", help="bundle directory, or a model directory holding bundle/")
    p.add_argument("--float", action="store_true", help="evaluate the float checkpoint instead")
    data_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sim", help="co-simulate the RTL against the golden and cycle models")
    p.add_argument("bundle")
    data_args(p)
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    p.add_argument("--images", default="100", help="how many test images, or 'all'")
    p.add_argument("--jobs", type=int, default=1,
                   help="shard the images over this many simulator processes")
    p.add_argument("--rtl", help="simulate this generated directory instead of generating one")
    p.add_argument("--seed", type=int, default=0, help="seed of the stream gaps and back-pressure")
    p.add_argument("--waves", action="store_true", help="write a waveform trace")
    p.add_argument("--build-dir", help="where simulator builds are cached")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("sample", help="write a held-out sample (.npz) of a data set's split")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", help="directory of the data set's IDX files")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--images", default="250", help="how many images (the first ones), or 'all'")
    p.add_argument("-o", "--output", required=True, help=".npz file to write")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="reference model: export, Verilog, co-simulation, table")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory")
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    p.add_argument("--images", default="200", help="images of the held-out sample, or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-dir", help="where simulator builds are cached")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_demo)

    from bchw.synth import DEFAULT_FREQ_MHZ, TARGETS

    p = sub.add_parser("synth", help="LUTs, flip-flops, block RAMs, DSPs and Fmax of a bundle's "
                                     "core (yosys, nextpnr)")
    p.add_argument("bundle", help="bundle directory, or a model directory holding bundle/")
    p.add_argument("--target", default="ecp5-85k",
                   help=f"one of {', '.join(TARGETS)} (default: %(default)s)")
    p.add_argument("--freq", type=float, default=DEFAULT_FREQ_MHZ,
                   help="clock constraint for place and route, MHz (default: %(default)g)")
    p.add_argument("--seed", type=int, default=1, help="place and route seed")
    p.add_argument("--router", default="router1",
                   help="nextpnr's router, router1 or router2 (faster on large designs)")
    p.add_argument("--nodsp", action="store_true", help="keep multipliers out of DSP blocks")
    p.add_argument("--keep", metavar="DIR", help="keep the netlist, reports and logs here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BchwError as e:
        print(f"bchw: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
