import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bchw.errors import BchwError
from bchw.nn import (
    ActQuant,
    BinaryLinear,
    BinaryMLP,
    BinaryNet,
    activation_codes,
    binarize,
    hard_sigmoid,
    load_checkpoint,
    model_from_checkpoint,
    parse_spec,
    save_checkpoint,
    square_hinge_loss,
)

CONFIG = {"dataset": "digits", "seed": 0, "epochs": 1}


# binarize

def test_binarize_det_maps_zero_to_plus_one():
    w = torch.tensor([-1.0, -0.3, -0.0, 0.0, 1e-8, 0.7, 1.0])
    assert binarize(w, "det").tolist() == [-1, -1, 1, 1, 1, 1, 1]


def test_binarize_stoch_probability_is_hard_sigmoid():
    levels = torch.tensor([-1.5, -1.0, -0.6, 0.0, 0.2, 0.9, 1.0, 2.0])
    w = levels.repeat(40_000, 1)
    b = binarize(w, "stoch", torch.Generator().manual_seed(1))
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    p_plus = (b == 1).double().mean(0)
    expected = hard_sigmoid(levels).double()
    assert torch.allclose(p_plus, expected, atol=0.01)
    assert p_plus[0] == 0 and p_plus[1] == 0 and p_plus[-1] == 1 and p_plus[-2] == 1


def test_binarize_stoch_is_reproducible_with_a_generator():
    w = torch.empty(1000).uniform_(-1, 1)
    a = binarize(w, "stoch", torch.Generator().manual_seed(7))
    b = binarize(w, "stoch", torch.Generator().manual_seed(7))
    c = binarize(w, "stoch", torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_binarize_float_passes_through_and_bad_mode_fails():
    w = torch.tensor([0.25, -0.5])
    assert torch.equal(binarize(w, "float"), w)
    with pytest.raises(ValueError):
        binarize(w, "sign")


# BinaryLinear

@pytest.mark.parametrize("mode", ["det", "stoch"])
def test_straight_through_gradient_is_the_binary_weights_gradient(mode):
    torch.manual_seed(0)
    layer = BinaryLinear(5, 3, mode, torch.Generator().manual_seed(0))
    x, g = torch.randn(4, 5), torch.randn(4, 3)
    y = layer(x)
    (y * g).sum().backward()
    assert torch.allclose(layer.weight.grad, g.t() @ x)
    # The forward really used ±1 weights.
    assert set(layer(torch.eye(5)).detach().unique().tolist()) == {-1.0, 1.0}


def test_eval_forward_uses_deterministic_binarization():
    layer = BinaryLinear(6, 4, "stoch").eval()
    x = torch.randn(3, 6)
    expected = x @ torch.where(layer.weight >= 0, 1.0, -1.0).t()
    assert torch.allclose(layer(x), expected)
    assert torch.equal(layer(x), layer(x))


def test_float_mode_uses_real_weights():
    layer = BinaryLinear(6, 4, "float")
    x = torch.randn(3, 6)
    assert torch.allclose(layer(x), x @ layer.weight.t())


def test_init_is_uniform_in_minus_one_one_and_clip_keeps_it_there():
    torch.manual_seed(0)
    layer = BinaryLinear(200, 100)
    w = layer.weight.detach()
    assert w.abs().max() <= 1 and w.min() < -0.95 and w.max() > 0.95
    assert abs(w.mean()) < 0.02 and abs(w.var() - 1 / 3) < 0.02
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    layer(torch.randn(8, 200)).sum().backward()
    opt.step()
    assert layer.weight.abs().max() > 1
    layer.clip_()
    assert layer.weight.abs().max() <= 1


def test_glorot_learning_rate_scale():
    assert BinaryLinear(784, 256).lr_scale == pytest.approx(1 / math.sqrt(1.5 / 1040))


# ActQuant

@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 10), clip=st.floats(0.1, 8.0),
       z=st.lists(st.floats(-20, 20, width=32), min_size=1, max_size=50))
def test_actquant_outputs_are_exact_multiples_of_the_step(bits, clip, z):
    q = ActQuant(bits, clip)
    z = torch.tensor(z)
    out = q(z)
    codes = activation_codes(z, bits, clip)
    assert torch.equal(codes, codes.round())
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    assert torch.equal(out, codes * (clip / (2**bits - 1)))
    assert torch.all((out - z.clamp(0, clip)).abs() <= q.step / 2 + 1e-5 * clip)


def test_actquant_rounds_half_up_and_clamps():
    assert activation_codes(torch.tensor([-0.5, 0.49, 0.5, 1.5, 2.5, 3.5, 9.0]),
                            2, 3.0).tolist() == [0, 0, 1, 2, 3, 3, 3]


