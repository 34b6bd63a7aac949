"""The command line: one-line errors with exit status 2 for bad input, JSON for machines."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bchw import randnet
from bchw.cli import main
from bchw.export import HardwareConfig, export_state

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "fmnist-mlp256"


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(capsys, argv, *must_contain):
    rc, out, err = run(capsys, *argv)
    assert rc == 2, (out, err)
    assert err.startswith("bchw: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in must_contain:
        assert text in err, (text, err)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(randnet.random_state([12, 9, 4], seed=2), path)
    return path


@pytest.fixture
def bundle_dir(tmp_path):
    state = randnet.random_state([12, 9, 4], seed=2)
    return export_state(state, tmp_path / "bundle", HardwareConfig(pe=[3, 2], simd=[4, 3])).path


def test_export_works_and_writes_every_format(capsys, checkpoint, tmp_path):
    rc, out, _ = run(capsys, "export", checkpoint, "-o", tmp_path / "b", "--pe", "3,4",
                     "--simd", "5,9")
    assert rc == 0 and "2 layers" in out
    names = {p.name for p in (tmp_path / "b").iterdir()}
    for fmt in ("hex", "coe", "mif", "bin"):
        assert {f"layer0_weights.{fmt}", f"layer1_params.{fmt}"} <= names


def test_export_bad_input(capsys, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert_user_error(capsys, ["export", tmp_path / "nope.pt", "-o", out, "--pe", "1,1",
                               "--simd", "1,1"], "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02not a checkpoint at all")
    assert_user_error(capsys, ["export", corrupt, "-o", out, "--pe", "1,1", "--simd", "1,1"],
                      "corrupt.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:300])
    assert_user_error(capsys, ["export", truncated, "-o", out, "--pe", "1,1", "--simd", "1,1"],
                      "truncated.pt")
    assert_user_error(capsys, ["export", checkpoint, "-o", out, "--pe", "10,1", "--simd", "1,1"],
                      "layers[0].pe", "9")
    assert_user_error(capsys, ["export", checkpoint, "-o", out, "--pe", "1", "--simd", "1,1"],
                      "field 'pe'")
    assert_user_error(capsys, ["export", checkpoint, "-o", out, "--pe", "a,b", "--simd", "1,1"],
                      "--pe")
    assert_user_error(capsys, ["export", checkpoint, "-o", out], "--pe")
    cfg = tmp_path / "hw.json"
    cfg.write_text('{"layers": [{"pe": 1, "simd": 1}, {"pe": 1, "simd": -3}]}')
    assert_user_error(capsys, ["export", checkpoint, "-o", out, "--config", cfg],
                      "hw.json", "layers[1].simd")
    assert not out.exists(), "nothing half-written"


def test_export_refuses_float_baselines(capsys, tmp_path):
    state = randnet.random_state([12, 9, 4], seed=2)
    state["config"]["binarize"] = "float"
    path = tmp_path / "float.pt"
    torch.save(state, path)
    assert_user_error(capsys, ["export", path, "-o", tmp_path / "o", "--pe", "1,1",
                               "--simd", "1,1"], "config.binarize")


def test_verilog_bad_bundles(capsys, bundle_dir, tmp_path):
    out = tmp_path / "rtl"
    assert_user_error(capsys, ["verilog", tmp_path / "missing", "-o", out], "missing")
    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["layers"][1]["simd"] = 5
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    assert_user_error(capsys, ["verilog", bundle_dir, "-o", out], "manifest.json",
                      "layers[1].sf", "expected 2")
    m["layers"][1]["simd"] = 3
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    hexfile = bundle_dir / "layer0_weights.hex"
    hexfile.write_text("".join("f" + line + "\n" for line in hexfile.read_text().split()))
    assert_user_error(capsys, ["verilog", bundle_dir, "-o", out], "layer0_weights.hex", "line 1")
    (bundle_dir / "manifest.json").write_text("{")
    assert_user_error(capsys, ["verilog", bundle_dir, "-o", out], "manifest.json", "JSON")
    assert not out.exists()


def test_verilog_writes_the_rom_images(capsys, bundle_dir, tmp_path):
    rc, _, _ = run(capsys, "verilog", bundle_dir, "-o", tmp_path / "rtl")
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "rtl").iterdir())
    assert names == ["bchw_mul.v", "bchw_rom.v", "bchw_top.v", "layer0_params.hex",
                     "layer0_weights.hex", "layer1_params.hex", "layer1_weights.hex"]
    assert "$readmemh" in (tmp_path / "rtl" / "bchw_rom.v").read_text()
    assert "layer1_weights.hex" in (tmp_path / "rtl" / "bchw_top.v").read_text()
    assert "bchw_mul #(" in (tmp_path / "rtl" / "bchw_top.v").read_text()


def test_eval_json(capsys):
    rc, out, _ = run(capsys, "eval", MODEL, "--samples", MODEL / "sample.npz", "--json")
    golden = json.loads(out)
    rc2, out, _ = run(capsys, "eval", MODEL, "--float", "--samples", MODEL / "sample.npz",
                      "--json")
    float_ = json.loads(out)
    assert rc == rc2 == 0
    assert golden["images"] == float_["images"] == 250
    assert golden["mode"] == "golden" and float_["mode"] == "float"
    assert 0.8 < golden["accuracy"] < 1 and abs(golden["accuracy"] - float_["accuracy"]) <= 0.005


def test_eval_and_sim_bad_input(capsys, bundle_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(capsys, ["eval", empty], "no bundle here")
    assert_user_error(capsys, ["eval", bundle_dir], "random")
    assert_user_error(capsys, ["eval", MODEL, "--samples", tmp_path / "none.npz"], "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 broken zip")
    assert_user_error(capsys, ["eval", MODEL, "--samples", bad], "bad.npz")
    assert_user_error(capsys, ["eval", MODEL, "--dataset", "mnist", "--data-dir", tmp_path],
                      str(tmp_path))
    assert_user_error(capsys, ["eval", tmp_path / "x.pt", "--float"], "x.pt")
    sample = ["--samples", MODEL / "sample.npz"]
    assert_user_error(capsys, ["sim", MODEL / "bundle", *sample, "--images", "0"], "--images")
    assert_user_error(capsys, ["sim", MODEL / "bundle", *sample, "--images", "999"], "250")
    assert_user_error(capsys, ["sim", MODEL / "bundle", *sample, "--rtl", tmp_path],
                      "bchw_top.v")
    assert_user_error(capsys, ["sim", bundle_dir, *sample], "sample.npz", "images")


def test_demo_and_train_bad_input(capsys, tmp_path):
    assert_user_error(capsys, ["demo", "--model", tmp_path], "checkpoint.pt")
    model = tmp_path / "model"
    shutil.copytree(MODEL, model, ignore=shutil.ignore_patterns("bundle"))
    (model / "hardware.json").write_text('{"layers": [{"pe": 16, "simd": 28}]}')
    assert_user_error(capsys, ["demo", "--model", model], "hardware.json", "field 'layers'",
                      "1 values given")
    assert_user_error(capsys, ["train", "--spec", "784-x-10", "--out", tmp_path / "r"], "spec")
    assert_user_error(capsys, ["train", "--dataset", "mnist", "--data-dir", tmp_path,
                               "--out", tmp_path / "r"], str(tmp_path))


def test_export_searches_the_folding_for_a_target(capsys, tmp_path):
    rc, out, _ = run(capsys, "export", MODEL, "-o", tmp_path / "b", "--target-fps", "500000",
                     "--formats", "hex")
    assert rc == 0 and "adder utilisation" in out
    from bchw import perf
    from bchw.export import load_bundle

    bundle = load_bundle(tmp_path / "b")
    assert 150e6 / perf.cycle_model(bundle).interval >= 500_000
    assert_user_error(capsys, ["export", MODEL, "-o", tmp_path / "c", "--target-fps", "1e6",
                               "--pe", "1,1,1,1"], "--target-fps")
    assert_user_error(capsys, ["export", MODEL, "-o", tmp_path / "c", "--max-luts", "5"],
                      "--max-luts")
    assert not (tmp_path / "c").exists()


def test_conv_bundles_are_evaluated_but_get_no_hardware_yet(capsys, tmp_path):
    from bchw.nn import BinaryNet, save_checkpoint

    torch.manual_seed(0)
    model = BinaryNet("3C3-MP2-5", (4, 4, 4)).eval()   # 64 values, as digits' 1×8×8 images
    save_checkpoint(tmp_path / "c.pt", model, {"dataset": "digits", "seed": 0}, {})
    bundle = tmp_path / "bundle"
    rc, out, _ = run(capsys, "export", tmp_path / "c.pt", "-o", bundle, "--pe", "3,5",
                     "--simd", "36,12", "--formats", "hex")
    assert rc == 0 and "2 layers" in out
    assert_user_error(capsys, ["export", tmp_path / "c.pt", "-o", tmp_path / "b", "--pe", "3,5",
                               "--simd", "36,12", "--in-lanes", "1"], "in_lanes", "must be 4")
    assert_user_error(capsys, ["eval", bundle], "--dataset", "1×8×8", "4×4×4")
    sample = tmp_path / "s.npz"
    np.savez(sample, images=np.zeros((3, 64), np.uint8), labels=np.zeros(3, np.int64))
    rc, out, _ = run(capsys, "eval", bundle, "--samples", sample, "--json")
    assert rc == 0 and json.loads(out)["images"] == 3
    # a convolutional bundle generates its sliding-window accelerator
    rc, out, _ = run(capsys, "verilog", bundle, "-o", tmp_path / "rtl")
    assert rc == 0 and "wrote" in out
    verilog = (tmp_path / "rtl" / "bchw_top.v").read_text()
    assert "window0" in verilog and "flatten" in verilog
