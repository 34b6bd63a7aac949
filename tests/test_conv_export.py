"""Convolutional networks from checkpoint to bundle and golden model.

A convolution is exported as the matrix over its windows, columns in
(ky, kx, c) order; feature maps travel in HWC order, so the first fully
connected layer after a convolution has its columns permuted from PyTorch's
C·H·W; the golden model pools accumulators, the hardware may pool codes.
Everything is checked against the float model (:class:`bchw.nn.BinaryNet`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bchw import golden, perf, randnet
from bchw.cli import main
from bchw.errors import BchwError
from bchw.export import Bundle, HardwareConfig, export_bundle, export_state, load_bundle
from bchw.nn import BinaryNet, load_checkpoint, save_checkpoint

# (spec, input shape, act_bits, PE, SIMD): foldings that divide no size; negative BN scales.
NETS = {
    "two-channels": ("4C3-MP2-6C3-5FC-3", (2, 8, 8), 8, [3, 5, 3, 2], [5, 7, 11, 3]),
    "pool-twice": ("4C5-MP2-6C3-MP2-5FC-3", (1, 8, 8), 4, [3, 5, 3, 2], [7, 11, 13, 4]),
}


def sign(w: torch.Tensor) -> torch.Tensor:
    return torch.where(w >= 0, 1.0, -1.0)


def random_net(spec: str, in_shape: tuple[int, int, int], act_bits: int, seed: int = 0
               ) -> BinaryNet:
    """A BinaryNet with random weights, negative batch-norm scales in every layer, and
    running statistics of random images (:func:`bchw.randnet.random_cnn`)."""
    return randnet.random_cnn(spec, in_shape, act_bits=act_bits, seed=seed)


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request, tmp_path_factory) -> tuple[BinaryNet, Bundle]:
    spec, shape, act_bits, pe, simd = NETS[request.param]
    model = random_net(spec, shape, act_bits)
    root = tmp_path_factory.mktemp(request.param)
    save_checkpoint(root / "c.pt", model, {"dataset": "random", "seed": 0}, {})
    return model, export_bundle(root / "c.pt", root / "bundle", HardwareConfig(pe=pe, simd=simd))


def float_codes(model: BinaryNet, pixels: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The float model's scores and the input of every binary layer: pixels 0..255 for
    layer 0, activation codes (integers in floats) for the others; [N, C, H, W] for layers
    that read feature maps, [N, F] for the others."""
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
             for layer in model.binary_layers]
    try:
        with torch.no_grad():
            scores = model(pixels)
    finally:
        for h in hooks:
            h.remove()
    step = model.act_clip / ((1 << model.act_bits) - 1)
    inputs = [pixels.reshape(len(pixels), *model.in_shape)]
    for previous, x in zip(model.layer_specs, seen[1:]):
        # a convolution's maps, [N, C, H, W], also where PyTorch has flattened them
        shape = previous.out_shape if previous.kind == "conv" else x.shape[1:]
        inputs.append(torch.round(x / step).reshape(len(x), *shape))
    return scores, inputs


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] (or [N, F]) as the hardware's flat HWC order, int64."""
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    return x.reshape(len(x), -1).numpy().astype(np.int64)


# --------------------------------------------------------------------------- against float

def test_golden_agrees_with_the_float_model(net):
    model, bundle = net
    images = randnet.random_images(1000, model.in_features, seed=4)
    pixels = torch.tensor(images, dtype=torch.float32)
    scores, inputs = float_codes(model, pixels)
    gold = golden.infer(bundle, images)
    assert (scores.argmax(1).numpy() == gold.classes).mean() >= 0.95
    assert np.array_equal(golden.classify(bundle, images), gold.classes)
    # scores: the float score in steps of 2**-score_frac_bits, rounded; a hidden code that
    # rounds the other way now and then moves a score by a step or two
    frac = bundle.manifest["arithmetic"]["score_frac_bits"]
    err = np.abs(scores.numpy() * 2.0 ** frac - gold.scores)
    assert (err <= 2).mean() >= 0.98 and np.median(err) <= 0.5
    # every hidden layer's codes, in HWC order, are the float model's, but for a few that
    # round the other way (a step off, or two where such differences add up)
    for i, codes in enumerate(inputs[1:]):
        assert gold.layers[i].shape == (len(images), codes[0].numel())
        off = np.abs(to_hwc(codes) - gold.layers[i])
        assert (off == 0).mean() >= 0.97 and (off <= 1).mean() >= 0.99, f"layer {i}"


