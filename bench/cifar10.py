"""The paper's CIFAR-10 network in hardware: resource estimate, cycle model, co-simulation.

For ``2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10`` on 3×32×32 images, A = 8,
random weights, at two foldings (the one sim/test_cifar10.py would use and a
four times faster one), and for the same network at an eighth of its widths
(the one the suite co-simulates): bchw.perf's resource estimate against an
ECP5-85F, the cycle model's interval and latency (and how long the model takes
to compute them), inferences/s at 150 MHz, MACs an inference, adder lanes and
their utilisation; for the eighth, also the Verilator lint and a co-simulation
of a few images (build and run timed, ccache off).  ``--paper-verilog`` also
generates and lints the full network's Verilog and times Amaranth on max pools
of 64–512 channels (the full network's co-simulation is the opt-in test in
sim/test_cifar10.py).  Writes bench/results/cifar10.{md,json}.

    nice .venv/bin/python bench/cifar10.py --paper-verilog
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

from sim.test_cifar10 import (EIGHTH, FOLDINGS, IN_SHAPE, LINT_SUPPRESSED,  # noqa: E402
                              PAPER, lint_messages, lint_verilog)

RESULTS = ROOT / "bench" / "results"
CLOCK_MHZ = 150
#: (name, spec, PE, SIMD, co-simulate)
CONFIGS = [
    ("paper, 2k lanes (the test's folding)", PAPER, *FOLDINGS[PAPER], False),
    ("paper, 8k lanes", PAPER, [2, 16, 8, 16, 8, 16, 1, 1, 1],
     [27, 128, 128, 128, 128, 128, 128, 16, 1], False),
    ("eighth widths (the suite's)", EIGHTH, *FOLDINGS[EIGHTH], True),
]


def macs(bundle) -> int:
    """Multiply-accumulates an inference: a convolution's matrix once per output pixel
    before pooling."""
    return sum(la.in_features * la.out_features
               * (la.in_shape[1] * la.in_shape[2] if la.kind == "conv" else 1)
               for la in bundle.layers)


def cosim_figures(bundle, work: Path, images: int) -> dict:
    """Verilog, lint, a Verilator build (ccache off) and a co-simulation of ``images``."""
    from bchw import randnet
    from bchw.cosim import cosimulate, runner
    from bchw.gateware.top import write_verilog

    out: dict = {}
    started = time.monotonic()
    rtl = write_verilog(bundle, work / "rtl")
    out["verilog_s"] = time.monotonic() - started
    out["verilog_bytes"] = (rtl / "bchw_top.v").stat().st_size
    started = time.monotonic()
    lint = lint_verilog(rtl)
    out["lint_s"] = time.monotonic() - started
    out["lint_clean"] = lint.returncode == 0 and not lint_messages(lint)
    out["lint_messages"] = lint_messages(lint)[:10]
    os.environ["CCACHE_DISABLE"] = "1"
    try:
        started = time.monotonic()
        runner.build(rtl, "verilator", work / "sim_build")
        out["build_s"] = time.monotonic() - started
    finally:
        del os.environ["CCACHE_DISABLE"]
    started = time.monotonic()
    r = cosimulate(bundle, rtl, randnet.random_images(images, bundle.n_in, seed=0), None,
                   "verilator", seed=0, build_dir=work / "sim_build")
    total = time.monotonic() - started
    out.update(images=images, cosim_s=total, sim_run_s=r["wall_s"], bench_phases_s=r["sim_wall_s"],
               cycle_model_in_cosim_s=total - r["wall_s"], sim_cycles=r["sim_cycles"],
               bit_exact=r["mismatches"] == 0,
               cycle_exact=bool(r["cycles_match"] and r["stress_cycles_match"]
                                and r["latency_cycles_measured"] == r["latency_cycles_model"]
                                and r["interval_cycles_measured"] == r["interval_cycles_model"]),
               reset_ok=bool(r["reset_ok"]), deadlock=bool(r["deadlock"]))
    return out


def evaluate(name: str, spec: str, pe: list[int], simd: list[int], cosim: bool, images: int,
             work: Path, states: dict) -> dict:
    from bchw import perf, randnet, synth
    from bchw.export import HardwareConfig, export_state

    if spec not in states:
        started = time.monotonic()
        states[spec] = (randnet.random_cnn_state(spec, IN_SHAPE, seed=0),
                        time.monotonic() - started)
    state, state_s = states[spec]
    started = time.monotonic()
    bundle = export_state(state, work / "bundle", HardwareConfig(pe=pe, simd=simd),
                          formats=("hex",))
    export_s = time.monotonic() - started
    res = perf.resource_model(bundle)
    parts = perf.resource_breakdown(bundle)
    device = synth.TARGETS["ecp5-85k"]
    started = time.monotonic()
    model = perf.cycle_model(bundle)
    latency, interval = model.latency, model.interval
    model_s = time.monotonic() - started
    lanes = sum(p * s for p, s in zip(pe, simd))
    row = {
        "name": name, "spec": spec, "in_shape": list(IN_SHAPE), "act_bits": 8, "pe": pe,
        "simd": simd, "state_s": state_s, "export_s": export_s,
        "luts": res.luts, "ffs": res.ffs, "brams": res.brams, "dsps": res.dsps,
        "lut_fraction": res.luts / device.luts, "ff_fraction": res.ffs / device.ffs,
        "bram_fraction": res.brams / device.brams, "dsp_fraction": res.dsps / device.dsps,
        "by_unit": {kind: _total(parts, kind)
                    for kind in ("engine", "window", "pool", "flatten", "argmax")},
        "latency_cycles": latency, "interval_cycles": interval, "cycle_model_s": model_s,
        "inferences_per_s": CLOCK_MHZ * 1e6 / interval, "macs": macs(bundle), "lanes": lanes,
        "utilisation": macs(bundle) / (lanes * interval),
    }
    if cosim:
        row.update(cosim_figures(bundle, work, images))
    return row


def _total(parts: dict, kind: str) -> dict:
    picked = [r for key, r in parts.items() if key.rstrip("0123456789") == kind]
    return {f: sum(getattr(r, f) for r in picked) for f in ("luts", "ffs", "brams", "dsps")}


def paper_verilog(work: Path, states: dict) -> dict:
    """Generate the full network's Verilog and lint it; time Amaranth on max pools."""
    from amaranth.back import rtlil

    from bchw.export import HardwareConfig, export_state
    from bchw.gateware.pool import MaxPool
    from bchw.gateware.top import write_verilog

    out: dict = {"pool_rtlil_s": {}}
    for channels in (64, 128, 256, 512):
        started = time.monotonic()
        rtlil.convert(MaxPool(channels, 8, 8, 2, 8, [False] * channels))
        out["pool_rtlil_s"][channels] = time.monotonic() - started
    pe, simd = FOLDINGS[PAPER]
    bundle = export_state(states[PAPER][0], work / "paper", HardwareConfig(pe=pe, simd=simd),
                          formats=("hex",))
    started = time.monotonic()
    try:
        rtl = write_verilog(bundle, work / "paper_rtl")
    except Exception as e:          # noqa: BLE001  (the outcome is the measurement)
        frame = traceback.extract_tb(e.__traceback__)[-1]
        out["verilog"] = (f"{type(e).__name__} at {Path(frame.filename).name}:{frame.lineno} "
                          f"({frame.line})")
        out["verilog_s"] = time.monotonic() - started
        return out
    out["verilog_s"] = time.monotonic() - started
    out["verilog_bytes"] = (rtl / "bchw_top.v").stat().st_size
    started = time.monotonic()
    lint = lint_verilog(rtl)
    out["lint_s"] = time.monotonic() - started
    clean = lint.returncode == 0 and not lint_messages(lint)
    out["verilog"] = ("generated, lint clean" if clean
                      else f"generated, lint NOT clean: {lint_messages(lint)[:5]}")
    return out


