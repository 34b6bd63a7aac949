"""Property tests of the bundle loader: whatever manifest.json (or hex image) it is
given, ``load_bundle`` returns a bundle consistent with its ROM images or raises
:class:`BchwError` in one line naming a file of the bundle; never anything else."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bchw import randnet
from bchw.errors import BchwError
from bchw.export import Bundle, HardwareConfig, export_state, io_layout, load_bundle

MISSING = object()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Bundle, dict[str, Any], bytes]:
    """A 3-layer bundle whose folding divides nothing, its manifest and manifest text."""
    state = randnet.random_state([20, 13, 7, 5], act_bits=4, seed=1)
    bundle = export_state(state, tmp_path_factory.mktemp("fuzz") / "bundle",
                          HardwareConfig(pe=[4, 3, 5], simd=[6, 4, 7], in_lanes=6))
    text = (bundle.path / "manifest.json").read_bytes()
    return bundle, json.loads(text), text


def assert_same_hardware(got: Bundle, want: Bundle) -> None:
    assert len(got.layers) == len(want.layers)
    for a, b in zip(got.layers, want.layers):
        assert (a.in_features, a.out_features, a.in_bits, a.pe, a.simd, a.widths) == \
            (b.in_features, b.out_features, b.in_bits, b.pe, b.simd, b.widths)
        for name in ("weights", "mul", "shift", "bias"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    io = io_layout(got.n_in, got.io["in_lanes"], got.num_classes,
                   got.manifest["arithmetic"]["score_bits"])
    assert {key: got.io[key] for key in io} == io
    for key in ("act_bits", "mul_bits", "score_bits", "pixel_bits"):
        assert got.manifest["arithmetic"][key] == want.manifest["arithmetic"][key]
    assert got.dataset is None or isinstance(got.dataset, str)


def assert_one_line_error(e: BchwError, bundle_dir: Path) -> None:
    text = f"bchw: error: {e}"
    assert "\n" not in text and "\r" not in text, text
    assert e.path is not None and Path(e.path).parent == bundle_dir, text


# --------------------------------------------------------------------------- mutations

numbers = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([2**31, -2**31, 2**63, 10**12, (1 << 20) + 1, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12),
                   st.sampled_from(["", "bchw-bundle", "layer0_weights.hex", "../manifest.json",
                                    "/etc/passwd", "a\nb", "a\x00b"]))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def node_paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from node_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from node_paths(value, (*prefix, i))


def get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated_manifests(draw, manifest: dict) -> dict:
    """1 to 3 edits: a node replaced by another value, a key or item deleted, a key added."""
    m = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(node_paths(m))
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "add":
            dicts = [p for p in paths if isinstance(get(m, p), dict)]
            target = get(m, draw(st.sampled_from(dicts))) if dicts else None
            if target is not None:
                target[draw(st.text(max_size=10))] = draw(values)
            continue
        path = draw(st.sampled_from(paths[1:])) if len(paths) > 1 else ()
        if not path:
            m = draw(values)
            continue
        parent = get(m, path[:-1])
        if op == "replace":
            parent[path[-1]] = draw(values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return m


def differences(a: Any, b: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any, Any]]:
    """(path, old, new) for every node of ``b`` that is not the same JSON as in ``a``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            yield from differences(a.get(key, MISSING), b.get(key, MISSING), (*path, key))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, (*path, i))
    elif type(a) is not type(b) or a != b:
        yield path, a, b


def effect(path: tuple, old: Any, new: Any, n_in: int) -> str:
    """What a change must do: 'inert' (loads the same bundle), 'maybe' or 'fatal'."""
    if old is MISSING:
        return "inert"           # a key the loader does not read
    if path[:1] == ("model",) and len(path) > 1:
        dataset_ok = path[1] != "dataset" or new is MISSING or new is None \
            or isinstance(new, str)
        return "inert" if dataset_ok else "fatal"
    if len(path) == 5 and path[0] == "layers" and path[3] == "files" and path[4] != "hex":
        return "inert"           # only the hex images are read
    if path == ("arithmetic", "score_frac_bits") and type(new) is int and 0 <= new <= 16:
        return "inert"           # the scores' binary point: the hardware is the same
    if path == ("io", "in_lanes") and type(new) is int and 1 <= new <= n_in:
        return "maybe"           # another valid lane count may keep every other io field
    return "fatal"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_manifest_loads_consistently_or_is_a_bchw_error(reference, data):
    bundle, manifest, text = reference
    mutated = data.draw(mutated_manifests(manifest))
    effects = {effect(p, old, new, bundle.n_in)
               for p, old, new in differences(manifest, mutated)}
    path = bundle.path / "manifest.json"
    path.write_text(json.dumps(mutated))
    try:
        loaded = load_bundle(bundle.path)
    except BchwError as e:
        event(f"refused: {sorted(effects)}")
        assert_one_line_error(e, bundle.path)
        assert effects - {"inert"}, f"refused a manifest that means the same: {e}"
    else:
        event(f"loaded: {sorted(effects)}")
        assert "fatal" not in effects, "loaded a manifest that contradicts the bundle"
        assert_same_hardware(loaded, bundle)
        if effects <= {"inert"}:
            assert loaded.io["in_lanes"] == bundle.io["in_lanes"]
    finally:
        path.write_bytes(text)


def spliced(text: bytes) -> st.SearchStrategy[bytes]:
    """The valid manifest cut, or with a run of bytes replaced or inserted."""
    return st.tuples(st.integers(0, len(text)), st.integers(0, 40), st.binary(max_size=40)) \
        .map(lambda t: text[:t[0]] + t[2] + text[t[0] + t[1]:])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_arbitrary_bytes_as_manifest_are_a_bchw_error(reference, data):
    bundle, _, text = reference
    junk = data.draw(st.one_of(
        st.binary(max_size=600),
        st.text(max_size=200).map(str.encode),
        values.map(lambda v: json.dumps(v).encode()),
        spliced(text),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 6000).map(lambda n: b'{"version": ' + b"9" * n + b"}"),
    ))
    path = bundle.path / "manifest.json"
    path.write_bytes(junk)
    try:
        loaded = load_bundle(bundle.path)
    except BchwError as e:
        assert_one_line_error(e, bundle.path)
    else:
        assert_same_hardware(loaded, bundle)
    finally:
        path.write_bytes(text)


HEX_IMAGES = ["layer0_weights.hex", "layer1_params.hex", "layer2_weights.hex",
              "layer2_params.hex"]


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(HEX_IMAGES), data=st.data())
def test_mutated_hex_image_is_a_bchw_error_naming_it(reference, name, data):
    bundle, _, _ = reference
    path = bundle.path / name
    good = path.read_bytes()
    path.write_bytes(data.draw(spliced(good)))
    try:
        loaded = load_bundle(bundle.path)
    except BchwError as e:
        assert_one_line_error(e, bundle.path)
        assert e.path == str(path)
    else:
        # a valid image of the same shape: only its own layer's contents may differ
        index = int(name[5])
        for la, ref in zip(loaded.layers, bundle.layers):
            if la.index != index:
                assert np.array_equal(la.weights, ref.weights)
                assert np.array_equal(la.mul, ref.mul) and np.array_equal(la.bias, ref.bias)
    finally:
        path.write_bytes(good)