def test_actquant_gradient_is_straight_through_inside_the_range_only():
    z = torch.tensor([-1.0, 0.0, 0.3, 1.99, 2.0, 2.5], requires_grad=True)
    ActQuant(4, 2.0)(z).sum().backward()
    assert z.grad.tolist() == [0, 1, 1, 1, 1, 0]


def test_actquant_float_option_is_relu():
    z = torch.tensor([-1.0, 0.123, 7.5])
    assert torch.equal(ActQuant(8, 2.0, quantize=False)(z), torch.relu(z))


# loss

def test_square_hinge_loss_hand_example():
    scores = torch.tensor([[0.5, -2.0, 1.5], [0.0, 3.0, -1.0]])
    labels = torch.tensor([0, 1])
    # t = [1, -1, -1], [-1, 1, -1]; max(0, 1 - t*y)**2 = [.25, 0, 6.25], [1, 0, 0]
    assert square_hinge_loss(scores, labels).item() == pytest.approx(7.5 / 6)


# spec and model

def test_parse_spec():
    assert parse_spec("784-256-256-256-10") == [784, 256, 256, 256, 10]
    assert parse_spec("64-10") == [64, 10]


@pytest.mark.parametrize("spec", ["", "784", "784-", "-10", "784--10", "784-a-10",
                                  "784-0-10", "784-2.5-10", "784 256 10", 784, None])
def test_bad_spec_is_a_bchw_error(spec):
    with pytest.raises(BchwError) as e:
        BinaryMLP(spec)
    assert e.value.field == "spec"


def test_model_structure_and_input_normalisation():
    model = BinaryMLP("16-8-8-3", act_bits=4, act_clip=1.5)
    assert [(m.in_features, m.out_features) for m in model.linears] == [(16, 8), (8, 8), (8, 3)]
    assert len(model.acts) == 2 and model.acts[0].bits == 4
    assert all(n.eps == 1e-4 and n.momentum == 0.15 for n in model.norms)
    model.set_input_norm(0.25, 0.5)
    model.eval()
    pixels = torch.randint(0, 256, (5, 16)).float()
    x = (pixels / 255 - 0.25) / 0.5
    for i in range(3):
        x = model.norms[i](model.linears[i](x))
        if i < 2:
            x = model.acts[i](x)
    assert torch.equal(model(pixels), x)
    # Hidden activations are A-bit codes times the step.
    z = model.norms[0](model.linears[0]((pixels / 255 - 0.25) / 0.5))
    assert torch.equal(model.acts[0](z), activation_codes(z, 4, 1.5) * model.acts[0].step)


