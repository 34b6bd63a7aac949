"""Convolutional BinaryConnect networks: the spec language, BinaryConv2d, BinaryNet."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from bchw.cli import main
from bchw.data import FASHION_MNIST_DIR, load_dataset
from bchw.errors import BchwError
from bchw.nn import (
    BinaryConv2d,
    BinaryMLP,
    BinaryNet,
    LayerSpec,
    activation_codes,
    binarize,
    canonical_spec,
    hard_sigmoid,
    load_checkpoint,
    model_from_checkpoint,
    parse_net_spec,
    save_checkpoint,
)
from bchw.train import evaluate_float

CIFAR10 = "2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10"  # the paper's network
CONFIG = {"dataset": "digits", "seed": 0, "epochs": 1}


def sign(w: torch.Tensor) -> torch.Tensor:
    return torch.where(w >= 0, 1.0, -1.0)


# the spec language

def test_parse_net_spec_gives_layers_and_shapes():
    layers = parse_net_spec("32C3-MP2-64C5-MP2-512FC-10", (1, 28, 28))
    assert layers == [
        LayerSpec("conv", 1, 32, 3, 1, 2, (1, 28, 28), (32, 14, 14)),
        LayerSpec("conv", 32, 64, 5, 2, 2, (32, 14, 14), (64, 7, 7)),
        LayerSpec("fc", 64 * 7 * 7, 512, 0, 0, 0, (3136, 1, 1), (512, 1, 1)),
        LayerSpec("fc", 512, 10, 0, 0, 0, (512, 1, 1), (10, 1, 1)),
    ]


def test_repeats_expand_and_the_canonical_form_records_them_expanded():
    expanded = "128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-1024FC-1024FC-10"
    assert canonical_spec(CIFAR10) == expanded
    assert canonical_spec(CIFAR10.replace("x", "\u00d7")) == expanded
    assert canonical_spec(" 032C3-1x8C1-MP2-010 ") == "32C3-8C1-MP2-10"
    assert parse_net_spec(CIFAR10, (3, 32, 32)) == parse_net_spec(expanded, (3, 32, 32))
    # MLP specs keep their form.
    assert canonical_spec("064-32-10") == "64-32-10"


def test_mlp_specs_are_fully_connected_layers():
    layers = parse_net_spec("64-32-10", None)
    assert [(s.kind, s.in_channels, s.out_channels) for s in layers] == [
        ("fc", 64, 32), ("fc", 32, 10)]
    assert parse_net_spec("64-32-10", (1, 8, 8)) == layers
    with pytest.raises(BchwError, match="must start with 64") as e:
        parse_net_spec("784-32-10", (1, 8, 8))
    assert e.value.field == "spec"


@pytest.mark.parametrize("spec,says", [
    ("MP2-10", "must follow a convolution, not start"),
    ("8C3-256FC-MP2-10", "must follow a convolution, not follow a fully connected"),
    ("8C3-MP2-MP2-10", "not follow another max pooling"),
    ("256FC-8C3-10", "cannot follow a fully connected"),
    ("8C3-MP3-10", "divisible by 3, not 8×8"),
    ("8C3-MP2-8C3-MP2-8C3-MP4-10", "divisible by 4, not 2×2"),
    ("8C3-10-10", "only the last token"),
    ("8C3-MP2", "last token must be the number of classes"),
    ("8C3-16FC", "last token must be the number of classes"),
    ("64-8C3-10", "not a bare integer"),
    ("8C2-10", "kernel must be odd"),
    ("8C3-MP1-10", "at least 2×2"),
    ("0C3-10", "must be positive"),
    ("0x8C3-10", "must be positive"),
    ("8C3-0", "must be positive"),
    ("8c3-10", "not a layer"),
    ("8C3--10", "not a layer"),
    ("8C3-2xMP2-10", "not a layer"),
    ("8C3 -10", "not a layer"),
    ("1001x8C3-10", "more than 1000 layers"),
    ("1234567890C3-10", "at most 9 digits"),
    (None, "a spec is a string"),
])
def test_bad_specs_say_what_is_wrong(spec, says):
    with pytest.raises(BchwError, match=says) as e:
        parse_net_spec(spec, (1, 8, 8))
    assert e.value.field == "spec"


def test_an_mlp_model_refuses_a_convolutional_spec():
    with pytest.raises(BchwError, match="convolutional network's spec") as e:
        BinaryMLP("8C3-MP2-10")
    assert e.value.field == "spec"


# BinaryConv2d

@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_eval_forward_is_a_convolution_with_the_sign_weights(kernel):
    torch.manual_seed(0)
    layer = BinaryConv2d(3, 4, kernel, "stoch").eval()
    assert layer.padding == (kernel - 1) // 2
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = 0.0  # zero is +1, as the hardware stores it
    x = torch.randn(2, 3, 7, 7)
    expected = F.conv2d(x, sign(layer.weight), padding=(kernel - 1) // 2)
    assert expected.shape == (2, 4, 7, 7)
    assert torch.equal(layer(x), expected)
    layer.eval_weights = "real"
    assert torch.equal(layer(x), F.conv2d(x, layer.weight, padding=(kernel - 1) // 2))


def test_even_kernels_are_refused():
    with pytest.raises(ValueError):
        BinaryConv2d(1, 1, 2)


def test_stochastic_binarization_draws_plus_one_with_probability_hard_sigmoid():
    layer = BinaryConv2d(1, 8, 3, "stoch", torch.Generator().manual_seed(3))
    levels = torch.tensor([-1.0, -0.6, -0.2, 0.0, 0.3, 0.5, 0.9, 1.0])
    with torch.no_grad():
        layer.weight.copy_(levels.view(8, 1, 1, 1).expand(8, 1, 3, 3))
    draws = torch.stack([layer.binary_weight().detach() for _ in range(4000)])
    assert set(draws.unique().tolist()) == {-1.0, 1.0}
    p_plus = (draws == 1).double().mean((0, 2, 3, 4))
    assert torch.allclose(p_plus, hard_sigmoid(levels).double(), atol=0.01)
    assert p_plus[0] == 0 and p_plus[-1] == 1


@pytest.mark.parametrize("mode", ["det", "stoch"])
def test_conv_gradient_is_passed_straight_through_to_the_real_weights(mode):
    torch.manual_seed(0)
    layer = BinaryConv2d(2, 3, 3, mode, torch.Generator().manual_seed(5))
    x, g = torch.randn(4, 2, 5, 5), torch.randn(4, 3, 5, 5)
    (layer(x) * g).sum().backward()
    wb = binarize(layer.weight.detach(), mode, torch.Generator().manual_seed(5))
    wb.requires_grad_(True)
    (F.conv2d(x, wb, padding=1) * g).sum().backward()
    assert set(wb.detach().unique().tolist()) == {-1.0, 1.0}
    assert torch.allclose(layer.weight.grad, wb.grad)


def test_conv_init_clip_and_glorot_learning_rate_scale():
    torch.manual_seed(0)
    layer = BinaryConv2d(32, 64, 3)
    w = layer.weight.detach()
    assert w.shape == (64, 32, 3, 3) and w.abs().max() <= 1 and w.min() < -0.99
    assert abs(w.mean()) < 0.02 and abs(w.var() - 1 / 3) < 0.02
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    layer(torch.randn(2, 32, 4, 4)).sum().backward()
    opt.step()
    assert layer.weight.abs().max() > 1
    layer.clip_()
    assert layer.weight.abs().max() <= 1
    assert layer.lr_scale == pytest.approx(1 / math.sqrt(1.5 / (32 * 9 + 64 * 9)))


# BinaryNet

def _stepped(model: BinaryNet, batches: int = 3) -> BinaryNet:
    """The model with BN running statistics and affine parameters off their defaults."""
    torch.manual_seed(1)
    model.set_input_norm(0.3, 0.4)
    with torch.no_grad():
        for norm in model.norms:  # negative scales too: then pooling before BN matters
            norm.weight.uniform_(-2, 2)
            norm.bias.uniform_(-1, 1)
        for _ in range(batches):
            model(torch.randint(0, 256, (16, model.in_features)).float())
    return model.eval()


def test_layer_order_is_conv_pool_batchnorm_activation():
    model = _stepped(BinaryNet("4C3-MP2-6C3-5FC-3", (2, 8, 8), act_bits=4, act_clip=1.5))
    assert [type(m).__name__ for m in model.pools] == ["MaxPool2d", "Identity"]
    pixels = torch.randint(0, 256, (5, 128)).float()

    def norm(i, z):
        n = model.norms[i]
        return F.batch_norm(z, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0,
                            n.eps)

    def act(z):
        return activation_codes(z, 4, 1.5) * (1.5 / 15)

    def reference(pool_first: bool) -> torch.Tensor:
        # the pixels are padded with 0 before normalisation, as the hardware pads
        x = F.pad(pixels.reshape(5, 2, 8, 8), (1, 1, 1, 1), value=0.0)
        x = (x / 255 - model.input_mean) / model.input_std
        z = F.conv2d(x, sign(model.convs[0].weight))
        z = norm(0, F.max_pool2d(z, 2)) if pool_first else F.max_pool2d(norm(0, z), 2)
        x = act(z)
        x = act(norm(1, F.conv2d(x, sign(model.convs[1].weight), padding=1)))
        x = act(norm(2, x.reshape(5, 6 * 4 * 4) @ sign(model.linears[0].weight).t()))
        return norm(3, x @ sign(model.linears[1].weight).t())

    out = model(pixels)
    assert out.shape == (5, 3)
    assert torch.equal(out, reference(pool_first=True))
    assert not torch.allclose(out, reference(pool_first=False), atol=1e-3)


def test_pixels_unflatten_and_features_flatten_channel_major():
    model = _stepped(BinaryNet("3C3-MP2-4FC-2", (2, 4, 6)))
    seen = {}
    model.convs[0].register_forward_hook(lambda m, i, o: seen.update(conv_in=i[0]))
    model.acts[0].register_forward_hook(lambda m, i, o: seen.update(maps=o))
    model.linears[0].register_forward_hook(lambda m, i, o: seen.update(fc_in=i[0]))
    pixels = torch.randint(0, 256, (2, 48)).float()
    model(pixels)
    x = (pixels / 255 - model.input_mean) / model.input_std
    pad = (0 - model.input_mean) / model.input_std       # a pixel of value 0, normalised
    maps, fc_in = seen["maps"], seen["fc_in"]
    assert maps.shape == (2, 3, 2, 3) and fc_in.shape == (2, 18)
    conv_in = seen["conv_in"]                             # padded by 1 on every side
    assert conv_in.shape == (2, 2, 6, 8)
    assert torch.equal(conv_in[:, :, 0], torch.full((2, 2, 8), float(pad)))
    for c in range(2):
        for h in range(4):
            for w in range(6):
                assert torch.equal(conv_in[:, c, h + 1, w + 1], x[:, c * 24 + h * 6 + w])
    for c in range(3):
        for h in range(2):
            for w in range(3):
                assert torch.equal(fc_in[:, c * 6 + h * 3 + w], maps[:, c, h, w])


def test_the_papers_cifar10_network_builds_and_runs():
    torch.manual_seed(0)
    model = BinaryNet(CIFAR10, (3, 32, 32))
    assert [s.out_shape for s in model.layer_specs] == [
        (128, 32, 32), (128, 16, 16), (256, 16, 16), (256, 8, 8), (512, 8, 8), (512, 4, 4),
        (1024, 1, 1), (1024, 1, 1), (10, 1, 1)]
    assert [tuple(m.weight.shape) for m in model.binary_layers] == [
        (128, 3, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3), (256, 256, 3, 3),
        (512, 256, 3, 3), (512, 512, 3, 3), (1024, 8192), (1024, 1024), (10, 1024)]
    assert len(model.norms) == 9 and len(model.acts) == 8
    assert model.in_features == 3 * 32 * 32 and model.num_classes == 10
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3 * 32 * 32)).float())
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_clip_and_real_evaluation_cover_the_convolutions():
    model = BinaryNet("4C3-MP2-3", (1, 4, 4), binarize="stoch")
    with torch.no_grad():
        for layer in model.binary_layers:
            layer.weight.mul_(5)
    model.clip_()
    assert all(layer.weight.abs().max() <= 1 for layer in model.binary_layers)
    model.set_eval_weights("real")
    assert all(layer.eval_weights == "real" for layer in model.binary_layers)


# checkpoints

def test_conv_checkpoint_round_trip(tmp_path):
    model = _stepped(BinaryNet("2x4C3-MP2-8FC-10", (1, 8, 8), act_bits=6, binarize="stoch"))
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, CONFIG, {"test_accuracy": 0.5})
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == {**CONFIG, "spec": "4C3-4C3-MP2-8FC-10", "in_shape": [1, 8, 8],
                             "act_bits": 6, "act_clip": 2.0, "binarize": "stoch",
                             "float_act": False}
    assert [tuple(layer["weight"].shape) for layer in raw["layers"]] == [
        (4, 1, 3, 3), (4, 4, 3, 3), (8, 64), (10, 8)]
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    assert type(rebuilt) is BinaryNet and not rebuilt.training
    pixels = torch.randint(0, 256, (32, 64)).float()
    assert torch.equal(rebuilt(pixels), model(pixels))


@pytest.mark.parametrize("field,mutate", [
    ("config.in_shape", lambda c: c["config"].pop("in_shape")),
    ("config.in_shape", lambda c: c["config"].update(in_shape=[1, 64])),
    ("config.in_shape", lambda c: c["config"].update(in_shape=[1, 8, 0])),
    ("config.in_shape", lambda c: c["config"].update(in_shape=[1, 8, True])),
    ("config.in_shape", lambda c: c["config"].update(in_shape="1x8x8")),
    ("config.spec", lambda c: c["config"].update(spec="4C3-MP3-10")),
    ("config.spec", lambda c: c["config"].update(spec="MP2-4C3-10")),
    ("config.spec", lambda c: c["config"].update(spec="1000000x4C3-10")),
    ("layers", lambda c: c["config"].update(spec="4C3-MP2-4C3-10")),
    ("layers[0].weight", lambda c: c["layers"][0].update(weight=torch.zeros(4, 1, 5, 5))),
    ("layers[0].weight", lambda c: c["layers"][0].update(weight=torch.zeros(4, 9))),
    ("layers[1].weight", lambda c: c["config"].update(in_shape=[1, 4, 4])),
])
def test_corrupt_conv_checkpoints_name_the_field(tmp_path, field, mutate):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _stepped(BinaryNet("4C3-MP2-10", (1, 8, 8))), CONFIG, {})
    ckpt = torch.load(path, weights_only=True)
    mutate(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(BchwError) as e:
        load_checkpoint(path)
    assert e.value.field == field and e.value.path == str(path)


# data and training

def test_data_sets_give_their_image_shape():
    assert load_dataset("digits").image_shape == (1, 8, 8)
    if Path(FASHION_MNIST_DIR).is_dir():
        data = load_dataset("fashion-mnist")
        assert data.image_shape == (1, 28, 28) and data.num_features == 784


def test_a_tiny_conv_net_trains_on_digits_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--spec", "8C3-MP2-16C3-MP2-10", "--dataset", "digits",
               "--epochs", "3", "--batch-size", "32", "--lr-start", "0.03",
               "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 4 and lines[0].startswith("epoch   1/3")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.7 and metrics["best_val_accuracy"] > 0.7
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["config"]["spec"] == "8C3-MP2-16C3-MP2-10"
    assert ckpt["config"]["in_shape"] == [1, 8, 8]
    assert all(layer["weight"].abs().max() <= 1 for layer in ckpt["layers"])
    result = evaluate_float(out / "checkpoint.pt")
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    # it exports (tests/test_conv_export.py checks the bundle against the float model)
    bundle = tmp_path / "bundle"
    assert main(["export", str(out / "checkpoint.pt"), "-o", str(bundle), "--pe", "1,1,1",
                 "--simd", "1,1,1", "--formats", "hex"]) == 0
    assert "3 layers" in capsys.readouterr().out
    assert [la["kind"] for la in json.loads((bundle / "manifest.json").read_text())["layers"]] \
        == ["conv", "conv", "fc"]
