"""bchw_top in Icarus Verilog and Verilator: every output bit and every output cycle.

Each configuration is its own generated Verilog; each run streams images
back to back (outputs and cycles against the golden and cycle models), then
with seeded random input gaps and output back-pressure, then with a reset
in mid-stream.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bchw import golden, randnet, romfmt
from bchw.cli import main
from bchw.cosim import cosimulate
from bchw.export import HardwareConfig, export_state, load_bundle, pack_weights
from bchw.gateware.top import write_verilog

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "fmnist-mlp256"
SIMULATORS = ["icarus", "verilator"]

# (sizes, act_bits, pe, simd, in_lanes): primes, foldings that don't divide, A from 1 to 8
CONFIGS = {
    "mlp3-a4": ([20, 13, 7, 5], 4, [4, 3, 5], [6, 4, 7], 6),
    "mlp2-a1": ([31, 17, 3], 1, [5, 3], [7, 17], 8),
    "mlp1-a8": ([23, 10], 8, [3], [5], 23),
    "mlp4-a6": ([41, 29, 19, 11, 7], 6, [7, 13, 2, 7], [8, 3, 19, 11], 5),
}


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_network(tmp_path, build_dir, name, simulator):
    sizes, act_bits, pe, simd, lanes = CONFIGS[name]
    state = randnet.random_state(sizes, act_bits=act_bits, seed=len(name) + sum(sizes))
    bundle = export_state(state, tmp_path / "bundle",
                          HardwareConfig(pe=pe, simd=simd, in_lanes=lanes))
    rtl = write_verilog(bundle, tmp_path / "rtl")
    images = randnet.random_images(24, sizes[0], seed=sum(sizes))
    r = cosimulate(bundle, rtl, images, None, simulator, seed=3, build_dir=build_dir)
    assert len(set(golden.infer(bundle, images).classes)) > 1, "a test that can tell classes apart"
    assert r["mismatches"] == 0, r["first_mismatch"]
    assert r["cycles_match"], r["first_cycle_mismatch"]
    assert r["stress_cycles_match"] is True, "every cycle under gaps and back-pressure too"
    assert r["latency_cycles_measured"] == r["latency_cycles_model"]
    assert r["interval_cycles_measured"] == r["interval_cycles_model"]
    assert r["reset_ok"] and not r["deadlock"]


@pytest.mark.parametrize("simulator, images", [("icarus", 6), ("verilator", 100)])
def test_reference_design(build_dir, capsys, simulator, images):
    """The committed rtl/ on the held-out sample, through the command line."""
    rc = main(["sim", str(MODEL / "bundle"), "--samples", str(MODEL / "sample.npz"),
               "--rtl", str(ROOT / "rtl"), "--simulator", simulator, "--images", str(images),
               "--build-dir", str(build_dir), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert result["images"] == images and result["simulator"] == simulator
    assert result["mismatches"] == 0
    assert result["latency_cycles_measured"] == result["latency_cycles_model"] == 1135
    assert result["interval_cycles_measured"] == result["interval_cycles_model"] == 448
    assert result["accuracy"] >= 0.8


def test_one_flipped_bit_is_caught(tmp_path, build_dir, capsys):
    """A hex image changed by one bit in a generated directory makes `bchw sim --rtl` fail."""
    bundle = load_bundle(MODEL / "bundle")
    with np.load(MODEL / "sample.npz") as z:
        images = z["images"][:10]
    rtl = tmp_path / "rtl"
    shutil.copytree(ROOT / "rtl", rtl)
    # flip the last layer's weight from a hidden neuron that is active on image 0
    last = bundle.layers[-1]
    hidden = golden.infer(bundle, images).layers[-2][0]
    weights = last.weights.copy()
    weights[0, int(np.argmax(hidden))] *= -1
    words = pack_weights(weights, last.pe, last.simd)
    old = romfmt.read_rom(rtl / last.weight_file, last.weight_width)
    assert sum(bin(a ^ b).count("1") for a, b in zip(words, old)) == 1
    romfmt.write_rom(rtl / last.weight_file, words, last.weight_width, "hex")

    rc = main(["sim", str(MODEL / "bundle"), "--samples", str(MODEL / "sample.npz"),
               "--rtl", str(rtl), "--simulator", "verilator", "--images", "10",
               "--build-dir", str(build_dir), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert result["mismatches"] > 0
    assert result["first_mismatch"]["image"] == 0
    # the debug build's per-layer taps name where it went wrong
    assert (result["first_mismatch"]["layer"], result["first_mismatch"]["neuron"]) == (3, 0)
