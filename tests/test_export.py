import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bchw import randnet, romfmt
from bchw.errors import BchwError
from bchw.export import (HardwareConfig, export_state, load_bundle, pack_params, pack_weights,
                         unpack_params, unpack_weights)
from bchw.golden import layer_widths


@settings(max_examples=60, deadline=None)
@given(n_out=st.integers(1, 40), n_in=st.integers(1, 40), pe=st.integers(1, 40),
       simd=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_weights_pack_round_trip(n_out, n_in, pe, simd, seed):
    pe, simd = min(pe, n_out), min(simd, n_in)
    w = np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(n_out, n_in))
    words = pack_weights(w, pe, simd)
    assert len(words) == -(-n_out // pe) * -(-n_in // simd)
    assert all(0 <= x < 1 << (pe * simd) for x in words)
    assert np.array_equal(unpack_weights(words, n_out, n_in, pe, simd), w)


def test_weights_bit_order_is_pinned():
    # neuron 1, input 2 is the only +1: with PE=2, SIMD=4 it is bit p*SIMD+s = 1*4+2 of word 0
    w = -np.ones((2, 4), dtype=np.int8)
    w[1, 2] = 1
    assert pack_weights(w, 2, 4) == [1 << 6]
    # with SIMD=2 it sits in synapse fold 1 (word 1), bit 1*2+0
    assert pack_weights(w, 2, 2) == [0, 1 << 2]


@settings(max_examples=40, deadline=None)
@given(n_out=st.integers(1, 20), pe=st.integers(1, 20), seed=st.integers(0, 2**16),
       last=st.booleans())
def test_params_pack_round_trip(n_out, pe, seed, last):
    pe = min(pe, n_out)
    w = layer_widths(50, 8, mul_bits=18, last=last, act_bits=8, score_bits=16)
    rng = np.random.default_rng(seed)
    mul = rng.integers(-(1 << 17), 1 << 17, n_out)
    shift = rng.integers(0, w.shift_max + 1, n_out)
    bias = rng.integers(-(1 << (w.bias_bits - 1)), 1 << (w.bias_bits - 1), n_out)
    words = pack_params(mul, shift, bias, pe, w)
    got = unpack_params(words, n_out, pe, w)
    for a, b in zip(got, (mul, shift, bias)):
        assert np.array_equal(a, b)


def test_bundle_round_trip(small_bundle):
    b = load_bundle(small_bundle.path)
    assert [la.out_features for la in b.layers] == [13, 7, 5]
    assert b.io["in_beats"] == 4 and b.io["class_bits"] == 3
    for fmt in romfmt.FORMATS:
        layer = b.layers[1]
        words = romfmt.read_rom(b.path / f"layer1_weights.{fmt}", layer.weight_width)
        assert np.array_equal(unpack_weights(words, 7, 13, layer.pe, layer.simd), layer.weights)


def _manifest(bundle):
    return json.loads((bundle.path / "manifest.json").read_text())


@pytest.mark.parametrize("path, value, field", [
    (("version",), 2, "version"),
    (("schema",), "other", "schema"),
    (("layers", 0, "pe"), 0, "layers[0].pe"),
    (("layers", 1, "in_features"), 14, "layers[1].in_features"),
    (("layers", 1, "acc_bits"), 3, "layers[1].acc_bits"),
    (("layers", 2, "sf"), 9, "layers[2].sf"),
    (("layers", 0, "weights", "width"), 25, "layers[0].weights.width"),
    (("layers", 0, "weights", "files", "hex"), "../x.hex", "layers[0].weights.files.hex"),
    (("io", "in_lanes"), "six", "io.in_lanes"),
    (("io", "class_bits"), 8, "io.class_bits"),
    (("arithmetic", "act_bits"), 0, "arithmetic.act_bits"),
    (("arithmetic", "mul_bits"), 18.5, "arithmetic.mul_bits"),
])
def test_manifest_wrong_field_is_named(small_bundle, path, value, field):
    m = _manifest(small_bundle)
    node = m
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (small_bundle.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BchwError) as e:
        load_bundle(small_bundle.path)
    assert e.value.field == field
    assert "manifest.json" in str(e.value)


def test_rom_of_wrong_width_is_rejected(small_bundle):
    hexfile = small_bundle.path / "layer0_weights.hex"
    lines = hexfile.read_text().split()
    hexfile.write_text("\n".join("0" + w for w in lines) + "\n")
    with pytest.raises(BchwError) as e:
        load_bundle(small_bundle.path)
    assert "layer0_weights.hex" in str(e.value) and "line 1" in str(e.value)


def test_rom_missing_and_short(small_bundle):
    hexfile = small_bundle.path / "layer2_params.hex"
    hexfile.write_text(hexfile.read_text().split("\n", 1)[1] or "\n")
    with pytest.raises(BchwError, match="layer2_params.hex"):
        load_bundle(small_bundle.path)
    hexfile.unlink()
    with pytest.raises(BchwError, match="layer2_params.hex"):
        load_bundle(small_bundle.path)


def test_folding_that_does_not_fit(tmp_path):
    state = randnet.random_state([20, 13, 5], seed=0)
    for hw, field in ((HardwareConfig(pe=[14, 5], simd=[4, 13]), "layers[0].pe"),
                      (HardwareConfig(pe=[13, 5], simd=[4, 14]), "layers[1].simd"),
                      (HardwareConfig(pe=[13], simd=[4]), "pe"),
                      (HardwareConfig(pe=[1, 1], simd=[1, 1], in_lanes=21), "in_lanes")):
        with pytest.raises(BchwError) as e:
            export_state(state, tmp_path / "b", hw)
        assert e.value.field == field
        assert not (tmp_path / "b").exists(), "nothing half-written"


def test_hardware_config_file_errors(tmp_path):
    cfg = tmp_path / "hw.json"
    cfg.write_text('{"layers": [{"pe": 4, "simd": "x"}]}')
    with pytest.raises(BchwError) as e:
        HardwareConfig.from_file(cfg)
    assert e.value.field == "layers[0].simd" and "hw.json" in str(e.value)
    cfg.write_text('{"layers": [{"pe": 4, "simd": 2}], "lanes": 3}')
    with pytest.raises(BchwError, match="unknown field"):
        HardwareConfig.from_file(cfg)
    cfg.write_text("{not json")
    with pytest.raises(BchwError, match="not valid JSON"):
        HardwareConfig.from_file(cfg)


def test_failed_export_keeps_the_old_bundle(tmp_path, small_bundle):
    before = (small_bundle.path / "manifest.json").read_bytes()
    state = randnet.random_state([20, 13, 7, 5], seed=3)
    with pytest.raises(BchwError):
        export_state(state, small_bundle.path, HardwareConfig(pe=[99, 1, 1], simd=[1, 1, 1]))
    assert (small_bundle.path / "manifest.json").read_bytes() == before
    shutil.rmtree(small_bundle.path)


def test_mlp_manifests_have_no_convolution_fields(small_bundle):
    """Layer kinds, shapes and the pixel order are written for networks with convolutions
    only, so MLP bundles stay byte for byte what they were before convolutions."""
    m = _manifest(small_bundle)
    assert "pixel_order" not in m["io"]
    new_fields = {"kind", "in_shape", "kernel", "padding", "pool", "out_shape"}
    assert not any(new_fields & set(entry) for entry in m["layers"])
    assert not small_bundle.has_conv and small_bundle.n_in == 20
    for layer in small_bundle.layers:
        assert (layer.kind, layer.kernel, layer.padding, layer.pool) == ("fc", 0, 0, 0)
        assert layer.in_shape == (layer.in_features, 1, 1)
        assert layer.out_shape == (layer.out_features, 1, 1)
    # a manifest that says "fc" where it may say nothing means the same
    for entry in m["layers"]:
        entry["kind"] = "fc"
    (small_bundle.path / "manifest.json").write_text(json.dumps(m))
    assert [la.kind for la in load_bundle(small_bundle.path).layers] == ["fc"] * 3
