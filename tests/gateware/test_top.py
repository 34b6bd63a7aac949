"""Accelerator in Amaranth's simulator: every image's class and scores equal
:func:`bchw.golden.infer`, and every first-beat and output cycle equals
:meth:`bchw.perf.CycleModel.stream` given the same input gaps and output back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Cat, ClockDomain, Module

from bchw import golden, randnet
from bchw.export import Bundle, HardwareConfig, export_state
from bchw.gateware.simtools import (
    Port,
    always,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
    unpack,
)
from bchw.gateware.top import Accelerator
from bchw.perf import cycle_model

# sizes, act_bits, PE, SIMD, in_lanes, (mul_bits, score_bits): 1 to 3 layers, prime widths,
# PE, SIMD and lanes that don't divide the sizes
NETS = {
    "3layer-a3": ([20, 13, 7, 5], 3, [4, 3, 5], [6, 4, 7], 6, (18, 16)),
    "2layer-a8": ([11, 7, 3], 8, [3, 2], [4, 5], 3, (18, 16)),
    "2layer-a1": ([17, 11, 2], 1, [3, 2], [5, 3], 4, (18, 16)),
    "1layer-s12": ([29, 10], 6, [3], [7], 8, (16, 12)),
}
N_IMAGES = 8


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Bundle]:
    out = {}
    for seed, (name, (sizes, act_bits, pe, simd, lanes, (mul_bits, score_bits))) in enumerate(
            NETS.items()):
        state = randnet.random_state(sizes, act_bits=act_bits, seed=seed)
        hw = HardwareConfig(pe=pe, simd=simd, in_lanes=lanes, mul_bits=mul_bits,
                            score_bits=score_bits)
        out[name] = export_state(state, tmp_path_factory.mktemp(name) / "bundle", hw,
                                 formats=("hex",))
    return out


def in_port(dut: Accelerator) -> Port:
    return Port(dut.s_axis_tvalid, dut.s_axis_tready, Cat(dut.s_axis_tdata, dut.s_axis_tlast))


def out_port(dut: Accelerator) -> Port:
    return Port(dut.m_axis_tvalid, dut.m_axis_tready, Cat(dut.m_axis_tdata, dut.m_axis_tlast))


def beats_of(bundle: Bundle, images: np.ndarray) -> list[int]:
    """``{tlast, tdata}`` of every beat, the pixels in the order the hardware takes them (a
    convolutional network's in HWC order, a pixel a beat); the unused lanes of a last beat
    are zero."""
    io = bundle.io
    lanes, beats = io["in_lanes"], io["in_beats"]
    words = []
    for img in golden.input_pixels(bundle, images):
        for k in range(beats):
            last = k == beats - 1
            words.append(pack(img[k * lanes:(k + 1) * lanes], io["pixel_bits"])
                         | last << (lanes * io["pixel_bits"]))
    return words


def check_outputs(bundle: Bundle, images: np.ndarray, payloads: list[int]) -> None:
    """Class in the low ``class_bits``, then the scores in two's complement, ``tlast`` high."""
    io = bundle.io
    ref = golden.infer(bundle, images)
    assert len(payloads) == len(images)
    for n, word in enumerate(payloads):
        cls = word & ((1 << io["class_bits"]) - 1)
        scores = unpack(word >> io["class_bits"], io["score_bits"], io["num_classes"],
                        signed=True)
        assert (cls, scores) == (ref.classes[n], ref.scores[n].tolist()), f"image {n}"
        assert word >> io["out_bits"] == 1, f"image {n}: tlast low"


def expected_taps(bundle: Bundle, images: np.ndarray) -> list[list[int]]:
    """Per layer, the values its debug tap hands on: a convolution's output pixels (after
    pooling), C values each, in raster order; a fully connected layer's vectors."""
    gold = golden.infer(bundle, images)
    taps = []
    for layer, out in zip(bundle.layers, gold.layers):
        rows = out.reshape(-1, layer.out_features)
        taps.append([pack(row, layer.widths.out_bits) for row in rows])
    return taps


def run_stream(bundle: Bundle, images: np.ndarray, valid=always, ready=always,
               tree_levels: int = 1, *, taps: bool = False) -> tuple[list[int], list[int]]:
    """Stream ``images`` through the accelerator; check the outputs bit-exact and, with
    ``taps``, every layer's debug tap against :func:`expected_taps`.  Returns each image's
    first-beat and output-accept cycles, counted from the first accepted beat."""
    dut = Accelerator(bundle, "inline", debug=taps, tree_levels=tree_levels)
    beats = bundle.io["in_beats"]
    sent, got, tapped = [], [], [[] for _ in bundle.layers]

    async def producer(ctx):
        sent.extend(await stream_put(ctx, in_port(dut), beats_of(bundle, images), valid=valid))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, out_port(dut), len(images), ready=ready))

    async def monitor(ctx):
        signals = [getattr(dut, f"dbg_l{la.index}_{name}")
                   for la in bundle.layers for name in ("valid", "data")]
        while len(got) < len(images):
            _, _, *values = await ctx.tick().sample(*signals)
            for k in range(len(tapped)):
                if values[2 * k]:
                    tapped[k].append(values[2 * k + 1])

    model = cycle_model(bundle, tree_levels)
    simulate(dut, producer, consumer, *([monitor] if taps else []),
             cycles=20 * len(images) * (model.latency + 10))
    check_outputs(bundle, images, [t.payload for t in got])
    if taps:
        for layer, have, want in zip(bundle.layers, tapped, expected_taps(bundle, images)):
            assert have == want, f"layer {layer.index}: tap differs from the golden model"
    origin = sent[0]
    return [c - origin for c in sent[::beats]], [t.cycle - origin for t in got]


