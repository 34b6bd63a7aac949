"""Convolutional networks through the whole hardware path, in cocotb.

Random convolutional networks (every third batch-norm scale negative, so some
pooled channels take the minimum of their codes) are exported, generated as
Verilog (sliding windows, engines, pool units, flattener, fully connected
engines) and co-simulated against the golden model (every output bit) and the
cycle model (every output cycle, back to back and under seeded random input
gaps and output back-pressure, with a reset in mid-stream).
"""

from pathlib import Path

import numpy as np
import pytest

from bchw import golden, randnet
from bchw.cosim import cosimulate
from bchw.export import HardwareConfig, export_state, load_bundle
from bchw.gateware.top import write_verilog
from sim.conftest import check_cosim as check

MODEL = Path(__file__).resolve().parent.parent / "models" / "fmnist-cnn"

# spec, input shape (C, H, W), A, PE, SIMD, simulator
NETS = {
    "pool-first": ("4C3-MP2-6C3-5FC-3", (2, 6, 6), 8, [3, 5, 3, 2], [5, 7, 11, 3],
                   "verilator"),
    "two-pools": ("4C3-MP2-5C3-MP2-6FC-4", (1, 8, 8), 4, [2, 5, 3, 4], [3, 9, 4, 6],
                  "verilator"),
    "kernels-5-1-icarus": ("3C5-MP2-4C1-4", (2, 4, 4), 4, [2, 3, 3], [11, 1, 5], "icarus"),
}


@pytest.mark.parametrize("name", NETS)
def test_conv_network(tmp_path, build_dir, name):
    spec, shape, act_bits, pe, simd, simulator = NETS[name]
    seed = sorted(NETS).index(name)
    state = randnet.random_cnn_state(spec, shape, act_bits=act_bits, seed=seed)
    bundle = export_state(state, tmp_path / "bundle", HardwareConfig(pe=pe, simd=simd),
                          formats=("hex",))
    rtl = write_verilog(bundle, tmp_path / "rtl")
    images = randnet.random_images(8, bundle.n_in, seed=seed)
    check(cosimulate(bundle, rtl, images, None, simulator, seed=seed, build_dir=build_dir))


def test_reference_cnn_on_100_test_images(tmp_path, build_dir):
    """The trained reference CNN (models/fmnist-cnn) on the first 100 Fashion-MNIST test
    images of its sample: every score bit and every output cycle as modelled."""
    bundle = load_bundle(MODEL / "bundle")
    with np.load(MODEL / "sample.npz") as z:
        images, labels = z["images"][:100], z["labels"][:100]
    assert len(images) == 100
    rtl = write_verilog(bundle, tmp_path / "rtl")
    r = cosimulate(bundle, rtl, images, labels, "verilator", build_dir=build_dir)
    check(r)
    assert r["accuracy"] == float(np.mean(golden.infer(bundle, images).classes == labels))
