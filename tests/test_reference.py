"""The reference model and design: rtl/ and the bundle are up to date, and the models agree."""

from pathlib import Path

import numpy as np
import pytest

from bchw import golden, randnet
from bchw.export import HardwareConfig, export_bundle, export_state, load_bundle
from bchw.gateware.multiplier import MUL_VERILOG
from bchw.gateware.rom import ROM_VERILOG
from bchw.gateware.top import generate_verilog, rom_files
from bchw.nn import model_from_checkpoint
from bchw.train import predict

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "fmnist-mlp256"
RTL = ROOT / "rtl"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(MODEL / "bundle")


def test_rtl_is_up_to_date(bundle):
    """`make rtl` regenerates rtl/: what is committed must be what the generator makes now."""
    expected = {"bchw_top.v": generate_verilog(bundle).encode(), "bchw_rom.v": ROM_VERILOG.encode(),
                "bchw_mul.v": MUL_VERILOG.encode()}
    for name in rom_files(bundle):
        expected[name] = (bundle.path / name).read_bytes()
    assert sorted(p.name for p in RTL.iterdir()) == sorted(expected), "run `make rtl`"
    for name, data in expected.items():
        assert (RTL / name).read_bytes() == data, f"rtl/{name} is out of date: run `make rtl`"


def test_bundle_is_up_to_date(tmp_path, bundle):
    hw = HardwareConfig.from_file(MODEL / "hardware.json")
    fresh = export_bundle(MODEL / "checkpoint.pt", tmp_path / "bundle", hw)
    committed = sorted(p.name for p in bundle.path.iterdir())
    assert committed == sorted(p.name for p in fresh.path.iterdir())
    for name in committed:
        assert (fresh.path / name).read_bytes() == (bundle.path / name).read_bytes(), name


def test_new_weights_of_the_same_shape_give_identical_verilog(tmp_path, bundle):
    hw = HardwareConfig.from_file(MODEL / "hardware.json")
    other = export_state(randnet.random_state([784, 256, 256, 256, 10], seed=7),
                         tmp_path / "other", hw)
    assert any((other.path / n).read_bytes() != (bundle.path / n).read_bytes()
               for n in rom_files(bundle))
    assert generate_verilog(other) == (RTL / "bchw_top.v").read_text()


def _agreement(images, labels):
    float_classes = predict(model_from_checkpoint(MODEL / "checkpoint.pt"), images)
    gold = golden.infer(load_bundle(MODEL / "bundle"), images).classes
    agree = (float_classes == gold).mean()
    gap = abs((float_classes == labels).mean() - (gold == labels).mean())
    return agree, gap


def test_golden_agrees_with_float_on_the_sample():
    with np.load(MODEL / "sample.npz") as z:
        agree, gap = _agreement(z["images"], z["labels"])
    assert agree >= 0.99 and gap <= 0.005


def test_golden_agrees_with_float_on_the_whole_test_set():
    from bchw.data import FASHION_MNIST_DIR, load_dataset

    if not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} "
                    "(apt-get install dataset-fashion-mnist; `make test` does it as root)")
    test = load_dataset("fashion-mnist").test
    agree, gap = _agreement(test.images, test.labels)
    assert len(test) == 10000
    assert agree >= 0.99 and gap <= 0.005


REFERENCE_MODELS = sorted(p.parent.name for p in (ROOT / "models").glob("*/accuracy.json"))


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_model_card_figures_are_what_the_bundle_gives(name):
    """Every reference model's card figures (accuracy.json, written by models/make_model.py)
    are recomputed: the golden model on the bundle, the float model where the checkpoint is
    committed, the cycle model; golden stays within 0.3 points of float."""
    import json

    from bchw import perf
    from bchw.data import FASHION_MNIST_DIR, load_dataset

    model = ROOT / "models" / name
    figures = json.loads((model / "accuracy.json").read_text())
    bundle = load_bundle(model / "bundle")
    cm = perf.cycle_model(bundle)
    assert (cm.interval, cm.latency) == (figures["interval_cycles"], figures["latency_cycles"])
    # 0.3 points, or one image of a small test set (digits: 300 images, 0.33 points each).
    tolerance = max(0.003, 1 / figures["test_images"])
    assert abs(figures["golden_accuracy"] - figures["float_accuracy"]) <= tolerance + 1e-12
    if figures["dataset"] == "fashion-mnist" and not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    test = load_dataset(figures["dataset"]).test
    assert len(test) == figures["test_images"]
    gold = golden.infer(bundle, test.images).classes
    assert (gold == test.labels).mean() == figures["golden_accuracy"]
    if (model / "checkpoint.pt").is_file():
        floats = predict(model_from_checkpoint(model / "checkpoint.pt"), test.images)
        assert (floats == test.labels).mean() == figures["float_accuracy"]
        assert int((floats != gold).sum()) == figures["float_golden_differ"]
