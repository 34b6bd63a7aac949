"""Sweep random architectures through export → Verilog → Verilator co-simulation.

Each network (1–4 layers, widths 1–300 with primes, A from 1 to 8, PE and SIMD
that need not divide the sizes, random ±1 weights and batch-norm statistics
with negative scales) is checked bit-exact against the golden model and
cycle-exact against the cycle model, back to back and under random gaps and
back-pressure, with a reset in mid-stream. The suite runs seeds 0–24
(sim/test_random_networks.py); this sweeps further ones and prints figures.

    .venv/bin/python bench/random_networks.py --first 25 --count 50 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def check_one(seed: int, images: int, build_dir: str) -> dict:
    from bchw import randnet
    from bchw.cosim import cosimulate
    from bchw.export import HardwareConfig, export_state
    from bchw.gateware.top import write_verilog

    started = time.monotonic()
    arch = randnet.random_architecture(seed)
    with tempfile.TemporaryDirectory() as tmp:
        state = randnet.random_state(arch.sizes, act_bits=arch.act_bits, seed=seed)
        bundle = export_state(state, Path(tmp) / "bundle",
                              HardwareConfig(pe=arch.pe, simd=arch.simd, in_lanes=arch.in_lanes))
        rtl = write_verilog(bundle, Path(tmp) / "rtl")
        r = cosimulate(bundle, rtl, randnet.random_images(images, arch.sizes[0], seed=seed),
                       None, "verilator", seed=seed, build_dir=build_dir)
    ok = (r["mismatches"] == 0 and r["cycles_match"] and r["stress_cycles_match"]
          and r["reset_ok"] and not r["deadlock"])
    return {"seed": seed, "network": arch.name, "ok": bool(ok), "mismatches": r["mismatches"],
            "cycles_match": r["cycles_match"], "stress_cycles_match": r["stress_cycles_match"],
            "sim_cycles": r["sim_cycles"], "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=25, help="first seed (0-24 are in the suite)")
    parser.add_argument("--count", type=int, default=50, help="how many networks")
    parser.add_argument("--images", type=int, default=16, help="random images per network")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
    parser.add_argument("--build-dir", default="sim_build")
    args = parser.parse_args()

    started = time.monotonic()
    seeds = range(args.first, args.first + args.count)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(check_one, seeds, [args.images] * len(seeds),
                             [args.build_dir] * len(seeds)))
    wall = time.monotonic() - started
    failed = [r for r in rows if not r["ok"]]
    lines = [f"# Random networks: {len(rows)} checked, {len(failed)} failed", "",
             "```sh", f".venv/bin/python bench/random_networks.py --first {args.first} "
             f"--count {args.count} --images {args.images} --jobs {args.jobs}", "```", "",
             f"{len(rows)} networks, {args.images} images each, "
             f"{sum(r['sim_cycles'] for r in rows):,} simulated cycles, {wall:.0f} s wall "
             f"on {args.jobs} processes.", "",
             "| seed | network (sizes_A_PExSIMD_lanes) | bit-exact | cycles | s |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['network']} | {r['mismatches'] == 0} | "
              f"{r['cycles_match'] and r['stress_cycles_match']} | {r['seconds']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "random_networks.md").write_text(text)
    (RESULTS / "random_networks.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)
    if failed:
        raise SystemExit(f"{len(failed)} networks FAILED: seeds {[r['seed'] for r in failed]}")


if __name__ == "__main__":
    main()
