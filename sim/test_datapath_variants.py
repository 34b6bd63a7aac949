"""Datapath variants in Verilator: every output bit of their reference model at every cycle of
the cycle model, back to back, under gaps and back-pressure, and after a reset.

The ``shared`` datapath is checked against the golden model (the ``negate`` default is the
rest of sim/); the int8 multiplier baseline against :func:`bchw.gateware.baseline.int8_golden`,
with the binary design's cycle model, which it must meet too.
"""

from bchw import perf, randnet
from sim.conftest import check_cosim as check
from bchw.cosim import cosimulate, runner
from bchw.cosim.bench import stress_stimulus
from bchw.export import HardwareConfig, export_state
from bchw.gateware.baseline import generate_int8_verilog, int8_golden, int8_weights
from bchw.gateware.top import TOP_NAME, write_verilog

# PE and SIMD that don't divide the sizes, SIMD 1, PE 1 and a one-step (SF = 1) engine
SIZES, ACT_BITS, PE, SIMD, LANES = [23, 13, 7, 5], 5, [4, 1, 5], [6, 1, 7], 5


def bundle_of(path):
    state = randnet.random_state(SIZES, act_bits=ACT_BITS, seed=41)
    return export_state(state, path, HardwareConfig(pe=PE, simd=SIMD, in_lanes=LANES))


def test_shared_datapath_random_network(tmp_path, build_dir):
    bundle = bundle_of(tmp_path / "bundle")
    rtl = write_verilog(bundle, tmp_path / "rtl", datapath="shared")
    assert "tree_sum" in (rtl / f"{TOP_NAME}.v").read_text()
    images = randnet.random_images(16, SIZES[0], seed=41)
    r = cosimulate(bundle, rtl, images, None, "verilator", seed=5, build_dir=build_dir)
    assert len(set(r["golden_classes"])) > 1, "a test that can tell classes apart"
    check(r)


def test_int8_baseline_random_network(tmp_path, build_dir):
    bundle = bundle_of(tmp_path / "bundle")
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / f"{TOP_NAME}.v").write_text(generate_int8_verilog(bundle, seed=3))
    images = randnet.random_images(16, SIZES[0], seed=41)
    ref = int8_golden(bundle, int8_weights(bundle, seed=3), images)
    assert len(set(ref.classes)) > 1, "a test that can tell classes apart"
    model = perf.cycle_model(bundle)
    _, out_cycles = model.stream(len(images))
    gaps, draw = stress_stimulus(5, 0.3, 0.3, len(images) * bundle.io["in_beats"])
    _, stress_cycles = model.stream(len(images), in_gaps=gaps, out_draw=draw)
    timing = {"latency": model.latency, "interval": model.interval,
              "output_cycles": out_cycles, "stress_output_cycles": stress_cycles}
    r = runner.run(rtl, images, bundle.io, ref.classes, ref.scores, timing,
                   simulator="verilator", build_dir=build_dir, seed=5)
    check(r)
