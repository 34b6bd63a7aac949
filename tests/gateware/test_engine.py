"""LayerEngine in Amaranth's simulator: each output vector is
``golden.requantize(golden.accumulate(x))`` of its layer, the first
``steps + engine_pipeline(simd)`` cycles after its input, then one every ``NF·SF`` cycles."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bchw import golden, randnet
from bchw.export import HardwareConfig, LayerBundle, export_state
from bchw.gateware.assembler import InputAssembler
from bchw.gateware.engine import LayerEngine
from bchw.gateware.simtools import (
    always,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
)
from bchw.perf import (MEMORY_READY_COPIES, drain_fields, drain_load_copies, enable_copies,
                       engine_interval, engine_pipeline, groups_into_engine, param_rom_parts,
                       requant_share, skid_groups, skid_parts)

from tests.gateware.nets import ENGINE_LAYERS as LAYERS
from tests.gateware.nets import engine_bundles


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return engine_bundles(tmp_path_factory, seed=10)


def layer_inputs(layer: LayerBundle, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << layer.in_bits, size=(n, layer.in_features))
    x[0], x[1] = (1 << layer.in_bits) - 1, 0
    return x


def golden_layer(layer: LayerBundle, x: np.ndarray) -> np.ndarray:
    return golden.requantize(golden.accumulate(x, layer.weights), layer.mul, layer.shift,
                             layer.bias, layer.widths.out_lo, layer.widths.out_hi)


def run_engine(layer: LayerBundle, x: np.ndarray, valid=always, ready=always):
    """Stream ``x`` through the layer's engine; check every output against golden.
    Returns the input-accept cycles and the output transfers."""
    dut = LayerEngine.from_layer(layer, "inline")
    expected = [pack(y, layer.widths.out_bits) for y in golden_layer(layer, x)]
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, dut.s, [pack(v, layer.in_bits) for v in x],
                                     valid=valid))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, len(x), ready=ready))

    steps = layer.nf * layer.sf
    simulate(dut, producer, consumer, cycles=len(x) * (steps + 30) * 5 + 100)
    for n, (transfer, want) in enumerate(zip(got, expected)):
        assert transfer.payload == want, f"layer {layer.index}, vector {n}"
    return sent, got


@pytest.mark.parametrize("net, index", LAYERS)
def test_back_to_back_exact_and_on_time(bundles, net: str, index: int):
    layer = bundles[net].layers[index]
    steps = layer.nf * layer.sf
    sent, got = run_engine(layer, layer_inputs(layer, 6, seed=index))
    # the next vector is accepted while the last step of the current one issues
    if steps > 1:
        assert np.diff(sent).tolist() == [steps] * (len(sent) - 1)
    else:  # one-step engines take vectors back to back until the first full output register
        assert np.diff(sent).tolist()[0] == 1 and set(np.diff(sent).tolist()) <= {1, 2}
    assert got[0].cycle - sent[0] == steps + engine_pipeline(
        layer.simd, 1, requant_share(layer.pe, layer.sf))
    assert np.diff([t.cycle for t in got]).tolist() == [engine_interval(steps)] * (len(got) - 1)


@pytest.mark.parametrize("net, index", LAYERS)
@pytest.mark.parametrize("in_rate, out_rate", [(1.0, 0.5), (0.6, 0.2), (1.0, 0.05)])
def test_back_pressure_keeps_outputs_exact(bundles, net: str, index: int, in_rate: float,
                                           out_rate: float):
    layer = bundles[net].layers[index]
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=index)
    run_engine(layer, layer_inputs(layer, 6, seed=100 + index), valid=valid,
               ready=random_pattern(out_rate, seed=int(out_rate * 100)))


class AssembledEngine(wiring.Component):
    """An :class:`InputAssembler` of SIMD lanes in front of an engine that loads whole
    vectors: what an engine with ``slice_input`` must do, bit for bit and cycle for cycle."""

    def __init__(self, layer: LayerBundle, lanes: int):
        self.layer, self.lanes = layer, lanes
        super().__init__({"s": In(stream.Signature(lanes * layer.in_bits)),
                          "m": Out(stream.Signature(layer.out_features * layer.widths.out_bits))})

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        m.submodules.assembler = asm = InputAssembler(layer.in_features, self.lanes,
                                                      layer.in_bits)
        m.submodules.engine = engine = LayerEngine.from_layer(layer, "inline")
        m.d.comb += [asm.tdata.eq(self.s.payload), asm.tvalid.eq(self.s.valid),
                     self.s.ready.eq(asm.tready)]
        wiring.connect(m, asm.m, engine.s)
        wiring.connect(m, engine.m, wiring.flipped(self.m))
        return m


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@pytest.mark.parametrize("net, index", LAYERS)
@pytest.mark.parametrize("in_rate, out_rate", [(1.0, 1.0), (0.6, 0.3), (1.0, 0.05)])
def test_beats_into_the_input_memory_as_through_an_assembler(bundles, net: str, index: int,
                                                             in_rate: float, out_rate: float):
    """Beats of every divisor of SIMD into the input memory: the same beats taken and the
    same outputs at the same cycles as an InputAssembler feeding the register engine, the
    lanes of a last beat beyond the inputs dropped."""
    layer = bundles[net].layers[index]
    if layer.sf < 2:
        with pytest.raises(ValueError, match="SF ≥ 2"):
            LayerEngine.from_layer(layer, "inline", beat_lanes=1)
        return
    if layer.simd > 1:
        with pytest.raises(ValueError, match="must divide SIMD"):
            LayerEngine.from_layer(layer, "inline", beat_lanes=layer.simd + 1)
    rng = np.random.default_rng(index)
    x = layer_inputs(layer, 5, seed=200 + index)
    expected = [pack(y, layer.widths.out_bits) for y in golden_layer(layer, x)]
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=index)
    ready = always if out_rate == 1 else random_pattern(out_rate, seed=7)
    for lanes in divisors(layer.simd):
        n_beats = -(-layer.in_features // lanes)
        padded = rng.integers(0, 1 << layer.in_bits, size=(len(x), n_beats * lanes))
        padded[:, :layer.in_features] = x
        beats = [pack(v[k * lanes:(k + 1) * lanes], layer.in_bits)
                 for v in padded for k in range(n_beats)]
        runs = []
        for dut in (LayerEngine.from_layer(layer, "inline", beat_lanes=lanes),
                    AssembledEngine(layer, lanes)):
            sent, got = [], []

            async def producer(ctx, dut=dut, sent=sent, beats=beats):
                sent.extend(await stream_put(ctx, dut.s, beats, valid=valid))

            async def consumer(ctx, dut=dut, got=got):
                got.extend(await stream_get(ctx, dut.m, len(x), ready=ready))

            async def ready_copies(ctx, dut=dut, beats=beats):
                # the input memory's copies of its ready are its ready, every cycle
                for _ in range(len(beats)):
                    ready_now = ctx.get(dut.s.ready)
                    assert ctx.get(dut.s_ready_copies) == ready_now * (
                        (1 << MEMORY_READY_COPIES) - 1)
                    await ctx.tick()

            benches = (producer, consumer) + ((ready_copies,) if isinstance(dut, LayerEngine)
                                              else ())
            simulate(dut, *benches,
                     cycles=len(x) * (layer.nf * layer.sf + n_beats + 30) * 40 + 100)
            assert [t.payload for t in got] == expected, f"{lanes} lanes"
            runs.append((sent, [t.cycle for t in got]))
        assert runs[0] == runs[1], f"{lanes} lanes"


class ChainedEngines(wiring.Component):
    """Two engines of consecutive layers, joined by whole vectors or (``groups``) by the
    first one's groups into the second one's input memory."""

    def __init__(self, first: LayerBundle, second: LayerBundle, groups: bool):
        self.first, self.second, self.groups = first, second, groups
        super().__init__({
            "s": In(stream.Signature(first.in_features * first.in_bits)),
            "m": Out(stream.Signature(second.out_features * second.widths.out_bits))})

    def elaborate(self, platform):
        m = Module()
        # handing groups on, the first engine's skid slots look at the input memory's
        # copies of its ready, as in the accelerator
        m.submodules.first = a = LayerEngine.from_layer(
            self.first, "inline", group_output=self.groups,
            ready_copies=MEMORY_READY_COPIES if self.groups else 0)
        m.submodules.second = b = LayerEngine.from_layer(
            self.second, "inline", beat_lanes=self.first.pe if self.groups else None)
        if self.groups:
            m.d.comb += a.m_ready_copies.eq(b.s_ready_copies)
        wiring.connect(m, wiring.flipped(self.s), a.s)
        wiring.connect(m, a.m, b.s)
        wiring.connect(m, b.m, wiring.flipped(self.m))
        return m


@pytest.mark.parametrize("net, index", [(n, i) for n, i in LAYERS if (n, i + 1) in LAYERS])
@pytest.mark.parametrize("in_rate, out_rate", [(1.0, 1.0), (0.6, 0.3), (1.0, 0.05)])
def test_groups_into_the_next_input_memory_as_through_vectors(bundles, net: str, index: int,
                                                              in_rate: float, out_rate: float):
    """An engine handing its groups straight into the next one's input memory: the same
    inputs taken and the same outputs at the same cycles as with whole vectors between
    them (the output register and the input buffer)."""
    first, second = bundles[net].layers[index], bundles[net].layers[index + 1]
    if not groups_into_engine(first, second):
        if first.sf < 2:
            with pytest.raises(ValueError, match="group_output needs SF ≥ 2"):
                LayerEngine.from_layer(first, "inline", group_output=True)
        return
    x = layer_inputs(first, 10, seed=300 + index)
    expected = [pack(y, second.widths.out_bits)
                for y in golden_layer(second, golden_layer(first, x))]
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=index)
    ready = always if out_rate == 1 else random_pattern(out_rate, seed=11)
    runs = []
    for dut in (ChainedEngines(first, second, True), ChainedEngines(first, second, False)):
        sent, got = [], []

        async def producer(ctx, dut=dut, sent=sent):
            sent.extend(await stream_put(ctx, dut.s, [pack(v, first.in_bits) for v in x],
                                         valid=valid))

        async def consumer(ctx, dut=dut, got=got):
            got.extend(await stream_get(ctx, dut.m, len(x), ready=ready))

        steps = max(first.nf * first.sf, second.nf * second.sf)
        simulate(dut, producer, consumer, cycles=len(x) * (steps + 40) * 40 + 200)
        assert [t.payload for t in got] == expected
        runs.append((sent, [t.cycle for t in got]))
    assert runs[0] == runs[1]


def test_groups_go_into_engines_on_the_engine_nets(bundles):
    """The chained test above meets both joins: net A's engines hand groups on."""
    layers = bundles["A"].layers
    assert [groups_into_engine(a, b) for a, b in zip(layers, layers[1:])] == [True, True]


