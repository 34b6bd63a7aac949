import argparse
import dataclasses
import json

import pytest
import torch

from bchw.errors import BchwError
from bchw.nn import BinaryMLP, BinaryNet, load_checkpoint
from bchw.train import (
    TrainConfig,
    add_train_arguments,
    config_from_args,
    evaluate_float,
    lr_at,
    make_optimizer,
    train,
)

# Digits is small enough to train in a second; a higher learning rate and a
# smaller batch than the paper's make up for the few steps.
TINY = {"spec": "64-32-10", "dataset": "digits", "epochs": 3, "batch_size": 32,
        "lr_start": 0.03}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines = []
    metrics = train(TrainConfig(**TINY, out=str(out)), progress=lines.append)
    return out, metrics, lines


def test_tiny_digits_run_learns_and_writes_its_files(tiny_run):
    out, metrics, lines = tiny_run
    assert metrics["test_accuracy"] > 0.8 and metrics["best_val_accuracy"] > 0.8
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json",
                                                     "metrics.json"]
    assert json.loads((out / "config.json").read_text()) == dataclasses.asdict(
        TrainConfig(**TINY, out=str(out)))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] == metrics["best_epoch"]
    assert all(len(saved["epochs"][k]) == 3 for k in ("lr", "train_loss", "val_error",
                                                      "test_error", "seconds"))
    assert saved["epochs"]["train_loss"][-1] < saved["epochs"]["train_loss"][0]
    assert saved["torch_version"] == torch.__version__ and "git_commit" in saved
    assert len(lines) == 4 and lines[0].startswith("epoch   1/3")


def test_checkpoint_holds_the_best_epoch_with_clipped_weights(tiny_run):
    out, metrics, _ = tiny_run
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["config"]["spec"] == "64-32-10" and ckpt["config"]["dataset"] == "digits"
    assert ckpt["metrics"]["best_epoch"] == metrics["best_epoch"]
    assert all(layer["weight"].abs().max() <= 1 for layer in ckpt["layers"])
    assert 0 < ckpt["input_norm"]["mean"] < 1
    result = evaluate_float(out / "checkpoint.pt")
    assert result["images"] == 300 and len(result["predictions"]) == 300
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    val = evaluate_float(out / "checkpoint.pt", "digits", split="val")
    assert val["accuracy"] == pytest.approx(metrics["best_val_accuracy"])


@pytest.mark.parametrize("binarize", ["det", "stoch"])
def test_training_is_deterministic_for_a_seed(tmp_path, binarize):
    runs = []
    for name in ("a", "b"):
        config = TrainConfig(**{**TINY, "epochs": 1}, binarize=binarize,
                             out=str(tmp_path / name))
        metrics = train(config, progress=lambda s: None)
        runs.append((metrics, load_checkpoint(tmp_path / name / "checkpoint.pt")))
    (m1, c1), (m2, c2) = runs
    assert m1["epochs"]["train_loss"] == m2["epochs"]["train_loss"]
    for l1, l2 in zip(c1["layers"], c2["layers"]):
        assert all(torch.equal(l1[k], l2[k]) for k in ("weight", "bn_mean", "bn_var"))


def test_float_baseline_trains(tmp_path):
    metrics = train(TrainConfig(**TINY, binarize="float", float_act=True, out=str(tmp_path)),
                    progress=lambda s: None)
    assert metrics["test_accuracy"] > 0.8
    cfg = load_checkpoint(tmp_path / "checkpoint.pt")["config"]
    assert cfg["binarize"] == "float" and cfg["float_act"] is True


def test_optimizer_scales_binary_layers_learning_rate():
    model = BinaryMLP("64-32-10")
    optimizer = make_optimizer(model, 1e-3)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == pytest.approx([1e-3 * (96 / 1.5) ** 0.5, 1e-3 * (42 / 1.5) ** 0.5, 1e-3])
    assert optimizer.param_groups[0]["params"][0] is model.linears[0].weight
    assert len(optimizer.param_groups[2]["params"]) == 4  # BN weight and bias, two layers