def test_mlp_module_names_are_those_of_its_checkpoints_and_state_dicts():
    keys = ["input_mean", "input_std", "linears.0.weight", "linears.1.weight"] + [
        f"norms.{i}.{k}" for i in range(2)
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert sorted(BinaryMLP("12-6-4").state_dict()) == sorted(keys)
    # A BinaryNet of the same spec is the same network, from the same random draws.
    torch.manual_seed(0)
    mlp = BinaryMLP("12-6-4", binarize="stoch")
    torch.manual_seed(0)
    net = BinaryNet("12-6-4", (1, 3, 4), binarize="stoch")
    assert mlp.sizes == [12, 6, 4] and net.in_shape is None
    assert net.architecture() == mlp.architecture()
    for (k1, v1), (k2, v2) in zip(mlp.state_dict().items(), net.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


# checkpoints

def _trained_model(spec="12-6-4", **kw):
    torch.manual_seed(0)
    model = BinaryMLP(spec, **kw)
    model.set_input_norm(0.3, 0.2)
    for _ in range(3):  # move the BN running statistics off their defaults
        model(torch.randint(0, 256, (16, model.sizes[0])).float())
    return model.eval()


def test_checkpoint_round_trip(tmp_path):
    model = _trained_model(act_bits=6, act_clip=3.0, binarize="stoch")
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, CONFIG, {"test_accuracy": 0.5, "curve": [0.1, 0.2]})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "bchw-checkpoint" and raw["version"] == 1
    assert raw["config"] == {**CONFIG, "spec": "12-6-4", "act_bits": 6, "act_clip": 3.0,
                             "binarize": "stoch", "float_act": False}
    assert raw["input_norm"] == pytest.approx({"mean": 0.3, "std": 0.2})
    assert [tuple(layer["weight"].shape) for layer in raw["layers"]] == [(6, 12), (4, 6)]
    assert torch.equal(raw["layers"][1]["bn_var"], model.norms[1].running_var)
    assert raw["metrics"]["curve"] == [0.1, 0.2]
    ckpt = load_checkpoint(path)
    rebuilt = model_from_checkpoint(ckpt)
    assert not rebuilt.training
    pixels = torch.randint(0, 256, (32, 12)).float()
    assert torch.equal(rebuilt(pixels), model(pixels))
    assert torch.equal(model_from_checkpoint(path)(pixels), model(pixels))


def test_save_refuses_a_config_that_disagrees_or_is_not_plain(tmp_path):
    model = _trained_model()
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.pt", model, {**CONFIG, "spec": "12-7-4"}, {})
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.pt", model, CONFIG, {"x": object()})
    assert not (tmp_path / "c.pt").exists()


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/bchw-pwned", "w"))


def _set(path, value):
    def mutate(ckpt):
        target = ckpt
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(ckpt):
        target = ckpt
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _scale_tensor(layer, key, value):
    def mutate(ckpt):
        ckpt["layers"][layer][key] = ckpt["layers"][layer][key].clone()
        ckpt["layers"][layer][key][0] = value
    return mutate


CORRUPTIONS = [
    ("format", _set(["format"], "something-else")),
    ("format", _delete(["format"])),
    ("version", _set(["version"], 2)),
    ("version", _set(["version"], "1")),
    ("config", _set(["config"], [])),
    ("config.spec", _delete(["config", "spec"])),
    ("config.spec", _set(["config", "spec"], "12-x-4")),
    ("config.act_bits", _set(["config", "act_bits"], 0)),
    ("config.act_bits", _set(["config", "act_bits"], 17)),
    ("config.act_bits", _set(["config", "act_bits"], True)),
    ("config.act_bits", _set(["config", "act_bits"], 8.0)),
    ("config.act_clip", _set(["config", "act_clip"], -1.0)),
    ("config.act_clip", _set(["config", "act_clip"], float("nan"))),
    ("config.binarize", _set(["config", "binarize"], "sign")),
    ("config.float_act", _set(["config", "float_act"], "no")),
    ("config.dataset", _delete(["config", "dataset"])),
    ("config.seed", _set(["config", "seed"], "0")),
    ("input_norm", _delete(["input_norm"])),
    ("input_norm.std", _set(["input_norm", "std"], 0.0)),
    ("input_norm.mean", _set(["input_norm", "mean"], float("inf"))),
    ("layers", _set(["layers"], {})),
    ("layers", lambda c: c["layers"].pop()),
    ("layers[0]", _set(["layers", 0], [1, 2])),
    ("layers[0].weight", _set(["layers", 0, "weight"], torch.zeros(6, 11))),
    ("layers[0].weight", _set(["layers", 0, "weight"], torch.zeros(6, 12, dtype=torch.int32))),
    ("layers[0].weight", _set(["layers", 0, "weight"], [[0.0] * 12] * 6)),
    ("layers[0].weight", _scale_tensor(0, "weight", float("nan"))),
    ("layers[1].bn_mean", _scale_tensor(1, "bn_mean", float("inf"))),
    ("layers[1].bn_var", _scale_tensor(1, "bn_var", -0.5)),
    ("layers[1].bn_var", _set(["layers", 1, "bn_var"], torch.ones(5))),
    ("layers[1].bn_weight", _delete(["layers", 1, "bn_weight"])),
    ("layers[0].bn_bias", _scale_tensor(0, "bn_bias", float("-inf"))),
    ("layers[0].bn_eps", _set(["layers", 0, "bn_eps"], 0.0)),
    ("layers[0].bn_eps", _delete(["layers", 0, "bn_eps"])),
    ("metrics", _delete(["metrics"])),
]


@pytest.mark.parametrize("field,mutate", CORRUPTIONS)
def test_corrupt_checkpoint_fields_are_named(tmp_path, field, mutate):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _trained_model(), CONFIG, {})
    ckpt = torch.load(path, weights_only=True)
    mutate(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(BchwError) as e:
        load_checkpoint(path)
    assert e.value.field == field
    assert e.value.path == str(path)


def test_unreadable_checkpoint_files_are_bchw_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _trained_model(), CONFIG, {})
    data = good.read_bytes()
    cases = {
        "missing.pt": None,
        "empty.pt": b"",
        "garbage.pt": b"not a torch file at all\n" * 10,
        "truncated.pt": data[: len(data) // 2],
        "flipped.pt": data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:],
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(BchwError) as e:
            load_checkpoint(path)
        assert e.value.path == str(path), name
    with pytest.raises(BchwError):
        load_checkpoint(tmp_path)  # a directory
    not_dict = tmp_path / "list.pt"
    torch.save([1, 2], not_dict)
    with pytest.raises(BchwError):
        load_checkpoint(not_dict)


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    import os

    path = tmp_path / "evil.pt"
    torch.save({"format": "bchw-checkpoint", "payload": _Payload()}, path)
    if os.path.exists("/tmp/bchw-pwned"):
        os.unlink("/tmp/bchw-pwned")
    with pytest.raises(BchwError) as e:
        load_checkpoint(path)
    assert "more than tensors" in e.value.message
    assert not os.path.exists("/tmp/bchw-pwned")
