"""Random networks through the whole hardware path, and the accelerator under abuse.

Each network is exported with random ±1 weights and batch-norm statistics
(negative scales included), generated, and co-simulated on Verilator against
the golden model (every output bit) and the cycle model (every output cycle,
back to back and under random gaps and back-pressure). `bench/random_networks.py`
sweeps many more.
"""

import numpy as np
import pytest

from bchw import golden, perf, randnet
from sim.conftest import check_cosim as check
from bchw.cosim import cosimulate
from bchw.export import HardwareConfig, export_state, write_bundle
from bchw.gateware.top import write_verilog

#: Random networks in the suite (each a Verilator build, about 25 s).
NETWORKS = 20


@pytest.mark.parametrize("seed", range(NETWORKS))
def test_random_network(tmp_path, build_dir, seed):
    arch = randnet.random_architecture(seed)
    state = randnet.random_state(arch.sizes, act_bits=arch.act_bits, seed=seed)
    bundle = export_state(state, tmp_path / "bundle",
                          HardwareConfig(pe=arch.pe, simd=arch.simd, in_lanes=arch.in_lanes))
    rtl = write_verilog(bundle, tmp_path / "rtl")
    images = randnet.random_images(12, arch.sizes[0], seed=seed)
    check(cosimulate(bundle, rtl, images, None, "verilator", seed=seed, build_dir=build_dir))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_a_weight_rom_read_in_rows(tmp_path, build_dir, simulator):
    """Engine 0's weight ROM is the 100,000/s folding's engines 1 and 2's, 1,408 × 48: read in
    three 512-word rows, its words two cycles after their address (bchw.perf.rom_rows);
    the engine's cycles are unchanged."""
    state = randnet.random_state([256, 256, 10], act_bits=8, seed=21)
    bundle = export_state(state, tmp_path / "bundle",
                          HardwareConfig(pe=[4, 1], simd=[12, 4], in_lanes=8))
    assert perf.rom_rows(bundle.layers[0].pe * bundle.layers[0].simd,
                         bundle.layers[0].nf * bundle.layers[0].sf) == 3
    rtl = write_verilog(bundle, tmp_path / "rtl")
    assert "ROWS" in (rtl / "bchw_top.v").read_text()
    images = randnet.random_images(3, 256, seed=21)
    check(cosimulate(bundle, rtl, images, None, simulator, seed=21, build_dir=build_dir))


@pytest.fixture(scope="module")
def abused(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("abuse")
    state = randnet.random_state([48, 24, 10], act_bits=6, seed=11)
    bundle = export_state(state, tmp / "bundle", HardwareConfig(pe=[4, 5], simd=[6, 8],
                                                                  in_lanes=6))
    return bundle, write_verilog(bundle, tmp / "rtl")


@pytest.mark.parametrize("p_gap, p_bp", [(0.5, 0.5), (0.1, 0.8), (0.8, 0.1), (0.0, 0.5)])
def test_streams_under_gaps_and_back_pressure(abused, build_dir, p_gap, p_bp):
    """Over 10,000 cycles at each rate (1 in 2 included): nothing lost, every cycle modelled."""
    bundle, rtl = abused
    images = randnet.random_images(220, 48, seed=5)
    r = cosimulate(bundle, rtl, images, None, "verilator", seed=17, build_dir=build_dir,
                   p_gap=p_gap, p_bp=p_bp)
    check(r)
    assert r["stress_cycles"] >= 10_000


def _bound_bundle(path, sizes, score_bits):
    """Hidden weights all +1; the last layer's neurons alternately all +1 and all −1;
    M = 1, S = B = 0: the last layer's scores are its accumulators, the hidden layers saturate."""
    weights, params = [], []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = np.ones((n_out, n_in), dtype=np.int8)
        if i == len(sizes) - 2:
            w[1::2] = -1
        weights.append(w)
        params.append((np.ones(n_out, np.int64), np.zeros(n_out, np.int64),
                       np.zeros(n_out, np.int64)))
    arith = {"act_bits": 8, "mul_bits": 4, "score_bits": score_bits, "score_frac_bits": 0,
             "pixel_bits": 8}
    hw = HardwareConfig(pe=[min(3, n) for n in sizes[1:]], simd=[7] * len(weights),
                        in_lanes=10)
    return write_bundle(path, weights, params, arith, hw, {"spec": "bounds"})


@pytest.mark.parametrize("sizes", [[300, 2], [300, 7, 3]])
def test_accumulators_reach_their_bounds_without_wrapping(tmp_path, build_dir, sizes):
    bundle = _bound_bundle(tmp_path / "bundle", sizes, score_bits=20)
    last = bundle.layers[-1]
    bound = last.in_features * 255
    assert last.widths.acc_max == bound
    assert last.widths.acc_bits == golden.signed_bits(-bound, bound)   # recorded, and tight
    images = np.full((3, sizes[0]), 255, dtype=np.uint8)
    gold = golden.infer(bundle, images)
    assert (gold.scores[:, 0] == bound).all() and (gold.scores[:, 1] == -bound).all()
    assert (np.abs(gold.accs[0]) == 300 * 255).all()
    r = cosimulate(bundle, write_verilog(bundle, tmp_path / "rtl"), images, None, "verilator",
                   build_dir=build_dir)
    check(r)