def test_optimizer_scales_convolutions_learning_rate_too():
    model = BinaryNet("8C3-MP2-16C3-10", (1, 8, 8))
    optimizer = make_optimizer(model, 1e-3)
    weights = [model.convs[0].weight, model.convs[1].weight, model.linears[0].weight]
    assert all(g["params"][0] is w for g, w in zip(optimizer.param_groups, weights))
    # fan_in + fan_out: 1·9 + 8·9, 8·9 + 16·9, 16·4·4 + 10
    assert [g["lr_scale"] for g in optimizer.param_groups] == pytest.approx(
        [(81 / 1.5) ** 0.5, (216 / 1.5) ** 0.5, (266 / 1.5) ** 0.5, 1.0])
    assert len(optimizer.param_groups[3]["params"]) == 6


def test_learning_rate_decays_exponentially_to_lr_end():
    config = TrainConfig(epochs=10)
    assert lr_at(config, 0) == config.lr_start
    assert lr_at(config, 10) == pytest.approx(config.lr_end)
    ratios = [lr_at(config, e + 1) / lr_at(config, e) for e in range(9)]
    assert ratios == pytest.approx([ratios[0]] * 9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_bchw_error(tmp_path):
    with pytest.raises(BchwError) as e:
        train(TrainConfig(**TINY, device="cuda", out=str(tmp_path)))
    assert e.value.field == "device"


def test_spec_must_fit_the_dataset(tmp_path):
    with pytest.raises(BchwError) as e:
        train(TrainConfig(spec="784-32-10", dataset="digits", out=str(tmp_path)))
    assert e.value.field == "spec" and "64-...-10" in e.value.message


@pytest.mark.parametrize("spec,says", [
    ("8C3-MP2-8C3-MP2-5", "must end with 10, not 5"),
    ("8C3-MP3-10", "divisible by 3, not 8×8"),
    ("8C3-MP2-8C3-MP2-8C3-MP2-8C3-MP2-10", "divisible by 2, not 1×1"),
])
def test_conv_spec_must_fit_the_images(tmp_path, spec, says):
    with pytest.raises(BchwError, match=says) as e:
        train(TrainConfig(spec=spec, dataset="digits", out=str(tmp_path)))
    assert e.value.field == "spec"


@pytest.mark.parametrize("field,value", [
    ("spec", "64"), ("spec", "MP2-10"), ("spec", "8C3-FC-10"), ("dataset", "cifar"),
    ("epochs", 0), ("batch_size", 1), ("lr_start", 0.0),
    ("binarize", "sign"), ("act_bits", 17), ("act_clip", -1.0), ("bn_eps", 0.0),
    ("bn_momentum", 1.5), ("device", "tpu"),
])
def test_bad_config_fields_are_named(field, value):
    with pytest.raises(BchwError) as e:
        TrainConfig(**{field: value})
    assert e.value.field == field


def test_spec_is_normalised():
    assert TrainConfig(spec=" 064-32-10 ").spec == "64-32-10"
    assert TrainConfig(spec="2x8C3-MP2-2\u00d716FC-10").spec == "8C3-8C3-MP2-16FC-16FC-10"


def test_command_line_options_cover_every_field():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    assert config_from_args(parser.parse_args([])) == TrainConfig()
    args = parser.parse_args(["--spec", "64-16-10", "--dataset", "digits", "--epochs", "2",
                              "--lr-start", "0.01", "--binarize", "stoch", "--float-act",
                              "--data-dir", "/data", "--act-clip", "3", "--seed", "5"])
    config = config_from_args(args)
    assert config == TrainConfig(spec="64-16-10", dataset="digits", epochs=2, lr_start=0.01,
                                 binarize="stoch", float_act=True, data_dir="/data",
                                 act_clip=3.0, seed=5)
    with pytest.raises(SystemExit):
        parser.parse_args(["--binarize", "sign"])
    help_text = parser.format_help()
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in help_text


def test_presets_give_the_reference_recipes_and_options_override_them():
    from bchw.train import PRESETS, preset_config

    paper = preset_config("fmnist-mlp1024")
    assert paper.spec == "784-1024-1024-1024-10" and paper.epochs == 50
    # The recipe itself is the defaults: the paper's batch, schedule, BN and binarization.
    assert (paper.batch_size, paper.lr_start, paper.lr_end, paper.bn_eps, paper.bn_momentum,
            paper.binarize) == (100, 1e-3, 3e-6, 1e-4, 0.15, "det")
    assert set(PRESETS) >= {"fmnist-mlp1024", "fmnist-mlp256", "mnist5k-mlp256", "digits-mlp",
                            "fmnist-cnn"}
    cnn = preset_config("fmnist-cnn")
    assert (cnn.spec, cnn.dataset, cnn.binarize, cnn.act_bits) == (
        "32C3-MP2-64C3-MP2-512FC-10", "fashion-mnist", "det", 8)
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    config = config_from_args(parser.parse_args(["--preset", "digits-mlp", "--epochs", "3",
                                                 "--binarize", "stoch"]))
    assert (config.spec, config.dataset, config.epochs, config.binarize) == (
        "64-64-64-10", "digits", 3, "stoch")
    with pytest.raises(BchwError, match="preset"):
        preset_config("nope")


def test_real_weight_evaluation_uses_the_real_weights():
    model = BinaryMLP("6-4-3", binarize="stoch").eval()
    x = torch.rand(5, 6) * 255
    binary = model(x)
    model.set_eval_weights("real")
    real = model(x)
    w = model.linears[0].weight
    assert torch.equal(model.linears[0].binary_weight(), w)
    assert not torch.equal(real, binary)
    model.set_eval_weights("binary")
    assert torch.equal(model(x), binary)
    assert set(model.linears[0].binary_weight().unique().tolist()) <= {-1.0, 1.0}


def test_stochastic_run_reports_the_papers_real_weight_evaluation(tmp_path):
    metrics = train(TrainConfig(**{**TINY, "binarize": "stoch"}, out=str(tmp_path)),
                    progress=lambda _: None)
    curves = metrics["epochs"]
    assert len(curves["val_error_real"]) == len(curves["test_error_real"]) == 3
    best = metrics["best_epoch_real"] - 1
    assert curves["val_error_real"][best] == min(curves["val_error_real"])
    assert metrics["test_accuracy_real"] == pytest.approx(1 - curves["test_error_real"][best])
    assert metrics["test_accuracy"] > 0.5 and metrics["test_accuracy_real"] > 0.5


def test_stochastic_runs_recalibrate_batch_norm_for_the_binary_weights(tmp_path):
    from bchw.nn import model_from_checkpoint
    from bchw.train import _accuracy, recalibrate_for_binary_weights

    metrics = train(TrainConfig(**{**TINY, "binarize": "stoch"}, out=str(tmp_path)),
                    progress=lambda _: None)
    assert metrics["bn_recalibrated"]
    # The checkpoint holds the recalibrated statistics: it scores what the metrics say.
    from bchw.data import load_dataset

    data = load_dataset("digits")
    model = model_from_checkpoint(tmp_path / "checkpoint.pt")
    assert _accuracy(model, data.test.images, data.test.labels, "cpu") == pytest.approx(
        metrics["test_accuracy"])
    # Recalibrating again changes nothing: the statistics are those of the binary weights.
    again = recalibrate_for_binary_weights(model, data)
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert again["test_accuracy_before_recalibration"] == pytest.approx(
        metrics["test_accuracy"], abs=0.01)


def test_stochastic_conv_runs_recalibrate_their_2d_batch_norms(tmp_path):
    from bchw.data import load_dataset
    from bchw.nn import model_from_checkpoint
    from bchw.train import _accuracy

    config = TrainConfig(**{**TINY, "spec": "8C3-MP2-16C3-MP2-10", "epochs": 2,
                            "binarize": "stoch"}, out=str(tmp_path))
    metrics = train(config, progress=lambda _: None)
    assert metrics["bn_recalibrated"] and metrics["test_accuracy"] > 0.5
    data = load_dataset("digits")
    model = model_from_checkpoint(tmp_path / "checkpoint.pt")
    assert _accuracy(model, data.test.images, data.test.labels, "cpu") == pytest.approx(
        metrics["test_accuracy"])
