"""The ``shared`` datapath (``2·Σ_{w=+1} x − Σ x``, one ``Σ x`` tree per engine) in Amaranth's
simulator: the same bits at the same cycles as the ``negate`` one, that is, as
:func:`bchw.golden.requantize` of :func:`bchw.golden.accumulate` and
:meth:`bchw.perf.CycleModel.stream`."""

from __future__ import annotations

import gc
import numpy as np
import pytest
from amaranth.hdl import Cat

from bchw import golden, randnet
from bchw.export import LayerBundle
from bchw.gateware.adder_tree import AdderTree
from bchw.gateware.engine import LayerEngine
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
from bchw.gateware.top import DATAPATHS, Accelerator, generate_verilog
from bchw.perf import cycle_model, engine_interval, engine_pipeline, requant_share, tree_depth

from tests.gateware.nets import ENGINE_LAYERS as LAYERS
from tests.gateware.nets import ENGINE_NETS as NETS
from tests.gateware.nets import engine_bundles


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return engine_bundles(tmp_path_factory, seed=20, in_lanes=3)


@pytest.mark.parametrize("simd, in_bits", [(1, 1), (1, 8), (3, 1), (5, 8), (16, 4)])
def test_mask_tree_adds_the_plus_one_lanes(simd: int, in_bits: int):
    """The per-PE tree of the shared datapath: ``Σ_{w=+1} x``, unsigned, ``tree_depth`` later."""
    dut = AdderTree(simd, in_bits, "mask")
    assert len(dut.sum) == in_bits + (simd - 1).bit_length() and not dut.sum.shape().signed
    rng = np.random.default_rng(simd * 10 + in_bits)
    x = rng.integers(0, 1 << in_bits, size=(40, simd))
    x[0] = (1 << in_bits) - 1
    w = rng.integers(0, 2, size=(40, simd))
    w[0] = 1
    expected = (x * w).sum(axis=1).tolist()
    inputs = [(pack(xi, in_bits), pack(wi, 1)) for xi, wi in zip(x, w)]

    async def testbench(ctx):
        await check_pipeline(ctx, dut.en, [dut.x, dut.w], inputs, dut.sum, expected,
                             tree_depth(simd), enable=random_pattern(0.7, seed=simd))

    simulate(dut, testbench, cycles=3 * len(x) + tree_depth(simd) + 10)


def layer_inputs(layer: LayerBundle, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << layer.in_bits, size=(n, layer.in_features))
    x[0], x[1] = (1 << layer.in_bits) - 1, 0
    return x


def run_engine(layer: LayerBundle, x: np.ndarray, ready=always):
    """Stream ``x`` through the layer's shared-datapath engine; check every output against
    golden.  Returns the input-accept cycles and the output transfers."""
    dut = LayerEngine.from_layer(layer, "inline", datapath="shared")
    acc = golden.accumulate(x, layer.weights)
    want = golden.requantize(acc, layer.mul, layer.shift, layer.bias, layer.widths.out_lo,
                             layer.widths.out_hi)
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, dut.s, [pack(v, layer.in_bits) for v in x]))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, len(x), ready=ready))

    simulate(dut, producer, consumer, cycles=len(x) * (layer.nf * layer.sf + 30) * 5 + 100)
    for n, (transfer, row) in enumerate(zip(got, want)):
        assert transfer.payload == pack(row, layer.widths.out_bits), f"layer {layer.index}, {n}"
    return sent, got


@pytest.mark.parametrize("net, index", LAYERS)
def test_engine_exact_and_on_time(bundles, net: str, index: int):
    layer = bundles[net].layers[index]
    steps = layer.nf * layer.sf
    sent, got = run_engine(layer, layer_inputs(layer, 5, seed=index))
    if steps > 1:
        assert np.diff(sent).tolist() == [steps] * (len(sent) - 1)
    else:  # one-step engines take vectors back to back until the first full output register
        assert np.diff(sent).tolist()[0] == 1 and set(np.diff(sent).tolist()) <= {1, 2}
    assert got[0].cycle - sent[0] == steps + engine_pipeline(
        layer.simd, 1, requant_share(layer.pe, layer.sf))
    assert np.diff([t.cycle for t in got]).tolist() == [engine_interval(steps)] * (len(got) - 1)


