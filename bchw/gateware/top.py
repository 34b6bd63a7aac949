"""The dataflow top: input assembler → one engine per layer → argmax, with AXI4-Stream ports."""

from __future__ import annotations

import os
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.errors import atomic_dir
from bchw.gateware.argmax import Argmax
from bchw.gateware.assembler import InputAssembler
from bchw.gateware.engine import DATAPATHS, LayerEngine
from bchw.gateware.rom import ROM_VERILOG

TOP_NAME = "bchw_top"
ROM_MODES = ("readmemh", "inline")


class Accelerator(wiring.Component):
    """The whole network in hardware.

    ``datapath`` (one of :data:`DATAPATHS`) is every engine's way of adding
    ±1-weighted inputs; outputs and timing are the same with either.
    ``tree_levels`` adder levels share a register stage in every adder tree:
    fewer flip-flops, a longer path, and the latency of
    ``bchw.perf.cycle_model(bundle, tree_levels)``.

    Members
    -------
    s_axis_tdata : In(in_lanes · 8)
        ``in_lanes`` u8 pixels a beat; pixel ``k`` of an image in beat ``k // in_lanes``.
    s_axis_tvalid, s_axis_tlast : In(1)
    s_axis_tready : Out(1)
    m_axis_tdata : Out(class_bits + num_classes · score_bits)
        The class in the low ``class_bits`` bits, then the scores (two's complement).
    m_axis_tvalid, m_axis_tlast : Out(1)
        One beat per image: ``tlast`` is high with every ``tvalid``.
    m_axis_tready : In(1)
    dbg_l{i}_valid : Out(1)
        Only with ``debug``: high in each cycle engine ``i`` hands an output vector on.
    dbg_l{i}_data : Out(out_features · out_bits)
        Only with ``debug``: that vector (the per-layer tap the golden model is compared with).
    """

    def __init__(self, bundle, rom_mode: str = "readmemh", debug: bool = False,
                 datapath: str = "negate", tree_levels: int = 1):
        if rom_mode not in ROM_MODES:
            raise ValueError(f"rom_mode must be one of {ROM_MODES}")
        if datapath not in DATAPATHS:
            raise ValueError(f"datapath must be one of {DATAPATHS}, not {datapath!r}")
        self.bundle, self.rom_mode, self.debug = bundle, rom_mode, debug
        self.datapath, self.tree_levels = datapath, tree_levels
        io = bundle.io
        members = {
            "s_axis_tdata": In(io["in_lanes"] * io["pixel_bits"]), "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(io["out_bits"]), "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1), "m_axis_tlast": Out(1)}
        if debug:
            for layer in bundle.layers:
                members[f"dbg_l{layer.index}_valid"] = Out(1)
                members[f"dbg_l{layer.index}_data"] = Out(layer.out_features
                                                          * layer.widths.out_bits)
        super().__init__(members)

    def engine(self, layer) -> LayerEngine:
        """The engine of a :class:`bchw.export.LayerBundle` (the int8 baseline makes its own)."""
        return LayerEngine.from_layer(layer, self.rom_mode, self.datapath, self.tree_levels)

    def elaborate(self, platform):
        m = Module()
        io = self.bundle.io
        m.submodules.assembler = asm = InputAssembler(io["n_in"], io["in_lanes"],
                                                      io["pixel_bits"])
        m.d.comb += [asm.tdata.eq(self.s_axis_tdata), asm.tvalid.eq(self.s_axis_tvalid),
                     asm.tlast.eq(self.s_axis_tlast), self.s_axis_tready.eq(asm.tready)]
        upstream = asm.m
        for layer in self.bundle.layers:
            engine = self.engine(layer)
            m.submodules[f"engine{layer.index}"] = engine
            wiring.connect(m, upstream, engine.s)
            upstream = engine.m
            if self.debug:
                m.d.comb += [getattr(self, f"dbg_l{layer.index}_valid").eq(
                                 engine.m.valid & engine.m.ready),
                             getattr(self, f"dbg_l{layer.index}_data").eq(engine.m.payload)]
        m.submodules.argmax = arg = Argmax(io["num_classes"], io["score_bits"])
        wiring.connect(m, upstream, arg.s)
        m.d.comb += [self.m_axis_tdata.eq(arg.m.payload), self.m_axis_tvalid.eq(arg.m.valid),
                     self.m_axis_tlast.eq(1), arg.m.ready.eq(self.m_axis_tready)]
        return m


def generate_verilog(bundle, debug: bool = False, datapath: str = "negate",
                     tree_levels: int = 1) -> str:
    """The Verilog of ``bundle``'s accelerator; it depends on the shape and folding only.

    ``debug`` adds the per-layer output taps (``dbg_l{i}_*`` ports); ``datapath`` is one
    of :data:`DATAPATHS`; ``tree_levels`` adder levels share a register stage (the
    latency is then ``bchw.perf.cycle_model(bundle, tree_levels)``'s).
    """
    return to_verilog(Accelerator(bundle, "readmemh", debug, datapath, tree_levels))


def to_verilog(top: wiring.Component) -> str:
    """``top`` as a Verilog module named :data:`TOP_NAME`, without source locations."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    return verilog.convert(top, name=TOP_NAME, emit_src=False)


def rom_files(bundle) -> list[str]:
    """The hex images the generated Verilog loads, by file name."""
    return [name for layer in bundle.layers for name in (layer.weight_file, layer.param_file)]


def write_verilog(bundle, out_dir: str | os.PathLike, debug: bool = False,
                  datapath: str = "negate") -> Path:
    """Write ``bchw_top.v``, ``bchw_rom.v`` and the hex images into ``out_dir`` (atomically)."""
    text = generate_verilog(bundle, debug, datapath)
    with atomic_dir(out_dir) as tmp:
        (tmp / f"{TOP_NAME}.v").write_text(text)
        (tmp / "bchw_rom.v").write_text(ROM_VERILOG)
        for name in rom_files(bundle):
            (tmp / name).write_bytes((bundle.path / name).read_bytes())
    return Path(out_dir)