def test_weight_columns_are_in_window_order_and_maps_in_hwc(net):
    """Each layer's accumulators from the bundle's ROM weights, on one image, are exactly the
    float model's convolution (or product) with its sign weights, before pooling."""
    model, bundle = net
    images = randnet.random_images(3, model.in_features, seed=5)[2:]
    _, inputs = float_codes(model, torch.tensor(images, dtype=torch.float32))
    for layer, binary, x in zip(bundle.layers, model.binary_layers, inputs):
        w = sign(binary.weight.detach())
        if layer.kind == "conv":
            want = F.conv2d(F.pad(x, (layer.padding,) * 4), w)       # pixels pad with 0 too
            maps = x.permute(0, 2, 3, 1).numpy().astype(np.int64)
            cols = golden.windows(maps, layer.kernel, layer.padding)
            acc = golden.accumulate(cols.reshape(-1, layer.in_features), layer.weights)
            got = acc.reshape(*cols.shape[:3], -1)
        else:
            want = x.reshape(1, -1) @ w.t()      # PyTorch's flattening, C·H·W
            got = golden.accumulate(to_hwc(x), layer.weights)
        assert np.array_equal(got, to_hwc(want).reshape(got.shape)), f"layer {layer.index}"


def test_windows_are_in_ky_kx_c_order():
    maps = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5) + 1          # [N, H, W, C], no zeros
    cols = golden.windows(maps, 3, 1)
    assert cols.shape == (2, 3, 4, 45)
    # the window at row 1, column 2: padded rows 1..3, columns 2..4 = maps rows 0..2, cols 1..3
    assert np.array_equal(cols[1, 1, 2], maps[1, 0:3, 1:4, :].reshape(-1))
    # at the corner the padding is 0: (ky, kx) = (0, *) and (*, 0) are outside
    corner = cols[0, 0, 0].reshape(3, 3, 5)
    assert (corner[0] == 0).all() and (corner[:, 0] == 0).all()
    assert np.array_equal(corner[1:, 1:], maps[0, 0:2, 0:2])
    assert golden.windows(maps, 1, 0).shape == (2, 3, 4, 5)


def test_batches_change_nothing(net, monkeypatch):
    model, bundle = net
    images = randnet.random_images(50, model.in_features, seed=7)
    whole = golden.infer(bundle, images)
    monkeypatch.setattr(golden, "BATCH_VALUES", 1)          # one image at a time
    one_by_one = golden.infer(bundle, images)
    for a, b in zip(whole.layers + whole.accs, one_by_one.layers + one_by_one.accs):
        assert np.array_equal(a, b)
    assert golden.infer(bundle, images[:0]).scores.shape == (0, bundle.num_classes)
    with pytest.raises(ValueError, match=str(model.in_features)):
        golden.infer(bundle, images[:, 1:])


# --------------------------------------------------------------------------- pooling

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("last", [False, True])
def test_pooling_codes_equals_pooling_accumulators(seed, last):
    rng = np.random.default_rng(seed)
    w = golden.layer_widths(27, 8, mul_bits=18, last=last, act_bits=4, score_bits=16)
    channels = 12
    k = rng.normal(0, 0.01, channels) * rng.choice([1, 30], channels)
    k[::4] *= -1
    k[1::6] = 0.0                                  # constant channels: M = 0
    mul, shift, bias = golden.requant_params(k, rng.normal(5, 10, channels), w)
    assert (mul < 0).any() and (mul == 0).any() and (mul > 0).any()
    pool = int(rng.choice([2, 3]))
    acc = rng.integers(w.acc_min, w.acc_max + 1, size=(5, 2 * pool, 3 * pool, channels))
    acc[0] = rng.integers(-300, 300, size=acc.shape[1:])    # near the steps, where codes tie
    pooled_acc = golden.requantize(golden.max_pool(acc, pool), mul, shift, bias, w.out_lo,
                                   w.out_hi)
    codes = golden.requantize(acc, mul, shift, bias, w.out_lo, w.out_hi)
    assert np.array_equal(golden.pool_codes(codes, mul, pool), pooled_acc)
    if (mul < 0).any():   # max-pooling the codes would be wrong for negative multipliers
        assert not np.array_equal(golden.max_pool(codes, pool), pooled_acc)