@pytest.mark.parametrize("net, index", LAYERS)
def test_engine_exact_under_back_pressure(bundles, net: str, index: int):
    """The stall freezes the shared tree with the PE trees."""
    layer = bundles[net].layers[index]
    run_engine(layer, layer_inputs(layer, 5, seed=50 + index),
               ready=random_pattern(0.2, seed=index))


@pytest.mark.parametrize("net", NETS)
def test_accelerator_matches_golden_and_cycle_model(bundles, net: str):
    bundle = bundles[net]
    io = bundle.io
    images = randnet.random_images(6, bundle.n_in, seed=3)
    dut = Accelerator(bundle, "inline", datapath="shared")
    beats = [pack(img[k * io["in_lanes"]:(k + 1) * io["in_lanes"]], io["pixel_bits"])
             | (k == io["in_beats"] - 1) << (io["in_lanes"] * io["pixel_bits"])
             for img in images for k in range(io["in_beats"])]
    valid, ready = random_pattern(0.6, seed=1), random_pattern(0.4, seed=2)
    sent, got = [], []

    async def producer(ctx):
        port = Port(dut.s_axis_tvalid, dut.s_axis_tready, Cat(dut.s_axis_tdata, dut.s_axis_tlast))
        sent.extend(await stream_put(ctx, port, beats, valid=valid))

    async def consumer(ctx):
        port = Port(dut.m_axis_tvalid, dut.m_axis_tready, dut.m_axis_tdata)
        got.extend(await stream_get(ctx, port, len(images), ready=ready))

    model = cycle_model(bundle)
    simulate(dut, producer, consumer, cycles=20 * len(images) * (model.latency + 10))
    ref = golden.infer(bundle, images)
    for n, t in enumerate(got):
        scores = unpack(t.payload >> io["class_bits"], io["score_bits"], io["num_classes"],
                        signed=True)
        assert (t.payload & ((1 << io["class_bits"]) - 1), scores) == (
            ref.classes[n], ref.scores[n].tolist()), f"image {n}"
    measured = ([c - sent[0] for c in sent[::io["in_beats"]]], [t.cycle - sent[0] for t in got])
    assert measured == model.stream(len(images), in_valid=valid, out_ready=ready)


def test_verilog_of_each_datapath(bundles):
    """The default is the negate datapath, to the byte; the shared one adds one tree per engine."""
    bundle = bundles["A"]
    assert DATAPATHS == ("negate", "shared")
    negate = generate_verilog(bundle)
    assert generate_verilog(bundle, datapath="negate") == negate
    shared = generate_verilog(bundle, datapath="shared")
    assert shared != negate

    def trees(text: str) -> list[str]:
        modules = [line.split()[1] for line in text.splitlines() if line.startswith("module ")]
        return [name.rsplit(".", 1)[1] for name in modules if ".tree" in name]

    pe_trees = sum(layer.pe for layer in bundle.layers)
    assert len(trees(negate)) == pe_trees
    assert len(trees(shared)) == pe_trees + len(bundle.layers)
    assert trees(shared).count("tree_sum") == len(bundle.layers)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_unknown_datapath_is_refused(bundles):
    with pytest.raises(ValueError, match="datapath must be one of"):
        generate_verilog(bundles["A"], datapath="negated")
    with pytest.raises(ValueError, match="datapath must be one of"):
        LayerEngine.from_layer(bundles["A"].layers[0], "inline", datapath="mask")
    gc.collect()        # the refused components warn that they went unused: here, not later