def report(rows: list[dict], paper: dict | None, command: str) -> str:
    lines = ["# The paper's CIFAR-10 network in hardware", "", "```sh", command, "```", "",
             "`2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10` on 3×32×32, A = 8, random "
             "weights (seed 0). Resources: bchw.perf's estimate (engines and argmax fitted to "
             "synth_ecp5 on MLPs; windows, pools and flattener to each unit synthesised "
             "alone, bench/results/conv_units.md; no whole conv design synthesised), as "
             "fractions of an ECP5-85F (83,640 LUTs and FFs, 208 BRAMs, "
             "156 DSPs). Timing: bchw.perf.cycle_model (a convolutional network's simulated, "
             f"which takes the seconds shown). Inferences/s at {CLOCK_MHZ} MHz; utilisation = "
             "MACs / (lanes × interval).", "",
             "| network, folding | lanes | LUTs | FFs | BRAMs | DSPs | interval | latency "
             "| inf/s | MACs | util. | model s |", "|---|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['lanes']:,} | {r['luts']:,} ({r['lut_fraction']:.2f}×) | "
            f"{r['ffs']:,} ({r['ff_fraction']:.2f}×) | {r['brams']:,} ({r['bram_fraction']:.2f}×)"
            f" | {r['dsps']} ({r['dsp_fraction']:.2f}×) | {r['interval_cycles']:,} | "
            f"{r['latency_cycles']:,} | {r['inferences_per_s']:,.0f} | {r['macs']:,} | "
            f"{r['utilisation']:.1%} | {r['cycle_model_s']:.0f} |")
    lines += ["", "PE per layer / SIMD per layer:", ""]
    lines += [f"- {r['name']}: {r['pe']} / {r['simd']}" for r in rows]
    lines += ["", "Where the resources go (LUTs / FFs / BRAMs):", "",
              "| network, folding | engines | windows | pools | flattener | argmax |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{u['luts']:,} / {u['ffs']:,} / {u['brams']}" for u in r["by_unit"].values()]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    for r in rows:
        if "cosim_s" not in r:
            continue
        lines += ["", f"Co-simulation of the {r['name']} network on Verilator: Verilog "
                  f"{r['verilog_s']:.0f} s ({r['verilog_bytes'] / 1e6:.1f} MB); "
                  f"`verilator --lint-only -Wall` with "
                  f"{', '.join('-Wno-' + w for w in LINT_SUPPRESSED)}: "
                  f"{'clean' if r['lint_clean'] else 'NOT clean ' + str(r['lint_messages'])} "
                  f"({r['lint_s']:.0f} s); build {r['build_s']:.0f} s (ccache off); "
                  f"{r['images']} images in {r['cosim_s']:.0f} s: the bench's phases "
                  f"{r['bench_phases_s']:.0f} s for {r['sim_cycles']:,} cycles "
                  f"({r['sim_cycles'] / r['bench_phases_s']:,.0f} cycles/s), the cycle "
                  f"model's predictions {r['cycle_model_in_cosim_s']:.0f} s; bit-exact "
                  f"{r['bit_exact']}, cycle-exact {r['cycle_exact']}, reset {r['reset_ok']}."]
    if paper is not None:
        pools = ", ".join(f"{c} channels {s:.0f} s" for c, s in paper["pool_rtlil_s"].items())
        size = (f" ({paper['verilog_bytes'] / 1e6:.1f} MB; lint {paper['lint_s']:.0f} s)"
                if "verilog_bytes" in paper else "")
        lines += ["", f"The full network's Verilog ({FOLDINGS[PAPER][0]} / {FOLDINGS[PAPER][1]}): "
                  f"{paper['verilog']} after {paper['verilog_s']:.0f} s{size}. Its co-simulation "
                  f"is sim/test_cifar10.py::test_cifar10_paper (opt-in: BCHW_CIFAR10_PAPER=1). "
                  f"Amaranth's RTLIL of one 8×8 max pool: {pools}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images co-simulated")
    parser.add_argument("--paper-verilog", action="store_true",
                        help="also generate and lint the full network's Verilog (minutes)")
    args = parser.parse_args()
    command = "nice .venv/bin/python bench/cifar10.py" + (
        f" --images {args.images}" if args.images != 4 else "") + (
        " --paper-verilog" if args.paper_verilog else "")
    rows, states = [], {}
    with tempfile.TemporaryDirectory(prefix="bchw-cifar10-") as tmp:
        for k, (name, spec, pe, simd, cosim) in enumerate(CONFIGS):
            row = evaluate(name, spec, pe, simd, cosim, args.images, Path(tmp) / str(k), states)
            rows.append(row)
            print(json.dumps({key: v for key, v in row.items() if key != "by_unit"}), flush=True)
        paper = paper_verilog(Path(tmp), states) if args.paper_verilog else None
    text = report(rows, paper, command)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cifar10.md").write_text(text)
    (RESULTS / "cifar10.json").write_text(json.dumps({"configs": rows, "paper_verilog": paper},
                                                     indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
