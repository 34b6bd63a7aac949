"""The int8 multiplier baseline in Amaranth's simulator: its engines and accelerator give
:func:`bchw.gateware.baseline.int8_golden` bit for bit, at the cycles of the binary design's
:func:`bchw.perf.cycle_model`, and it generates a self-contained ``bchw_top``."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Cat

from bchw import golden, randnet
from bchw.export import Bundle, HardwareConfig, LayerBundle, export_state
from bchw.gateware.adder_tree import AdderTree
from bchw.gateware.baseline import (
    WEIGHT_BITS,
    Int8Accelerator,
    generate_int8_verilog,
    int8_engine,
    int8_golden,
    int8_weights,
    int8_widths,
    pack_int8_weights,
)
from bchw.gateware.simtools import (
    Port,
    always,
    check_pipeline,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
    unpack,
)
from bchw.gateware.top import generate_verilog
from bchw.perf import cycle_model, engine_interval, engine_pipeline, requant_share, tree_depth

# sizes, act_bits, PE, SIMD, in_lanes: PE and SIMD that don't divide, SIMD 1, PE 1, SF = 1
NETS = {
    "A": ([11, 7, 5, 3], 4, [3, 1, 2], [4, 1, 5], 4),
    "B": ([6, 9, 2], 8, [4, 2], [6, 3], 6),
}
LAYERS = [(net, i) for net, spec in NETS.items() for i in range(len(spec[0]) - 1)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Bundle]:
    out = {}
    for seed, (name, (sizes, act_bits, pe, simd, lanes)) in enumerate(NETS.items()):
        state = randnet.random_state(sizes, act_bits=act_bits, seed=seed + 30)
        out[name] = export_state(state, tmp_path_factory.mktemp(name) / "bundle",
                                 HardwareConfig(pe=pe, simd=simd, in_lanes=lanes),
                                 formats=("hex",))
    return out


def small_weights(bundle: Bundle, seed: int) -> list[np.ndarray]:
    """Mostly small weights, so that the bundle's requantization gives outputs inside the clamp
    range, with the extremes −128 and 127 among them."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in bundle.layers:
        w = rng.integers(-2, 3, size=(layer.out_features, layer.in_features)).astype(np.int8)
        w.flat[0], w.flat[-1] = -128, 127
        out.append(w)
    return out


WEIGHTS = {"full": lambda b: int8_weights(b, seed=4), "small": lambda b: small_weights(b, 5)}


def test_weights_are_seeded_int8_over_the_whole_range(bundles):
    bundle = bundles["A"]
    w = int8_weights(bundle, seed=1)
    assert [m.shape for m in w] == [(la.out_features, la.in_features) for la in bundle.layers]
    assert all(m.dtype == np.int8 for m in w)
    assert all(np.array_equal(a, b) for a, b in zip(w, int8_weights(bundle, seed=1)))
    assert w[0].min() < -100 and w[0].max() > 100
    assert not np.array_equal(w[0], int8_weights(bundle, seed=2)[0])


@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 3), (3, 4), (5, 11)])
def test_weight_word_layout(pe: int, simd: int):
    """Lane ``s`` of PE ``p`` at bits ``[(p·SIMD+s)·8, +8)`` of word ``nf·SF + sf``, two's
    complement; padding lanes are 0."""
    rng = np.random.default_rng(pe * simd)
    w = rng.integers(-128, 128, size=(7, 10)).astype(np.int8)
    words = pack_int8_weights(w, pe, simd)
    nf, sf = -(-7 // pe), -(-10 // simd)
    assert len(words) == nf * sf
    for f in range(nf):
        for g in range(sf):
            lanes = unpack(words[f * sf + g], WEIGHT_BITS, pe * simd, signed=True)
            for p in range(pe):
                for s in range(simd):
                    j, i = f * pe + p, g * simd + s
                    want = int(w[j, i]) if j < 7 and i < 10 else 0
                    assert lanes[p * simd + s] == want, (f, g, p, s)


@pytest.mark.parametrize("simd, in_bits", [(1, 8), (3, 1), (4, 8), (7, 5)])
def test_multiply_tree_sums_products(simd: int, in_bits: int):
    """``Σ w·x`` exactly, ``tree_depth(simd)`` enabled cycles later, the extremes included."""
    dut = AdderTree(simd, in_bits, "multiply", WEIGHT_BITS)
    rng = np.random.default_rng(simd + in_bits)
    x = rng.integers(0, 1 << in_bits, size=(40, simd))
    w = rng.integers(-128, 128, size=(40, simd))
    x[:2], w[0], w[1] = (1 << in_bits) - 1, -128, 127
    expected = (x * w).sum(axis=1).tolist()
    bound = simd * ((1 << in_bits) - 1) * 128
    assert expected[0] == -bound and golden.signed_bits(-bound, bound) <= len(dut.sum)
    inputs = [(pack(xi, in_bits), pack(wi, WEIGHT_BITS)) for xi, wi in zip(x, w)]

    async def testbench(ctx):
        await check_pipeline(ctx, dut.en, [dut.x, dut.w], inputs, dut.sum, expected,
                             tree_depth(simd), enable=random_pattern(0.7, seed=simd))

    simulate(dut, testbench, cycles=3 * len(x) + tree_depth(simd) + 10)


def test_accumulator_holds_the_int8_bound(bundles):
    for layer in bundles["B"].layers:
        w = int8_widths(layer)
        bound = layer.in_features * ((1 << layer.in_bits) - 1) * 128
        assert (w.acc_min, w.acc_max) == (-bound, bound)
        assert w.acc_bits == golden.signed_bits(-bound, bound) > layer.widths.acc_bits
        assert w.param_bits == layer.widths.param_bits      # the bundle's M, S, B as they are


def layer_golden(layer: LayerBundle, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    acc = x.astype(np.int64) @ weights.astype(np.int64).T
    return golden.requantize(acc, layer.mul, layer.shift, layer.bias, layer.widths.out_lo,
                             layer.widths.out_hi)


@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("net, index", LAYERS)
def test_engine_exact_and_on_time(bundles, net: str, index: int, kind: str):
    layer = bundles[net].layers[index]
    weights = WEIGHTS[kind](bundles[net])[index]
    rng = np.random.default_rng(index)
    x = rng.integers(0, 1 << layer.in_bits, size=(5, layer.in_features))
    x[0] = (1 << layer.in_bits) - 1
    dut = int8_engine(layer, weights)
    ready = always if kind == "full" else random_pattern(0.3, seed=index)
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, dut.s, [pack(v, layer.in_bits) for v in x]))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, len(x), ready=ready))

    steps = layer.nf * layer.sf
    simulate(dut, producer, consumer, cycles=len(x) * (steps + 30) * 5 + 100)
    want = layer_golden(layer, weights, x)
    for n, (transfer, row) in enumerate(zip(got, want)):
        assert transfer.payload == pack(row, layer.widths.out_bits), f"vector {n}"
    if kind == "full":
        assert got[0].cycle - sent[0] == steps + engine_pipeline(
            layer.simd, 1, requant_share(layer.pe, layer.sf))
        assert np.diff([t.cycle for t in got]).tolist() == [engine_interval(steps)] * (len(got) - 1)


