"""The dataflow top, with AXI4-Stream ports: input assembler → one engine per layer → argmax
for a multilayer perceptron; sliding window → engine → max pool per convolution, a flattener,
then the fully connected engines → argmax for a convolutional network."""

from __future__ import annotations

import os
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.errors import atomic_dir
from bchw.gateware.argmax import Argmax
from bchw.gateware.assembler import InputAssembler
from bchw.gateware.engine import DATAPATHS, LayerEngine
from bchw.gateware.multiplier import MUL_VERILOG
from bchw.gateware.pool import MaxPool
from bchw.gateware.rom import ROM_VERILOG
from bchw.gateware.window import SlidingWindow
from bchw.perf import MEMORY_READY_COPIES, enable_copies, mlp_joins

TOP_NAME = "bchw_top"
ROM_MODES = ("readmemh", "inline")


class Accelerator(wiring.Component):
    """The whole network in hardware.

    A multilayer perceptron: one :class:`LayerEngine` per layer, an
    :class:`Argmax`; the first engine takes the input beats into its input
    memory when ``in_lanes`` divides its SIMD and it has two slices or more
    (:func:`bchw.perf.beats_into_engine`, what the folding search chooses),
    else an :class:`InputAssembler` collects the image for it (same handshake,
    same cycles).  A convolutional
    network (``bundle.has_conv``) takes one pixel of C values a beat, in HWC
    raster order, straight into its first convolution; each convolution is a
    :class:`SlidingWindow` → a :class:`LayerEngine` (one output pixel a window)
    → a :class:`MaxPool` when it pools (the minimum for channels of negative
    multiplier).  After the last convolution an :class:`InputAssembler`, fed
    pixels instead of beats, flattens its H'·W' output pixels into one HWC
    vector (the first fully connected layer's columns are in that order),
    for the fully connected engines and the argmax.
    :func:`bchw.perf.cycle_model` models every stage's timing.

    ``datapath`` (one of :data:`DATAPATHS`) is every engine's way of adding
    ±1-weighted inputs; outputs and timing are the same with either.
    ``tree_levels`` adder levels share a register stage in every adder tree:
    fewer flip-flops, a longer path, and the latency of
    ``bchw.perf.cycle_model(bundle, tree_levels)``.

    Members
    -------
    s_axis_tdata : In(in_lanes · 8)
        ``in_lanes`` u8 pixels a beat; pixel ``k`` of an image in beat ``k // in_lanes``
        (a convolutional network's pixels in HWC order, ``in_lanes`` its channels).
    s_axis_tvalid, s_axis_tlast : In(1)
        ``tlast`` is accepted and not needed: beats are counted.
    s_axis_tready : Out(1)
    m_axis_tdata : Out(class_bits + num_classes · score_bits)
        The class in the low ``class_bits`` bits, then the scores (two's complement).
    m_axis_tvalid, m_axis_tlast : Out(1)
        One beat per image: ``tlast`` is high with every ``tvalid``.
    m_axis_tready : In(1)
    dbg_l{i}_valid : Out(1)
        Only with ``debug``: high in each cycle engine ``i`` hands an output vector on (a
        convolution: its max pool, if it pools, hands an output pixel on).
    dbg_l{i}_data : Out(out_features · out_bits)
        Only with ``debug``: that vector (the per-layer tap the golden model is compared
        with; a convolution's pixel ``n`` of an image is values ``[n·C, (n+1)·C)`` of the
        golden model's HWC output of that layer).
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

    def engine(self, layer, beat_lanes: int | None = None, group_output: bool = False,
               ready_copies: int = 0) -> LayerEngine:
        """The engine of a :class:`bchw.export.LayerBundle` (the int8 baseline makes its own)."""
        return LayerEngine.from_layer(layer, self.rom_mode, self.datapath, self.tree_levels,
                                      beat_lanes, group_output, ready_copies)

    def elaborate(self, platform):
        if self.bundle.has_conv:
            return self._elaborate_conv()
        m = Module()
        io = self.bundle.io
        layers = self.bundle.layers
        lanes = io["in_lanes"]
        joins = mlp_joins(layers, lanes)
        if joins[0][0]:
            upstream = None      # the beats go straight into the first engine's input memory
        else:
            m.submodules.assembler = asm = InputAssembler(io["n_in"], lanes, io["pixel_bits"])
            m.d.comb += [asm.tdata.eq(self.s_axis_tdata), asm.tvalid.eq(self.s_axis_tvalid),
                         asm.tlast.eq(self.s_axis_tlast), self.s_axis_tready.eq(asm.tready)]
            upstream = asm.m
        previous = None
        for layer, (beats, hands) in zip(layers, joins):
            # beats: of the input (first engine) or the previous engine's groups. An engine
            # whose output register feeds the next one's input buffer (both of SF ≥ 2)
            # looks at that buffer's copies of its ready register; one that hands its
            # groups to the next one's input memory, at that memory's copies of its ready
            after = layers[layer.index + 1] if layer.index + 1 < len(layers) else None
            if hands:
                copies = MEMORY_READY_COPIES
            elif after is not None and layer.sf >= 2 and after.sf >= 2:
                copies = enable_copies(after.sf * after.simd * after.in_bits)
            else:
                copies = 0
            engine = self.engine(layer, beats or None, hands, copies)
            m.submodules[f"engine{layer.index}"] = engine
            if upstream is None:
                self._input_port(m, engine.s)
            else:
                wiring.connect(m, upstream, engine.s)
            if previous is not None and previous.ready_copies:
                m.d.comb += previous.m_ready_copies.eq(engine.s_ready_copies)
            upstream, previous = engine.m, engine
            if self.debug:
                self._tap_vector(m, layer, engine)
        m.submodules.argmax = arg = Argmax(io["num_classes"], io["score_bits"])
        wiring.connect(m, upstream, arg.s)
        m.d.comb += [self.m_axis_tdata.eq(arg.m.payload), self.m_axis_tvalid.eq(arg.m.valid),
                     self.m_axis_tlast.eq(1), arg.m.ready.eq(self.m_axis_tready)]
        return m

    def _input_port(self, m: Module, stream) -> None:
        """The AXI4-Stream input straight into ``stream`` (``tlast`` is not needed)."""
        m.d.comb += [stream.payload.eq(self.s_axis_tdata), stream.valid.eq(self.s_axis_tvalid),
                     self.s_axis_tready.eq(stream.ready)]

    def _tap_vector(self, m: Module, layer, engine: LayerEngine) -> None:
        """The debug tap of a multilayer perceptron's layer: its output vector as it is
        handed on, or, from an engine with ``group_output``, as the groups are collected
        (debug hardware only: a register of the vector, its valid a cycle after the last
        group goes)."""
        valid = getattr(self, f"dbg_l{layer.index}_valid")
        data = getattr(self, f"dbg_l{layer.index}_data")
        out = engine.m
        if not engine.group_output:
            m.d.comb += [valid.eq(out.valid & out.ready), data.eq(out.payload)]
            return
        gb = len(out.payload)
        vector = Signal(layer.nf * gb, name=f"dbg_l{layer.index}_vector")
        count = Signal(range(layer.nf), name=f"dbg_l{layer.index}_count")
        last = count == layer.nf - 1
        done = Signal(name=f"dbg_l{layer.index}_done")
        m.d.sync += done.eq(out.valid & out.ready & last)
        with m.If(out.valid & out.ready):
            m.d.sync += [vector.eq(Cat(vector[gb:], out.payload)),
                         count.eq(Mux(last, 0, count + 1))]
        m.d.comb += [valid.eq(done), data.eq(vector[:len(data)])]

    def _tap(self, m: Module, layer, stream) -> None:
        if self.debug:
            m.d.comb += [getattr(self, f"dbg_l{layer.index}_valid").eq(stream.valid
                                                                       & stream.ready),
                         getattr(self, f"dbg_l{layer.index}_data").eq(stream.payload)]

    def _elaborate_conv(self) -> Module:
        m = Module()
        io = self.bundle.io
        upstream = None           # the stream into the next layer; None: the AXI4-Stream input
        previous = None
        for layer in self.bundle.layers:
            i = layer.index
            if layer.kind == "conv":
                channels, height, width = layer.in_shape
                window = SlidingWindow(channels, height, width, layer.kernel, layer.in_bits)
                m.submodules[f"window{i}"] = window
                if upstream is None:
                    self._input_port(m, window.s)
                else:
                    wiring.connect(m, upstream, window.s)
                upstream = window.m
            elif previous is not None and previous.kind == "conv":
                # the flattener: the last convolution's pixels, one a beat, into one vector
                channels, height, width = previous.out_shape
                bits = previous.widths.out_bits
                m.submodules.flatten = flat = InputAssembler(height * width * channels,
                                                             channels, bits)
                m.d.comb += [flat.tdata.eq(upstream.payload), flat.tvalid.eq(upstream.valid),
                             upstream.ready.eq(flat.tready)]
                upstream = flat.m
            engine = self.engine(layer)
            m.submodules[f"engine{i}"] = engine
            wiring.connect(m, upstream, engine.s)
            upstream = engine.m
            if layer.pool:
                pool = MaxPool(layer.out_features, layer.in_shape[1], layer.in_shape[2],
                               layer.pool, layer.widths.out_bits, minimum=layer.mul < 0)
                m.submodules[f"pool{i}"] = pool
                wiring.connect(m, upstream, pool.s)
                upstream = pool.m
            self._tap(m, layer, upstream)
            previous = layer
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
    """Write ``bchw_top.v``, the modules it instantiates (``bchw_rom.v``, ``bchw_mul.v``)
    and the hex images into ``out_dir`` (atomically)."""
    text = generate_verilog(bundle, debug, datapath)
    with atomic_dir(out_dir) as tmp:
        (tmp / f"{TOP_NAME}.v").write_text(text)
        (tmp / "bchw_rom.v").write_text(ROM_VERILOG)
        (tmp / "bchw_mul.v").write_text(MUL_VERILOG)
        for name in rom_files(bundle):
            (tmp / name).write_bytes((bundle.path / name).read_bytes())
    return Path(out_dir)
