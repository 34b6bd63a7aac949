"""Folding search: balanced engines, targets met, budgets kept, bad requests refused."""

import pytest

from bchw import perf
from bchw.errors import BchwError
from bchw.folding import fold_for_budget, search_folding

MLP256 = [784, 256, 256, 256, 10]
MLP1024 = [784, 1024, 1024, 1024, 10]


def _interval(sizes, folding):
    return max([-(-sizes[0] // folding.in_lanes)] + [
        -(-o // p) * -(-i // s)
        for i, o, p, s in zip(sizes[:-1], sizes[1:], folding.pe, folding.simd)])


@pytest.mark.parametrize("sizes", [MLP256, MLP1024], ids=["mlp256", "mlp1024"])
@pytest.mark.parametrize("fps", [50_000, 200_000, 500_000, 1_000_000])
def test_throughput_target_is_met_with_the_adders_busy(sizes, fps):
    f = search_folding(sizes, 8, target_fps=fps, clock_mhz=150)
    assert f.interval == _interval(sizes, f)          # the report is the cycle model's
    assert f.inferences_per_s >= fps
    assert f.macs == sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    assert f.lanes == sum(p * s for p, s in zip(f.pe, f.simd))
    assert f.utilisation >= 0.90, f


def test_a_small_last_layer_may_be_faster_to_take_the_groups_of_the_one_before():
    """At 500,000/s the last layer's busy foldings (1×10 at 288 cycles) can't take the
    16-PE layer's groups into an input memory; 1×16 can, at 7 idle lanes: fewer LUTs,
    the lanes still busy."""
    from bchw.folding import BUSY, _fold

    f = search_folding(MLP256, 8, target_fps=500_000, clock_mhz=150)
    busy = _fold(MLP256, 8, f.interval, 18, 16, 150, BUSY)
    assert busy.simd[-1] % busy.pe[-2] != 0 and busy.pe[:-1] == f.pe[:-1]
    assert (f.pe[-1], f.simd[-1]) == (1, 16) and f.simd[-1] % f.pe[-2] == 0
    assert f.luts < busy.luts - 1500
    assert f.utilisation >= BUSY and f.interval == busy.interval


def test_lut_budget_is_kept_and_more_luts_buy_speed():
    small = search_folding(MLP256, 8, max_luts=20_000)
    large = search_folding(MLP256, 8, max_luts=60_000)
    assert small.luts <= 20_000 and large.luts <= 60_000
    assert large.interval < small.interval
    both = search_folding(MLP256, 8, target_fps=100_000, max_luts=60_000)
    assert both.inferences_per_s >= 100_000 and both.luts <= 60_000


def test_the_estimate_is_the_resource_models(tmp_path):
    """The folding's LUT estimate is the resource model of a bundle exported with it."""
    from bchw import randnet
    from bchw.export import HardwareConfig, export_state

    f = fold_for_budget(MLP256, 8, 400, mul_bits=18, score_bits=16, clock_mhz=100)
    assert f.interval <= 400
    bundle = export_state(randnet.random_state(MLP256, act_bits=8, seed=0), tmp_path / "b",
                          HardwareConfig(pe=f.pe, simd=f.simd, in_lanes=f.in_lanes,
                                         mul_bits=18, score_bits=16), formats=("hex",))
    assert f.luts == perf.resource_model(bundle).luts


@pytest.mark.parametrize("kwargs, field", [
    ({}, "--target-fps"),
    ({"target_fps": -1}, "--target-fps"),
    ({"target_fps": 1e12}, "--target-fps"),
    ({"max_luts": 0}, "--max-luts"),
    ({"max_luts": 10}, "--max-luts"),
    ({"target_fps": 1e6, "clock_mhz": 0}, "--clock-mhz"),
])
def test_impossible_requests_name_the_option(kwargs, field):
    with pytest.raises(BchwError) as e:
        search_folding(MLP256, 8, **kwargs)
    assert e.value.field == field


# --------------------------------------------------------------------- convolutional networks

CNN = "32C3-MP2-64C3-MP2-512FC-10"   # the reference CNN, on 1×28×28 images
SMALL_CNN = "8C3-MP2-16C3-MP2-10"    # on 1×8×8 (scikit-learn's digits)


def _bundle(spec, in_shape, folding, path):
    from bchw import randnet
    from bchw.export import HardwareConfig, export_state

    state = randnet.random_cnn_state(spec, in_shape, seed=1)
    return export_state(state, path, HardwareConfig(pe=folding.pe, simd=folding.simd),
                        formats=("hex",))


@pytest.mark.parametrize("spec, in_shape, fps", [(CNN, (1, 28, 28), 20_000),
                                                 (CNN, (1, 28, 28), 45_000),
                                                 (SMALL_CNN, (1, 8, 8), 500_000)])
def test_conv_target_is_met_by_the_cycle_model_of_the_exported_bundle(tmp_path, spec,
                                                                      in_shape, fps):
    from bchw.folding import search_net_folding
    from bchw.nn import parse_net_spec

    f = search_net_folding(parse_net_spec(spec, in_shape), 8, target_fps=fps, clock_mhz=150)
    assert f.inferences_per_s >= fps
    bundle = _bundle(spec, in_shape, f, tmp_path / "b")
    # the interval and the LUTs reported are the models' of the bundle that folding makes
    assert perf.cycle_model(bundle).interval == f.interval
    assert perf.resource_model(bundle).luts == f.luts
    assert f.in_lanes == in_shape[0] == bundle.io["in_lanes"]
    assert f.macs == sum(la.in_features * la.out_features
                         * (la.in_shape[1] * la.in_shape[2] if la.kind == "conv" else 1)
                         for la in bundle.layers)
    # the sliding windows hand on a window every two cycles at most, so conv engines'
    # lanes idle part of the time; the search still keeps most of them busy
    assert f.utilisation >= 0.6, f


def test_conv_lut_budget_is_kept_and_more_luts_buy_speed():
    from bchw.folding import search_net_folding
    from bchw.nn import parse_net_spec

    layers = parse_net_spec(CNN, (1, 28, 28))
    small = search_net_folding(layers, 8, max_luts=80_000)
    large = search_net_folding(layers, 8, max_luts=120_000)
    assert small.luts <= 80_000 and large.luts <= 120_000
    assert large.interval < small.interval


@pytest.mark.parametrize("kwargs, field", [({"target_fps": 1e6}, "--target-fps"),
                                           ({"target_fps": 1e12}, "--target-fps"),
                                           ({"max_luts": 1000}, "--max-luts")])
def test_conv_impossible_requests_name_the_option(kwargs, field):
    from bchw.folding import search_net_folding
    from bchw.nn import parse_net_spec

    with pytest.raises(BchwError) as e:
        search_net_folding(parse_net_spec(CNN, (1, 28, 28)), 8, **kwargs)
    assert e.value.field == field