def test_networks_pool_the_same_either_way(net):
    """The whole network, pooling requantized codes (as the hardware will), is the golden
    model's pooling of accumulators, bit for bit."""
    model, bundle = net
    images = randnet.random_images(200, model.in_features, seed=6)
    gold = golden.infer(bundle, images)
    x = golden.input_pixels(bundle, images)
    for i, layer in enumerate(bundle.layers):
        lo, hi = layer.widths.out_lo, layer.widths.out_hi
        if layer.kind == "conv":
            c, h, w = layer.in_shape
            cols = golden.windows(x.reshape(-1, h, w, c), layer.kernel, layer.padding)
            acc = golden.accumulate(cols.reshape(-1, layer.in_features), layer.weights)
            q = golden.requantize(acc.reshape(len(x), h, w, -1), layer.mul, layer.shift,
                                  layer.bias, lo, hi)
            if layer.pool:
                q = golden.pool_codes(q, layer.mul, layer.pool)
        else:
            q = golden.requantize(golden.accumulate(x, layer.weights), layer.mul, layer.shift,
                                  layer.bias, lo, hi)
        x = q.reshape(len(x), -1)
        assert np.array_equal(x, gold.layers[i]), f"layer {i}"
    assert any((la.mul < 0).any() and la.pool for la in bundle.layers)


# --------------------------------------------------------------------------- the manifest

def test_manifest_round_trip(net):
    model, bundle = net
    m = json.loads((bundle.path / "manifest.json").read_text())
    c, h, w = model.in_shape
    assert m["io"]["pixel_order"] == "hwc"
    assert (m["io"]["n_in"], m["io"]["in_lanes"], m["io"]["in_beats"]) == (c * h * w, c, h * w)
    assert bundle.n_in == c * h * w and bundle.has_conv
    for spec, entry, layer in zip(model.layer_specs, m["layers"], load_bundle(bundle.path).layers):
        assert entry["kind"] == layer.kind == spec.kind
        assert (layer.in_shape, layer.out_shape) == (spec.in_shape, spec.out_shape)
        assert (layer.kernel, layer.padding, layer.pool) == (spec.kernel, spec.padding, spec.pool)
        assert layer.out_features == spec.out_channels
        if spec.kind == "conv":
            assert entry["in_shape"] == list(spec.in_shape)
            assert entry["out_shape"] == list(spec.out_shape)
            assert (entry["kernel"], entry["padding"], entry["pool"]) == (
                spec.kernel, spec.padding, spec.pool)
            assert layer.in_features == spec.kernel ** 2 * spec.in_channels
        else:
            assert "in_shape" not in entry and "pool" not in entry
            assert layer.in_features == spec.in_channels