@pytest.mark.parametrize("net", NETS)
def test_back_to_back(bundles, net: str):
    bundle = bundles[net]
    images = randnet.random_images(N_IMAGES, bundle.n_in, seed=1)
    measured = run_stream(bundle, images)
    model = cycle_model(bundle)
    assert measured == model.stream(N_IMAGES)
    assert measured[1][0] == model.latency
    assert measured[1][-1] - measured[1][-2] == model.interval


@pytest.mark.parametrize("tree_levels", [2, 3])
def test_adder_levels_per_stage_change_only_the_latency(bundles, tree_levels: int):
    bundle = bundles["3layer-a3"]           # SIMD 6, 4, 7: three adder levels or two
    images = randnet.random_images(N_IMAGES, bundle.n_in, seed=3)
    valid, ready = random_pattern(0.6, seed=15), random_pattern(0.4, seed=16)
    model = cycle_model(bundle, tree_levels)
    assert model.latency < cycle_model(bundle).latency
    assert run_stream(bundle, images, tree_levels=tree_levels) == model.stream(N_IMAGES)
    assert (run_stream(bundle, images, valid, ready, tree_levels)
            == model.stream(N_IMAGES, in_valid=valid, out_ready=ready))


def alternate(cycle: int) -> bool:
    return cycle % 2 == 0


PATTERNS = {
    "half-half": (lambda: random_pattern(0.5, seed=11), lambda: random_pattern(0.5, seed=12)),
    "alternate": (lambda: alternate, lambda: alternate),
    "gaps": (lambda: random_pattern(0.3, seed=13), lambda: always),
    "backpressure": (lambda: always, lambda: random_pattern(0.15, seed=14)),
}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("net", NETS)
def test_gaps_and_back_pressure(bundles, net: str, pattern: str):
    check_under_pattern(bundles[net], PATTERNS[pattern])


def check_under_pattern(bundle: Bundle, makers, n_images: int = N_IMAGES,
                        taps: bool = False) -> None:
    """:func:`run_stream` of ``n_images`` random images under the (valid, ready) patterns
    ``makers`` make, every cycle as the cycle model's."""
    images = randnet.random_images(n_images, bundle.n_in, seed=2)
    valid, ready = (make() for make in makers)
    measured = run_stream(bundle, images, valid, ready, taps=taps)
    assert measured == cycle_model(bundle).stream(n_images, in_valid=valid, out_ready=ready)


@pytest.mark.parametrize("net", NETS)
def test_reset_mid_image(bundles, net: str):
    """Reset while an output waits, the first engine works on an image and the next one is
    half in: then fresh images come out exact and on time, and nothing from before the reset."""
    bundle = bundles[net]
    beats = bundle.io["in_beats"]
    old = randnet.random_images(4, bundle.n_in, seed=5)
    images = randnet.random_images(N_IMAGES, bundle.n_in, seed=6)
    model = cycle_model(bundle)
    dut = Accelerator(bundle, "inline")
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.dut = dut
    restart = []              # the cycle from which the source may offer fresh beats
    sent, got = [], []

    async def producer(ctx):
        cycle = (await stream_put(ctx, in_port(dut), beats_of(bundle, old[:2])))[-1] + 1
        for _ in range(model.latency):          # the first output appears and waits
            await ctx.tick()
        cycle += model.latency
        more = beats_of(bundle, old[2:])[:beats + max(1, beats // 2)]
        cycle = (await stream_put(ctx, in_port(dut), more, cycle=cycle))[-1] + 1
        assert ctx.get(dut.m_axis_tvalid), "the reset should meet a waiting output"
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        restart.append(cycle + 1)
        sent.extend(await stream_put(ctx, in_port(dut), beats_of(bundle, images),
                                     cycle=restart[0]))

    async def consumer(ctx):
        cycle = 0
        while not restart:
            await ctx.tick()
            cycle += 1
        got.extend(await stream_get(ctx, out_port(dut), N_IMAGES, cycle=cycle))
        for _ in range(model.latency + model.interval):      # and nothing more comes out
            ctx.set(dut.m_axis_tready, 1)
            _, _, extra = await ctx.tick().sample(dut.m_axis_tvalid)
            assert not extra, "an output beyond the fresh images"

    simulate(m, producer, consumer, cycles=40 * N_IMAGES * (model.latency + 10))
    check_outputs(bundle, images, [t.payload for t in got])
    origin = sent[0]
    assert origin == restart[0]
    measured = ([c - origin for c in sent[::beats]], [t.cycle - origin for t in got])
    assert measured == model.stream(N_IMAGES)