@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("net", NETS)
def test_accelerator_matches_int8_golden_and_cycle_model(bundles, net: str, kind: str):
    bundle = bundles[net]
    io = bundle.io
    weights = WEIGHTS[kind](bundle)
    images = randnet.random_images(6, bundle.n_in, seed=7)
    ref = int8_golden(bundle, weights, images)
    if kind == "small":      # the requantization is exercised, not only its clamp
        hidden = np.concatenate([y.ravel() for y in ref.layers[:-1]])
        assert ((hidden > 0) & (hidden < (1 << NETS[net][1]) - 1)).any()
    dut = Int8Accelerator(bundle, weights)
    beats = [pack(img[k * io["in_lanes"]:(k + 1) * io["in_lanes"]], io["pixel_bits"])
             | (k == io["in_beats"] - 1) << (io["in_lanes"] * io["pixel_bits"])
             for img in images for k in range(io["in_beats"])]
    valid, ready = random_pattern(0.7, seed=3), random_pattern(0.5, seed=4)
    sent, got = [], []

    async def producer(ctx):
        port = Port(dut.s_axis_tvalid, dut.s_axis_tready, Cat(dut.s_axis_tdata, dut.s_axis_tlast))
        sent.extend(await stream_put(ctx, port, beats, valid=valid))

    async def consumer(ctx):
        port = Port(dut.m_axis_tvalid, dut.m_axis_tready, dut.m_axis_tdata)
        got.extend(await stream_get(ctx, port, len(images), ready=ready))

    model = cycle_model(bundle)
    simulate(dut, producer, consumer, cycles=20 * len(images) * (model.latency + 10))
    for n, t in enumerate(got):
        scores = unpack(t.payload >> io["class_bits"], io["score_bits"], io["num_classes"],
                        signed=True)
        assert (t.payload & ((1 << io["class_bits"]) - 1), scores) == (
            ref.classes[n], ref.scores[n].tolist()), f"image {n}"
    measured = ([c - sent[0] for c in sent[::io["in_beats"]]], [t.cycle - sent[0] for t in got])
    assert measured == model.stream(len(images), in_valid=valid, out_ready=ready)


def test_int8_golden_is_exact_integer_arithmetic(bundles):
    """Against a plain Python reference: sums of products, then the bundle's requantization."""
    bundle = bundles["B"]
    weights = int8_weights(bundle, seed=9)
    images = randnet.random_images(3, bundle.n_in, seed=9)
    ref = int8_golden(bundle, weights, images)
    x = [[int(v) for v in img] for img in images]
    for layer, w, acc in zip(bundle.layers, weights, ref.accs):
        want = [[sum(int(w[j, i]) * row[i] for i in range(layer.in_features))
                 for j in range(layer.out_features)] for row in x]
        assert acc.tolist() == want
        x = golden.requantize(np.array(want, dtype=np.int64), layer.mul, layer.shift,
                              layer.bias, layer.widths.out_lo, layer.widths.out_hi).tolist()
    assert ref.scores.tolist() == x
    assert ref.classes.tolist() == [row.index(max(row)) for row in x]


def ports(text: str) -> list[str]:
    """The port declarations of the ``bchw_top`` module."""
    top = text[text.index("module bchw_top("):]
    top = top[:top.index("endmodule")]
    return sorted(line.strip() for line in top.splitlines()
                  if line.lstrip().startswith(("input ", "output ")))


def test_verilog_is_self_contained_with_the_binary_ports(bundles):
    bundle = bundles["A"]
    text = generate_int8_verilog(bundle)
    assert ports(text) == ports(generate_verilog(bundle))
    assert "bchw_rom" not in text and "$readmemh" not in text      # every ROM inline
    assert text == generate_int8_verilog(bundle)
    assert text != generate_int8_verilog(bundle, seed=1)           # only the ROM contents differ