def _mutated(bundle, edit) -> None:
    m = json.loads((bundle.path / "manifest.json").read_text())
    edit(m)
    (bundle.path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("field, edit", [
    ("layers[0].kind", lambda m: m["layers"][0].update(kind="pool")),
    ("layers[0].kind", lambda m: m["layers"][0].update(kind=3)),
    ("layers[2].kind", lambda m: m["layers"][2].pop("kind")),
    ("layers[3].kind", lambda m: m["layers"][3].update(kind="conv")),
    ("layers[2].in_shape", lambda m: m["layers"][2].update(kind="conv")),
    ("layers[1].in_shape", lambda m: m["layers"][1].update(in_shape=[4, 8, 8])),
    ("layers[0].in_shape", lambda m: m["layers"][0].update(in_shape=[2, 8])),
    ("layers[0].in_shape", lambda m: m["layers"][0].update(in_shape=[2, 8, 8.0])),
    ("layers[0].in_shape", lambda m: m["layers"][0].update(in_shape=[2, 8, True])),
    ("layers[0].in_shape", lambda m: m["layers"][0].update(in_shape=[2, 512, 512])),
    ("layers[0].kernel", lambda m: m["layers"][0].update(kernel=2)),
    ("layers[0].kernel", lambda m: m["layers"][0].update(kernel="3")),
    ("layers[0].padding", lambda m: m["layers"][0].update(padding=0)),
    ("layers[0].pool", lambda m: m["layers"][0].update(pool=3)),
    ("layers[0].pool", lambda m: m["layers"][0].update(pool=1)),
    ("layers[0].in_features", lambda m: m["layers"][0].update(kernel=5, padding=2)),
    ("layers[1].in_features", lambda m: m["layers"][1].update(in_features=37)),
    ("layers[0].out_shape", lambda m: m["layers"][0].update(out_shape=[4, 8, 8])),
    ("layers[0].out_shape", lambda m: m["layers"][0].pop("out_shape")),
    ("layers[2].in_features", lambda m: m["layers"][2].update(in_features=97)),
    ("io.pixel_order", lambda m: m["io"].update(pixel_order="chw")),
    ("io.pixel_order", lambda m: m["io"].pop("pixel_order")),
    ("io.in_lanes", lambda m: m["io"].update(in_lanes=1, in_beats=128)),
    ("io.n_in", lambda m: m["io"].update(n_in=64)),
])
def test_bad_conv_manifests_name_the_field(tmp_path, field, edit):
    spec, shape, act_bits, pe, simd = NETS["two-channels"]
    save_checkpoint(tmp_path / "c.pt", random_net(spec, shape, act_bits), {"dataset": "random",
                                                                           "seed": 0}, {})
    bundle = export_bundle(tmp_path / "c.pt", tmp_path / "b", HardwareConfig(pe=pe, simd=simd))
    _mutated(bundle, edit)
    with pytest.raises(BchwError) as e:
        load_bundle(bundle.path)
    assert e.value.field == field
    assert e.value.path == str(bundle.path / "manifest.json") and "\n" not in str(e.value)


def test_folding_of_a_conv_net_is_checked_against_its_matrices(tmp_path):
    spec, shape, act_bits, _, _ = NETS["two-channels"]   # matrices 4×18, 6×36, 5×96, 3×5
    save_checkpoint(tmp_path / "c.pt", random_net(spec, shape, act_bits), {"dataset": "random",
                                                                           "seed": 0}, {})
    ckpt = load_checkpoint(tmp_path / "c.pt")
    for hw, field, says in (
            (HardwareConfig(pe=[5, 1, 1, 1], simd=[1, 1, 1, 1]), "layers[0].pe", "4 outputs"),
            (HardwareConfig(pe=[1, 1, 1, 1], simd=[1, 37, 1, 1]), "layers[1].simd",
             "3×3×4 window"),
            (HardwareConfig(pe=[1, 1, 1], simd=[1, 1, 1]), "pe", "3 values"),
            (HardwareConfig(pe=[1, 1, 1, 1], simd=[1, 1, 1, 1], in_lanes=4), "in_lanes",
             "must be 2")):
        with pytest.raises(BchwError, match=says) as e:
            export_state(ckpt, tmp_path / "b", hw)
        assert e.value.field == field
        assert not (tmp_path / "b").exists()
    full = export_state(ckpt, tmp_path / "b", HardwareConfig(pe=[4, 6, 5, 3],
                                                             simd=[18, 36, 96, 5], in_lanes=2))
    assert [(la.nf, la.sf) for la in full.layers] == [(1, 1)] * 4
    ckpt["config"].pop("in_shape")
    with pytest.raises(BchwError) as e:
        export_state(ckpt, tmp_path / "c", HardwareConfig(pe=[1] * 4, simd=[1] * 4))
    assert e.value.field == "config.in_shape"


# --------------------------------------------------------------------------- the command line

def test_export_and_eval_a_trained_conv_net_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--spec", "8C3-MP2-16C3-MP2-10", "--dataset", "digits",
                 "--epochs", "2", "--batch-size", "32", "--lr-start", "0.03",
                 "--out", str(run)]) == 0
    bundle = tmp_path / "bundle"
    assert main(["export", str(run), "-o", str(bundle), "--pe", "3,5,4",
                 "--simd", "5,7,9", "--formats", "hex"]) == 0
    assert "3 layers" in capsys.readouterr().out
    assert main(["eval", str(bundle), "--json"]) == 0
    gold = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--float", "--json"]) == 0
    flt = json.loads(capsys.readouterr().out)
    assert gold["dataset"] == flt["dataset"] == "digits" and gold["images"] == flt["images"]
    assert flt["accuracy"] > 0.5 and abs(gold["accuracy"] - flt["accuracy"]) <= 0.02
    # the folding search: a throughput target met by the exported bundle's cycle model
    assert main(["export", str(run), "-o", str(tmp_path / "b2"), "--target-fps", "200000",
                 "--formats", "hex"]) == 0
    out = capsys.readouterr().out
    assert "folding search: interval" in out
    searched = load_bundle(tmp_path / "b2")
    assert 150e6 / perf.cycle_model(searched).interval >= 200_000
    assert f"interval {perf.cycle_model(searched).interval} cycles" in out
    # one beyond the sliding windows' rate: refused, naming the option, nothing written
    assert main(["export", str(run), "-o", str(tmp_path / "b3"), "--target-fps", "1e7"]) == 2
    err = capsys.readouterr().err
    assert "--target-fps" in err and err.count("\n") == 1
    assert not (tmp_path / "b3").exists()

