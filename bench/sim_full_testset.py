"""Co-simulate a whole test set, sharded over processes; print and record the figures.

    .venv/bin/python bench/sim_full_testset.py                    # all 10,000, 2 jobs, Verilator
    .venv/bin/python bench/sim_full_testset.py --images 2000 --jobs 2
    .venv/bin/python bench/sim_full_testset.py --bundle models/fmnist-cnn/bundle \
        --rtl /tmp/rtl-cnn --name sim_full_testset_fmnist-cnn      # the reference CNN

Every output against the golden model and every output cycle against the cycle
model, as ``bchw sim`` does, in ``--jobs`` processes (bchw.cosim.shard.run_sharded).
Writes bench/results/sim_full_testset.{md,json} (``--out``) with the exact command.
A benchmark, not a test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("cocotb", "verilator", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="models/fmnist-mlp256/bundle")
    parser.add_argument("--rtl", default="rtl", help="generated Verilog and hex images "
                        "(generated from the bundle first if it holds no bchw_top.v)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", default="all", help="'all' or the first N test images")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-dir", default="sim_build")
    parser.add_argument("--out", default="bench/results", help="where the .md and .json go")
    parser.add_argument("--name", default="sim_full_testset",
                        help="file name of the results, without .md/.json")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/sim_full_testset.py",
                          *(sys.argv[1:] if argv is None else argv)])

    from bchw.cosim.shard import run_sharded
    from bchw.data import load_dataset
    from bchw.export import load_bundle

    bundle = load_bundle(args.bundle)
    if not (Path(args.rtl) / "bchw_top.v").is_file():
        from bchw.gateware.top import write_verilog

        print(f"generating {args.rtl} from {args.bundle}", flush=True)
        write_verilog(bundle, args.rtl)
    test = load_dataset(args.dataset, args.data_dir).test
    images, labels = test.images, test.labels
    if args.images != "all":
        images, labels = images[:int(args.images)], labels[:int(args.images)]
    load_before = os.getloadavg()
    print(f"co-simulating {len(images)} {args.dataset} test images on {args.simulator}, "
          f"{args.jobs} jobs, {os.cpu_count()} CPUs (load average {load_before[0]:.2f})",
          flush=True)
    r = run_sharded(bundle, Path(args.rtl), images, labels, args.simulator, args.jobs,
                    build_dir=args.build_dir, seed=args.seed,
                    progress=lambda line: print("  " + line, flush=True))
    load_after = os.getloadavg()
    ok = (r["mismatches"] == 0 and r["cycles_match"] and r["stress_cycles_match"]
          and r["reset_ok"] and not r["deadlock"])

    shards = r["shards"]
    phase_s = {p: sum(s["phase_s"].get(p) or 0.0 for s in shards) for p in shards[0]["phase_s"]}
    models_s = sum(s["models_s"] for s in shards)
    shard_s = sum(s["wall_s"] for s in shards)
    phase_cpu = {p: sum(s["phase_cpu_s"].get(p) or 0.0 for s in shards)
                 for p in shards[0]["phase_cpu_s"]}
    # CPU time per shard (its process and its simulator): what the shards cost on idle
    # cores, whatever else the machine was running; the busiest shard bounds the wall time.
    cpu = [s["worker_cpu_s"] + s["sim_cpu_s"] for s in shards]
    rows = [
        ("images", f"{r['images']:,}"),
        ("simulator, jobs", f"{r['simulator']}, {r['jobs']}"),
        ("mismatches (RTL vs golden)", r["mismatches"]),
        ("every output cycle as modelled", r["cycles_match"]),
        ("  (with random gaps and back-pressure)", r["stress_cycles_match"]),
        ("latency cycles (measured / model)",
         f"{r['latency_cycles_measured']} / {r['latency_cycles_model']}"),
        ("interval cycles (measured / model)",
         f"{r['interval_cycles_measured']} / {r['interval_cycles_model']}"),
        ("reset in mid-stream recovered", r["reset_ok"]),
        ("accuracy (RTL)", f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"),
        ("images/s", f"{r['images_per_s']:.2f}"),
        ("simulated cycles/s", f"{r['sim_cycles_per_s']:,.0f}"),
        ("simulated cycles", f"{r['sim_cycles']:,}"),
        ("wall time",
         f"{r['wall_s']:.1f} s ({r['wall_s'] / 60:.1f} min; build {r['build_s']:.1f} s)"),
        ("shard-seconds: golden + cycle model", f"{models_s:.1f} s"),
        *((f"shard-seconds: {p} phase", f"{t:.1f} s") for p, t in phase_s.items()),
        ("shard-seconds: total", f"{shard_s:.1f} s"),
        *((f"simulator CPU-s: {p} phase", f"{t:.1f} s") for p, t in phase_cpu.items()),
        ("CPU-s: shard processes + simulators", f"{sum(cpu):.1f} s (busiest shard "
         f"{max(cpu):.1f} s: ~{(max(cpu) + r['build_s']) / 60:.1f} min on idle cores)"),
        ("load average before / after", f"{load_before[0]:.2f} / {load_after[0]:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")

    record = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dataset": args.dataset, "bundle": args.bundle, "rtl": args.rtl, "ok": bool(ok),
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(),
                    "load_average_before": load_before, "load_average_after": load_after,
                    **_versions()},
        "phase_shard_seconds": phase_s, "models_shard_seconds": models_s,
        "phase_simulator_cpu_seconds": phase_cpu, "shard_cpu_seconds": cpu,
        **{k: v for k, v in r.items() if k not in ("classes", "golden_classes")},
    }
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(
        json.dumps(record, indent=1, default=lambda v: v.item() if isinstance(v, np.generic)
                   else str(v)) + "\n")
    md = [f"# Co-simulation of the {args.dataset} test set, sharded", "",
          f"```sh\n{command}\n```", "",
          f"{record['date']}; {os.cpu_count()} CPUs ({record['machine']['cpu']}); "
          f"cocotb {record['machine']['cocotb']}, verilator {record['machine']['verilator']}.",
          "", "| | |", "|---|---|", *(f"| {k.strip()} | {v} |" for k, v in rows), "",
          "| shard | images | seed | mismatches | cycles match | reset ok | sim cycles "
          "| golden+model s | timing s | stress s | reset s | wall s | CPU s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
          *(f"| {s['shard']} | {s['start']}..{s['stop'] - 1} | {s['seed']} | {s['mismatches']} "
            f"| {s['cycles_match'] and s['stress_cycles_match']} | {s['reset_ok']} "
            f"| {s['sim_cycles']:,} | {s['models_s']:.1f} | {s['phase_s'].get('timing', 0):.1f} "
            f"| {s['phase_s'].get('stress', 0):.1f} | {s['phase_s'].get('reset', 0):.1f} "
            f"| {s['wall_s']:.1f} | {c:.1f} |" for s, c in zip(shards, cpu)), ""]
    (out / f"{args.name}.md").write_text("\n".join(md))
    print(f"wrote {out / args.name}.md and .json")
    if not ok:
        print("RTL and models DIFFER", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
