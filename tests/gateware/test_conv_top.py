"""Accelerator of convolutional networks in Amaranth's simulator: every image's class and scores
equal :func:`bchw.golden.infer`, every layer's output pixels (the debug taps) its HWC outputs,
and every first-beat and output cycle equals :meth:`bchw.perf.CycleModel.stream` given the same
input gaps and output back-pressure; the latency and interval are the model's."""

from __future__ import annotations

import numpy as np
import pytest

from bchw import golden, randnet
from bchw.export import Bundle, HardwareConfig, export_state
from bchw.gateware.simtools import always, check_reset_mid_stream, random_pattern
from bchw.gateware.top import Accelerator
from bchw.perf import cycle_model
from tests.gateware.test_top import PATTERNS as TOP_PATTERNS
from tests.gateware.test_top import (beats_of, check_outputs, check_under_pattern, in_port,
                                     out_port, run_stream)

# spec, input [C, H, W], act_bits, PE, SIMD: pooling after the first convolution or the
# second, kernels 5 and 1, odd PE and SIMD that mostly divide nothing
NETS = {
    "pool-first": ("4C3-MP2-6C3-5FC-3", (2, 6, 6), 8, [3, 5, 3, 2], [5, 7, 11, 3]),
    "pool-second-a3": ("3C3-4C3-MP2-3", (1, 4, 4), 3, [3, 3, 2], [5, 7, 9]),
    "kernels-5-1": ("3C5-MP2-4C1-4", (2, 4, 4), 4, [2, 3, 3], [11, 1, 5]),
}
N_IMAGES = 6


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Bundle]:
    out = {}
    for seed, (name, (spec, shape, act_bits, pe, simd)) in enumerate(NETS.items()):
        state = randnet.random_cnn_state(spec, shape, act_bits=act_bits, seed=seed)
        out[name] = export_state(state, tmp_path_factory.mktemp(name) / "bundle",
                                 HardwareConfig(pe=pe, simd=simd), formats=("hex",))
    return out


def test_the_nets_exercise_the_units(bundles):
    """Pooling with channels that take the minimum, codes that are not all 0 or all ones."""
    for bundle in bundles.values():
        assert bundle.has_conv and bundle.io["in_lanes"] == bundle.layers[0].in_shape[0]
        pooled = [la for la in bundle.layers if la.pool]
        assert pooled and all((la.mul < 0).any() and (la.mul > 0).any() for la in pooled)
        gold = golden.infer(bundle, randnet.random_images(N_IMAGES, bundle.n_in, seed=1))
        for la, out in zip(bundle.layers[:-1], gold.layers):
            assert len(np.unique(out)) > 2, f"layer {la.index}"


@pytest.mark.parametrize("net", NETS)
def test_back_to_back(bundles, net: str):
    bundle = bundles[net]
    images = randnet.random_images(N_IMAGES, bundle.n_in, seed=1)
    measured = run_stream(bundle, images, taps=True)
    model = cycle_model(bundle)
    assert measured == model.stream(N_IMAGES)
    assert measured[1][0] == model.latency
    assert measured[1][-1] - measured[1][-2] == model.interval


# test_top's patterns less "alternate", and back-pressure with the sink ready 5 % of the time
PATTERNS = {name: TOP_PATTERNS[name] for name in ("half-half", "gaps")}
PATTERNS["backpressure"] = (lambda: always, lambda: random_pattern(0.05, seed=14))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("net", NETS)
def test_gaps_and_back_pressure(bundles, net: str, pattern: str):
    check_under_pattern(bundles[net], PATTERNS[pattern], N_IMAGES, taps=True)


@pytest.mark.parametrize("net", NETS)
def test_backed_up(bundles, net: str):
    """The sink away until more images have come in than the pipeline holds: every stage backs
    up (each pool refuses the pixel that completes a window, each sliding window stalls at an
    emit, the input stops), then drains under back-pressure."""
    bundle = bundles[net]
    n = 16
    images = randnet.random_images(n, bundle.n_in, seed=4)
    drain = random_pattern(0.5, seed=17)

    def ready(cycle: int) -> bool:
        return cycle >= 3000 and drain(cycle)

    first, out = run_stream(bundle, images, ready=ready, taps=True)
    assert (first, out) == cycle_model(bundle).stream(n, out_ready=ready)
    assert sum(c < 3000 for c in first) < n - 2, "the input should have stopped"


def test_adder_levels_per_stage_change_only_the_latency(bundles):
    bundle = bundles["pool-first"]
    images = randnet.random_images(N_IMAGES, bundle.n_in, seed=3)
    valid, ready = random_pattern(0.6, seed=15), random_pattern(0.4, seed=16)
    model = cycle_model(bundle, tree_levels=2)
    assert model.latency < cycle_model(bundle).latency
    assert (run_stream(bundle, images, valid, ready, tree_levels=2)
            == model.stream(N_IMAGES, in_valid=valid, out_ready=ready))


@pytest.mark.parametrize("net", NETS)
def test_reset_mid_image(bundles, net: str):
    """Reset while an output waits, the images behind it fill the engines, pools and
    flattener, and the input has stopped in mid-image (the line buffers half full): then fresh
    images come out exact and on time, and nothing from before the reset."""
    bundle = bundles[net]
    beats = bundle.io["in_beats"]
    old = beats_of(bundle, randnet.random_images(4, bundle.n_in, seed=5))[:3 * beats + beats // 2]
    images = randnet.random_images(N_IMAGES, bundle.n_in, seed=6)
    model = cycle_model(bundle)
    dut = Accelerator(bundle, "inline")
    # the first output is taken, the next ones wait; all old beats are in well before the reset
    stop = model.latency + 1
    reset = stop + 4 * model.interval + beats // 2
    sent, got = check_reset_mid_stream(dut, in_port(dut), out_port(dut), old,
                                       beats_of(bundle, images), N_IMAGES, stop=stop,
                                       reset=reset, quiet=model.latency + model.interval,
                                       cycles=reset + 40 * N_IMAGES * (model.latency + 10),
                                       all_old=True)
    check_outputs(bundle, images, [t.payload for t in got])
    origin = sent[0]
    assert origin == reset + 1
    measured = ([c - origin for c in sent[::beats]], [t.cycle - origin for t in got])
    assert measured == model.stream(N_IMAGES)