def test_negative_scales_are_exercised(bundles):
    """The random networks give negative multipliers, so both signs of M are checked."""
    muls = np.concatenate([layer.mul for b in bundles.values() for layer in b.layers])
    assert (muls < 0).any() and (muls > 0).any()


def test_a_parameter_rom_in_logic_is_read_a_pe_a_rom(tmp_path):
    # A shallow ROM becomes LUT logic: a ROM a PE, each on its own copy of the address
    # register, reading its PE's bits of the one image; a deep one stays a block RAM whole.
    from amaranth.back import verilog

    for n_out, pe, parts in ((12, 4, 4), (1024, 8, 1)):
        state = randnet.random_state([16, n_out], seed=3)
        bundle = export_state(state, tmp_path / f"b{n_out}", HardwareConfig(pe=[pe], simd=[8]),
                              formats=("hex",))
        layer = bundle.layers[0]
        assert param_rom_parts(pe, layer.widths.param_bits, layer.nf) == parts
        text = verilog.convert(LayerEngine.from_layer(layer, "readmemh"), name="engine")
        bits = pe * layer.widths.param_bits
        roms = re.findall(r"bchw_rom #\((.*?)\)\s*\w+ \(", text, re.S)
        param_roms = [r for r in roms if layer.param_file in r]
        assert len(param_roms) == parts
        if parts > 1:
            los = sorted(int(re.search(r"\.LO\(32'd(\d+)\)", r)[1]) for r in param_roms)
            assert los == [k * bits // pe for k in range(pe)]
            assert all(f".IMAGE_WIDTH(32'd{bits})" in r for r in param_roms)
            assert len(set(re.findall(r"\bpaddr_copy\d+\b", text))) == pe
        else:
            assert ".LO(" not in param_roms[0] and "paddr_copy" not in text


def test_a_drain_loads_each_sum_and_its_parameters_under_copies_of_their_own(tmp_path):
    # Shared requantizers (PE 6, SF 4: 2 requantizers of 3 PEs each): the drain takes each
    # PE's sum and its parameters under a copy of the load each; with one group (NF = 1),
    # the parameters are constants, one part with the sum.
    from amaranth.back import verilog

    for n_out, fields in ((24, 2), (6, 1)):
        state = randnet.random_state([32, n_out], seed=4)
        bundle = export_state(state, tmp_path / f"b{n_out}", HardwareConfig(pe=[6], simd=[8]),
                              formats=("hex",))
        layer = bundle.layers[0]
        assert requant_share(6, layer.sf) == 3
        assert len(drain_fields(layer.widths, layer.nf)) == fields
        text = verilog.convert(LayerEngine.from_layer(layer, "readmemh"), name="engine")
        copies = len(set(re.findall(r"\bdload_copy\d+\b", text)))
        assert copies == 6 * fields == drain_load_copies(layer.widths, layer.nf, 6)


def test_each_part_of_each_skid_slot_chooses_from_copies_of_its_own(tmp_path):
    # PE 5 of 16-bit scores: a slot of 81 bits with its last flag, three parts
    from amaranth.back import verilog

    state = randnet.random_state([32, 20], seed=4)
    bundle = export_state(state, tmp_path / "b", HardwareConfig(pe=[5], simd=[8]),
                          formats=("hex",))
    layer = bundle.layers[0]
    engine = LayerEngine.from_layer(layer, "readmemh")
    slots = skid_groups(layer.sf, engine_pipeline(layer.simd, 1, requant_share(5, layer.sf)))
    parts = len(skid_parts(5 * layer.widths.out_bits + 1))
    assert slots >= 2 and parts == 3
    text = verilog.convert(engine, name="engine")
    for name in ("count", "skid_qvalid"):
        assert len(set(re.findall(rf"\b{name}_copy\d+\b", text))) == slots * parts


def test_an_output_register_can_look_at_copies_of_the_next_input_buffers_ready(bundles):
    """Net D joins two engines of SF ≥ 2 by whole vectors: the consumer offers a copy of
    its ready a part of its input buffer, which the producer's output register takes
    (their behaviour: test_datapath's accelerator test of net D, under back-pressure)."""
    producer, consumer = bundles["D"].layers
    assert producer.sf >= 2 and consumer.sf >= 2 and not groups_into_engine(producer, consumer)
    copies = enable_copies(consumer.sf * consumer.simd * consumer.in_bits)
    engines = [LayerEngine.from_layer(consumer, "inline"),
               LayerEngine.from_layer(producer, "inline", ready_copies=copies)]
    assert len(engines[0].s_ready_copies) == len(engines[1].m_ready_copies) == copies
    one_step = bundles["B"].layers[0]        # SF = 1: no input buffer parts, no copies
    assert one_step.sf == 1
    with pytest.raises(ValueError, match="ready_copies needs SF ≥ 2"):
        LayerEngine.from_layer(one_step, "inline", ready_copies=copies)
    engines.append(LayerEngine.from_layer(one_step, "inline"))
    assert "s_ready_copies" not in engines[-1].signature.members
    for engine in engines:
        Fragment.get(engine, None)      # they elaborate
