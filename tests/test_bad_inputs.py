"""Bad input, everywhere: a corpus of broken files for every loader, run through the CLI.

Each kind of input (checkpoint, hardware config, bundle manifest, ROM images,
IDX files, sample .npz) is generated here from a valid reference and then
broken in one way per case: truncated, empty, wrong type or width, NaN and
infinite values, absurd sizes, wrong schema, missing or unknown fields, paths
out of the bundle, pickled code. Every case must end in exit status 2 and one
line on stderr, ``bchw: error: FILE: field 'F': ...``, naming the file (and
the field where there is one), with no traceback and nothing written.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import pickle
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bchw import randnet, romfmt
from bchw.cli import main
from bchw.errors import BchwError
from bchw.export import HardwareConfig, export_state

SIZES = [12, 9, 4]
PE, SIMD, LANES = [3, 2], [4, 3], 4
FOLDING = ["--pe", "3,2", "--simd", "4,3"]
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- references

def reference_state() -> dict[str, Any]:
    return randnet.random_state(SIZES, seed=2)


def saved(obj: Any, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("refs")
    state = reference_state()
    bundle = export_state(state, root / "bundle", HardwareConfig(pe=PE, simd=SIMD,
                                                                 in_lanes=LANES)).path
    buf = io.BytesIO()
    np.savez_compressed(buf, images=randnet.random_images(5, SIZES[0]),
                        labels=np.arange(5) % SIZES[-1])
    rng = np.random.default_rng(0)
    return {
        "state": state,
        "checkpoint": saved(state),
        "bundle": bundle,
        "manifest": json.loads((bundle / "manifest.json").read_text()),
        "hardware": {"layers": [{"pe": p, "simd": s} for p, s in zip(PE, SIMD)],
                     "in_lanes": LANES},
        "samples": buf.getvalue(),
        "idx": {"train-images-idx3-ubyte": idx(rng.integers(0, 256, (12, 4, 4))),
                "train-labels-idx1-ubyte": idx(rng.integers(0, 10, 12)),
                "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, (6, 4, 4))),
                "t10k-labels-idx1-ubyte": idx(rng.integers(0, 10, 6))},
    }


def idx(array: np.ndarray, code: int = 0x08, dims: tuple[int, ...] | None = None,
        dtype: str = ">u1") -> bytes:
    dims = array.shape if dims is None else dims
    return (bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
            + np.asarray(array).astype(dtype).tobytes())


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1
            for p in sorted(root.rglob("*"))}


def assert_user_error(capsys, tmp_path: Path, argv: list[Any], path: Any,
                      field: str | None) -> str:
    """Run the CLI: status 2, one line naming ``path`` and ``field``, nothing written."""
    before = snapshot(tmp_path)
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.startswith("bchw: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert str(path) in err, (str(path), err)
    if field is not None:
        assert f"field '{field}'" in err, (field, err)
    assert out == ""
    assert snapshot(tmp_path) == before, "a failed command wrote something"
    return err


# --------------------------------------------------------------------------- checkpoints

def at(obj: Any, path: tuple) -> tuple[Any, Any]:
    for key in path[:-1]:
        obj = obj[key]
    return obj, path[-1]


def setting(*path_value: Any) -> Callable[[dict], Any]:
    *path, value = path_value

    def mutate(state: dict) -> None:
        parent, key = at(state, tuple(path))
        parent[key] = value() if callable(value) else value
    return mutate


def deleting(*path: Any) -> Callable[[dict], Any]:
    def mutate(state: dict) -> None:
        parent, key = at(state, path)
        del parent[key]
    return mutate


def filling(layer: int, key: str, value: float, index: int = 0) -> Callable[[dict], Any]:
    def mutate(state: dict) -> None:
        state["layers"][layer][key].view(-1)[index] = value
    return mutate


def tensor(layer: int, key: str, fn: Callable[[torch.Tensor], Any]) -> Callable[[dict], Any]:
    def mutate(state: dict) -> None:
        state["layers"][layer][key] = fn(state["layers"][layer][key])
    return mutate


def whole(value: Any) -> Callable[[dict], Any]:
    return lambda state: value


CHECKPOINT_STATES = [
    # (id, mutation of the state dict, field named)
    ("not-a-dict", whole([1, 2, 3]), None),
    ("a-tensor", whole(torch.zeros(3)), None),
    ("format-missing", deleting("format"), "format"),
    ("format-wrong", setting("format", "bchw-bundle"), "format"),
    ("format-int", setting("format", 1), "format"),
    ("format-multiline", setting("format", "bchw\ncheckpoint\n" * 50), "format"),
    ("version-missing", deleting("version"), "version"),
    ("version-2", setting("version", 2), "version"),
    ("version-0", setting("version", 0), "version"),
    ("version-str", setting("version", "1"), "version"),
    ("version-bool", setting("version", True), "version"),
    ("version-float", setting("version", 1.0), "version"),
    ("version-huge", setting("version", 10 ** 30), "version"),
    ("version-unpicklable", setting("version", 10 ** 5000), None),
    ("config-missing", deleting("config"), "config"),
    ("config-list", setting("config", [1, 2]), "config"),
    ("spec-missing", deleting("config", "spec"), "config.spec"),
    ("spec-int", setting("config", "spec", 12), "config.spec"),
    ("spec-list", setting("config", "spec", [12, 9, 4]), "config.spec"),
    ("spec-garbage", setting("config", "spec", "12-x-4"), "config.spec"),
    ("spec-one-size", setting("config", "spec", "12"), "config.spec"),
    ("spec-zero", setting("config", "spec", "0-9-4"), "config.spec"),
    ("spec-negative", setting("config", "spec", "12--9-4"), "config.spec"),
    ("spec-absurd", setting("config", "spec", "1000000000000-9-4"), "layers[0].weight"),
    ("spec-shape-mismatch", setting("config", "spec", "12-9-5"), "layers[1].weight"),
    ("spec-more-layers", setting("config", "spec", "12-9-4-3"), "layers"),
    ("act-bits-missing", deleting("config", "act_bits"), "config.act_bits"),
    ("act-bits-zero", setting("config", "act_bits", 0), "config.act_bits"),
    ("act-bits-17", setting("config", "act_bits", 17), "config.act_bits"),
    ("act-bits-float", setting("config", "act_bits", 8.0), "config.act_bits"),
    ("act-bits-bool", setting("config", "act_bits", True), "config.act_bits"),
    ("act-bits-str", setting("config", "act_bits", "8"), "config.act_bits"),
    ("act-bits-huge", setting("config", "act_bits", 10 ** 300), "config.act_bits"),
    ("act-clip-nan", setting("config", "act_clip", NAN), "config.act_clip"),
    ("act-clip-inf", setting("config", "act_clip", INF), "config.act_clip"),
    ("act-clip-minus-inf", setting("config", "act_clip", -INF), "config.act_clip"),
    ("act-clip-zero", setting("config", "act_clip", 0.0), "config.act_clip"),
    ("act-clip-negative", setting("config", "act_clip", -2.0), "config.act_clip"),
    ("act-clip-denormal", setting("config", "act_clip", 5e-324), "config.act_clip"),
    ("act-clip-huge-int", setting("config", "act_clip", 10 ** 400), "config.act_clip"),
    ("act-clip-str", setting("config", "act_clip", "2.0"), "config.act_clip"),
    ("act-clip-none", setting("config", "act_clip", None), "config.act_clip"),
    ("binarize-unknown", setting("config", "binarize", "sometimes"), "config.binarize"),
    ("binarize-int", setting("config", "binarize", 1), "config.binarize"),
    ("binarize-float-baseline", setting("config", "binarize", "float"), "config.binarize"),
    ("float-act-str", setting("config", "float_act", "no"), "config.float_act"),
    ("float-act-true", setting("config", "float_act", True), "config.float_act"),
    ("dataset-none", setting("config", "dataset", None), "config.dataset"),
    ("seed-float", setting("config", "seed", 0.5), "config.seed"),
    ("seed-missing", deleting("config", "seed"), "config.seed"),
    ("input-norm-missing", deleting("input_norm"), "input_norm"),
    ("input-norm-list", setting("input_norm", [0.3, 0.3]), "input_norm"),
    ("mean-nan", setting("input_norm", "mean", NAN), "input_norm.mean"),
    ("mean-inf", setting("input_norm", "mean", INF), "input_norm.mean"),
    ("mean-huge", setting("input_norm", "mean", 1e308), "input_norm.mean"),
    ("mean-str", setting("input_norm", "mean", "0.3"), "input_norm.mean"),
    ("std-zero", setting("input_norm", "std", 0.0), "input_norm.std"),
    ("std-negative", setting("input_norm", "std", -0.3), "input_norm.std"),
    ("std-nan", setting("input_norm", "std", NAN), "input_norm.std"),
    ("std-minus-inf", setting("input_norm", "std", -INF), "input_norm.std"),
    ("std-denormal", setting("input_norm", "std", 5e-324), "input_norm.std"),
    ("std-bool", setting("input_norm", "std", True), "input_norm.std"),
    ("scale-beyond-multiplier", setting("input_norm", "std", 1e-29), "layers[0]"),
    ("layers-missing", deleting("layers"), "layers"),
    ("layers-dict", setting("layers", {"0": 1}), "layers"),
    ("layers-too-few", deleting("layers", 1), "layers"),
    ("layers-too-many", lambda s: s["layers"].append(s["layers"][-1]), "layers"),
    ("layer-list", setting("layers", 1, [1, 2]), "layers[1]"),
    ("layer-none", setting("layers", 0, None), "layers[0]"),
    ("weight-missing", deleting("layers", 0, "weight"), "layers[0].weight"),
    ("weight-list", setting("layers", 0, "weight", [[1.0] * 12] * 9), "layers[0].weight"),
    ("weight-numpy", setting("layers", 0, "weight", np.ones((9, 12))), None),  # not unpickled
    ("weight-int", tensor(0, "weight", lambda t: t.sign().int()), "layers[0].weight"),
    ("weight-bool", tensor(0, "weight", lambda t: t > 0), "layers[0].weight"),
    ("weight-complex", tensor(0, "weight", lambda t: t.to(torch.complex64)),
     "layers[0].weight"),
    ("weight-transposed", tensor(0, "weight", lambda t: t.T.contiguous()), "layers[0].weight"),
    ("weight-flat", tensor(0, "weight", lambda t: t.reshape(-1)), "layers[0].weight"),
    ("weight-scalar", tensor(0, "weight", lambda t: t[0, 0].clone()), "layers[0].weight"),
    ("weight-sparse", tensor(0, "weight", lambda t: t.to_sparse()), "layers[0].weight"),
    ("weight-meta", tensor(0, "weight", lambda t: torch.empty(9, 12, device="meta")),
     "layers[0].weight"),
    ("weight-nan", filling(0, "weight", NAN, 17), "layers[0].weight"),
    ("weight-inf", filling(1, "weight", INF, 3), "layers[1].weight"),
    ("weight-minus-inf", filling(0, "weight", -INF), "layers[0].weight"),
    ("weight-huge", filling(0, "weight", 1e31), "layers[0].weight"),
    ("weight-float64-huge", tensor(0, "weight", lambda t: t.double().fill_(1e300)),
     "layers[0].weight"),
    ("bn-mean-nan", filling(1, "bn_mean", NAN), "layers[1].bn_mean"),
    ("bn-mean-inf", filling(0, "bn_mean", INF, 8), "layers[0].bn_mean"),
    ("bn-var-negative", filling(0, "bn_var", -1.0), "layers[0].bn_var"),
    ("bn-var-nan", filling(1, "bn_var", NAN), "layers[1].bn_var"),
    ("bn-var-wrong-size", tensor(1, "bn_var", lambda t: torch.ones(5)), "layers[1].bn_var"),
    ("bn-weight-minus-inf", filling(0, "bn_weight", -INF), "layers[0].bn_weight"),
    ("bn-weight-huge", filling(0, "bn_weight", 3e38), "layers[0].bn_weight"),
    ("bn-bias-nan", filling(1, "bn_bias", NAN, 2), "layers[1].bn_bias"),
    ("bn-bias-missing", deleting("layers", 1, "bn_bias"), "layers[1].bn_bias"),
    ("bn-eps-zero", setting("layers", 0, "bn_eps", 0.0), "layers[0].bn_eps"),
    ("bn-eps-negative", setting("layers", 0, "bn_eps", -1e-4), "layers[0].bn_eps"),
    ("bn-eps-nan", setting("layers", 1, "bn_eps", NAN), "layers[1].bn_eps"),
    ("bn-eps-inf", setting("layers", 1, "bn_eps", INF), "layers[1].bn_eps"),
    ("bn-eps-denormal", setting("layers", 1, "bn_eps", 5e-324), "layers[1].bn_eps"),
    ("bn-eps-huge-int", setting("layers", 0, "bn_eps", 10 ** 400), "layers[0].bn_eps"),
    ("bn-eps-str", setting("layers", 0, "bn_eps", "1e-4"), "layers[0].bn_eps"),
    ("bn-eps-tensor", setting("layers", 0, "bn_eps", lambda: torch.tensor(1e-4)),
     "layers[0].bn_eps"),
    ("metrics-missing", deleting("metrics"), "metrics"),
    ("metrics-list", setting("metrics", []), "metrics"),
]


def truncated(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[:int(len(data) * fraction)]


def flipped(start: int, length: int) -> Callable[[bytes], bytes]:
    return lambda data: data[:start] + bytes(b ^ 0xFF for b in data[start:start + length]) \
        + data[start + length:]


def _zip_without_pickle(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("data.pkl"):
                dst.writestr(info, src.read(info))
    return buf.getvalue()


CHECKPOINT_BYTES = [
    # (id, change to the bytes of a valid checkpoint)
    ("empty", lambda data: b""),
    ("one-byte", lambda data: data[:1]),
    ("truncated-10", lambda data: data[:10]),
    ("truncated-100", lambda data: data[:100]),
    ("truncated-1000", lambda data: data[:1000]),
    ("truncated-half", truncated(0.5)),
    ("truncated-90pc", truncated(0.9)),
    ("truncated-last-byte", lambda data: data[:-1]),
    ("flipped-header", flipped(0, 8)),
    ("flipped-middle", flipped(300, 200)),
    ("text", lambda data: b"not a checkpoint\n" * 20),
    ("json", lambda data: json.dumps({"format": "bchw-checkpoint"}).encode()),
    ("numpy-npz", lambda data: _npz(images=np.zeros(3))),
    ("zip-without-pickle", _zip_without_pickle),
    ("zeros", lambda data: bytes(len(data))),
]


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def export_argv(ckpt: Path, out: Path) -> list[Any]:
    return ["export", ckpt, "-o", out, *FOLDING]


@pytest.mark.parametrize("mutate, field", [c[1:] for c in CHECKPOINT_STATES],
                         ids=[c[0] for c in CHECKPOINT_STATES])
def test_checkpoint_field(capsys, tmp_path, mutate, field):
    state = reference_state()
    changed = mutate(state)
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(saved(state if changed is None else changed))
    assert_user_error(capsys, tmp_path, export_argv(ckpt, tmp_path / "out"), ckpt, field)


@pytest.mark.parametrize("corrupt", [c[1] for c in CHECKPOINT_BYTES],
                         ids=[c[0] for c in CHECKPOINT_BYTES])
def test_checkpoint_file(capsys, tmp_path, refs, corrupt):
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(corrupt(refs["checkpoint"]))
    assert_user_error(capsys, tmp_path, export_argv(ckpt, tmp_path / "out"), ckpt, None)


def test_checkpoint_that_is_a_directory_without_one(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert_user_error(capsys, tmp_path, export_argv(run, tmp_path / "out"), run, None)


class Exploit:
    """Unpickling this object creates ``marker``, as any code a pickle may run would."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_exploit_runs_when_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Exploit(marker)))
    assert marker.exists(), "the payload the checkpoint cases rely on works"


PICKLED_CODE = [
    ("whole-object", lambda m: saved(Exploit(m))),
    ("in-a-checkpoint", lambda m: saved({**reference_state(), "metrics": {"x": Exploit(m)}})),
    ("legacy-format", lambda m: saved({**reference_state(), "config": Exploit(m)},
                                      _use_new_zipfile_serialization=False)),
    ("plain-pickle", lambda m: pickle.dumps({**reference_state(), "format": Exploit(m)},
                                            protocol=2)),
    ("pickle-protocol-0", lambda m: pickle.dumps(Exploit(m), protocol=0)),
]


@pytest.mark.parametrize("make", [c[1] for c in PICKLED_CODE], ids=[c[0] for c in PICKLED_CODE])
def test_checkpoint_with_pickled_code_is_refused_without_running_it(capsys, tmp_path, make):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    ckpt.write_bytes(make(marker))
    assert not marker.exists()
    assert_user_error(capsys, tmp_path, export_argv(ckpt, tmp_path / "out"), ckpt, None)
    assert not marker.exists(), "loading the checkpoint ran pickled code"
    rc = main(["eval", str(ckpt), "--float", "--samples", str(ckpt)])
    capsys.readouterr()
    assert rc == 2 and not marker.exists()


# --------------------------------------------------------------------------- hardware config

def config_edit(fn: Callable[[dict], Any]) -> Callable[[dict], str]:
    def make(cfg: dict) -> str:
        cfg = copy.deepcopy(cfg)
        fn(cfg)
        return json.dumps(cfg)
    return make


def config_set(*path_value: Any) -> Callable[[dict], str]:
    return config_edit(setting(*path_value))


def config_text(text: str | bytes) -> Callable[[dict], str | bytes]:
    return lambda cfg: text


def cut(n: int) -> Callable[[dict], str]:
    return lambda cfg: json.dumps(cfg)[:n]


HARDWARE_CASES = [
    ("empty", config_text(""), None),
    ("whitespace", config_text("  \n"), None),
    ("truncated-1", cut(1), None),
    ("truncated-20", cut(20), None),
    ("truncated-last", lambda cfg: json.dumps(cfg)[:-1], None),
    ("not-json", config_text("layers: [pe: 3]"), None),
    ("binary", config_text(b"\xff\xfe\x00\x01"), None),
    ("utf16", lambda cfg: json.dumps(cfg).encode("utf-16"), None),
    ("huge-number", config_text('{"in_lanes": ' + "9" * 5000 + "}"), None),
    ("nested-deep", config_text("[" * 100_000 + "]" * 100_000), None),
    ("top-list", config_text("[]"), None),
    ("top-string", config_text('"layers"'), None),
    ("top-null", config_text("null"), None),
    ("unknown-field", config_set("lanes", 4), "lanes"),
    ("layers-missing", config_edit(deleting("layers")), "layers"),
    ("layers-empty", config_set("layers", []), "layers"),
    ("layers-object", config_set("layers", {"pe": 3, "simd": 4}), "layers"),
    ("layers-string", config_set("layers", "3x4"), "layers"),
    ("layer-list", config_set("layers", 0, [3, 4]), "layers[0]"),
    ("layer-null", config_set("layers", 1, None), "layers[1]"),
    ("layer-missing-simd", config_edit(deleting("layers", 1, "simd")), "layers[1]"),
    ("layer-extra-field", config_set("layers", 0, "lanes", 4), "layers[0]"),
    ("pe-string", config_set("layers", 0, "pe", "3"), "layers[0].pe"),
    ("pe-float", config_set("layers", 0, "pe", 3.0), "layers[0].pe"),
    ("pe-bool", config_set("layers", 0, "pe", True), "layers[0].pe"),
    ("pe-null", config_set("layers", 0, "pe", None), "layers[0].pe"),
    ("pe-list", config_set("layers", 0, "pe", [3]), "layers[0].pe"),
    ("pe-zero", config_set("layers", 0, "pe", 0), "layers[0].pe"),
    ("pe-negative", config_set("layers", 1, "pe", -2), "layers[1].pe"),
    ("pe-1e12", config_set("layers", 0, "pe", 10 ** 12), "layers[0].pe"),
    ("pe-1e12-float", config_set("layers", 0, "pe", 1e12), "layers[0].pe"),
    ("simd-nan", config_set("layers", 1, "simd", NAN), "layers[1].simd"),
    ("simd-inf", config_set("layers", 1, "simd", INF), "layers[1].simd"),
    ("simd-minus-inf", config_set("layers", 1, "simd", -INF), "layers[1].simd"),
    ("in-lanes-zero", config_set("in_lanes", 0), "in_lanes"),
    ("in-lanes-huge", config_set("in_lanes", 5000), "in_lanes"),
    ("in-lanes-string", config_set("in_lanes", "4"), "in_lanes"),
    ("in-lanes-bool", config_set("in_lanes", False), "in_lanes"),
    ("mul-bits-1", config_set("mul_bits", 1), "mul_bits"),
    ("mul-bits-33", config_set("mul_bits", 33), "mul_bits"),
    ("score-bits-float", config_set("score_bits", 16.5), "score_bits"),
    ("score-frac-bits-negative", config_set("score_frac_bits", -1), "score_frac_bits"),
    ("score-frac-bits-null", config_set("score_frac_bits", None), "score_frac_bits"),
    ("layer-count", config_edit(lambda c: c["layers"].pop()), "layers"),
    ("pe-beyond-outputs", config_set("layers", 0, "pe", 10), "layers[0].pe"),
    ("in-lanes-beyond-inputs", config_set("in_lanes", 13), "in_lanes"),
]


def _params(cases: list) -> list:
    """(id, *values) tuples as params with those ids."""
    return [pytest.param(*values[1:], id=values[0]) for values in cases]


@pytest.mark.parametrize("make, field", _params(HARDWARE_CASES))
def test_hardware_config(capsys, tmp_path, refs, make, field):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(refs["checkpoint"])
    cfg = tmp_path / "hardware.json"
    text = make(refs["hardware"])
    cfg.write_bytes(text.encode() if isinstance(text, str) else text)
    assert_user_error(capsys, tmp_path, ["export", ckpt, "-o", tmp_path / "out", "--config", cfg],
                      cfg, field)


def test_hardware_config_reference_is_valid(capsys, tmp_path, refs):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(refs["checkpoint"])
    cfg = tmp_path / "hardware.json"
    cfg.write_text(json.dumps(refs["hardware"]))
    assert main(["export", str(ckpt), "-o", str(tmp_path / "out"), "--config", str(cfg)]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- bundle manifest

def manifest_set(*path_value: Any) -> Callable[[dict], str]:
    return config_edit(setting(*path_value))


def manifest_del(*path: Any) -> Callable[[dict], str]:
    return config_edit(deleting(*path))


L0, L1 = ("layers", 0), ("layers", 1)
W0_HEX = (*L0, "weights", "files", "hex")
P1_HEX = (*L1, "params", "files", "hex")

MANIFEST_CASES = [
    # (id, manifest text from the valid manifest, field named)
    ("empty", config_text(""), None),
    ("truncated-1", cut(1), None),
    ("truncated-100", cut(100), None),
    ("truncated-half", lambda m: json.dumps(m)[:len(json.dumps(m)) // 2], None),
    ("truncated-last", lambda m: json.dumps(m)[:-1], None),
    ("not-json", config_text("schema = bchw-bundle\n"), None),
    ("binary", config_text(bytes(range(256))), None),
    ("utf16", lambda m: json.dumps(m).encode("utf-16"), None),
    ("utf8-bom", lambda m: b"\xef\xbb\xbf" + json.dumps(m).encode(), None),
    ("huge-number", config_text('{"version": ' + "1" * 5000 + "}"), None),
    ("nested-deep", config_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}"), None),
    ("top-list", config_text("[]"), None),
    ("top-null", config_text("null"), None),
    ("top-nan", config_text("NaN"), None),
    ("schema-missing", manifest_del("schema"), "schema"),
    ("schema-wrong", manifest_set("schema", "bchw-checkpoint"), "schema"),
    ("schema-int", manifest_set("schema", 1), "schema"),
    ("schema-multiline", manifest_set("schema", "bchw\nbundle"), "schema"),
    ("version-missing", manifest_del("version"), "version"),
    ("version-2", manifest_set("version", 2), "version"),
    ("version-0", manifest_set("version", 0), "version"),
    ("version-string", manifest_set("version", "1"), "version"),
    ("version-float", manifest_set("version", 1.0), "version"),
    ("version-bool", manifest_set("version", True), "version"),
    ("version-nan", manifest_set("version", NAN), "version"),
    ("version-1e12", manifest_set("version", 10 ** 12), "version"),
    ("model-missing", manifest_del("model"), "model"),
    ("model-list", manifest_set("model", []), "model"),
    ("model-dataset-int", manifest_set("model", "dataset", 7), "model.dataset"),
    ("arithmetic-missing", manifest_del("arithmetic"), "arithmetic"),
    ("arithmetic-string", manifest_set("arithmetic", "A=8"), "arithmetic"),
    ("act-bits-missing", manifest_del("arithmetic", "act_bits"), "arithmetic.act_bits"),
    ("act-bits-zero", manifest_set("arithmetic", "act_bits", 0), "arithmetic.act_bits"),
    ("act-bits-17", manifest_set("arithmetic", "act_bits", 17), "arithmetic.act_bits"),
    ("act-bits-string", manifest_set("arithmetic", "act_bits", "8"), "arithmetic.act_bits"),
    ("act-bits-float", manifest_set("arithmetic", "act_bits", 8.0), "arithmetic.act_bits"),
    ("act-bits-bool", manifest_set("arithmetic", "act_bits", True), "arithmetic.act_bits"),
    ("act-bits-nan", manifest_set("arithmetic", "act_bits", NAN), "arithmetic.act_bits"),
    ("act-bits-inf", manifest_set("arithmetic", "act_bits", INF), "arithmetic.act_bits"),
    ("act-bits-changed", manifest_set("arithmetic", "act_bits", 4), "layers[0].out_bits"),
    ("mul-bits-33", manifest_set("arithmetic", "mul_bits", 33), "arithmetic.mul_bits"),
    ("mul-bits-1e12", manifest_set("arithmetic", "mul_bits", 10 ** 12), "arithmetic.mul_bits"),
    ("score-bits-minus-inf", manifest_set("arithmetic", "score_bits", -INF),
     "arithmetic.score_bits"),
    ("score-frac-bits-null", manifest_set("arithmetic", "score_frac_bits", None),
     "arithmetic.score_frac_bits"),
    ("pixel-bits-16", manifest_set("arithmetic", "pixel_bits", 16), "arithmetic.pixel_bits"),
    ("io-missing", manifest_del("io"), "io"),
    ("io-list", manifest_set("io", [12, 4]), "io"),
    ("io-in-lanes-zero", manifest_set("io", "in_lanes", 0), "io.in_lanes"),
    ("io-in-lanes-beyond-inputs", manifest_set("io", "in_lanes", 13), "io.in_lanes"),
    ("io-in-lanes-bool", manifest_set("io", "in_lanes", True), "io.in_lanes"),
    ("io-in-lanes-nan", manifest_set("io", "in_lanes", NAN), "io.in_lanes"),
    ("io-n-in-wrong", manifest_set("io", "n_in", 13), "io.n_in"),
    ("io-in-beats-negative", manifest_set("io", "in_beats", -3), "io.in_beats"),
    ("io-pixel-bits-float", manifest_set("io", "pixel_bits", 8.0), "io.pixel_bits"),
    ("io-class-bits-bool", manifest_set("io", "class_bits", True), "io.class_bits"),
    ("io-out-bits-huge", manifest_set("io", "out_bits", 10 ** 12), "io.out_bits"),
    ("io-num-classes-missing", manifest_del("io", "num_classes"), "io.num_classes"),
    ("layers-missing", manifest_del("layers"), "layers"),
    ("layers-empty", manifest_set("layers", []), "layers"),
    ("layers-object", manifest_set("layers", {"0": {}}), "layers"),
    ("layer-list", manifest_set(*L0, [1, 2]), "layers[0]"),
    ("layer-null", manifest_set(*L1, None), "layers[1]"),
    ("layer-dropped", manifest_del(*L1), "layers[0].shift_bits"),
    ("layer-repeated", config_edit(lambda m: m["layers"].append(m["layers"][-1])),
     "layers[1].shift_bits"),
    ("in-features-1e12", manifest_set(*L0, "in_features", 10 ** 12), "layers[0].in_features"),
    ("in-features-1e12-float", manifest_set(*L0, "in_features", 1e12),
     "layers[0].in_features"),
    ("in-features-zero", manifest_set(*L0, "in_features", 0), "layers[0].in_features"),
    ("in-features-negative", manifest_set(*L0, "in_features", -12), "layers[0].in_features"),
    ("in-features-string", manifest_set(*L0, "in_features", "12"), "layers[0].in_features"),
    ("in-features-mismatch", manifest_set(*L1, "in_features", 8), "layers[1].in_features"),
    ("out-features-missing", manifest_del(*L1, "out_features"), "layers[1].out_features"),
    ("out-features-inf", manifest_set(*L1, "out_features", INF), "layers[1].out_features"),
    ("pe-zero", manifest_set(*L0, "pe", 0), "layers[0].pe"),
    ("pe-beyond-outputs", manifest_set(*L0, "pe", 10), "layers[0].pe"),
    ("pe-float", manifest_set(*L0, "pe", 3.0), "layers[0].pe"),
    ("simd-beyond-inputs", manifest_set(*L1, "simd", 10), "layers[1].simd"),
    ("simd-changed", manifest_set(*L1, "simd", 5), "layers[1].sf"),
    ("index-wrong", manifest_set(*L1, "index", 0), "layers[1].index"),
    ("in-bits-wrong", manifest_set(*L0, "in_bits", 4), "layers[0].in_bits"),
    ("nf-wrong", manifest_set(*L0, "nf", 99), "layers[0].nf"),
    ("sf-bool", manifest_set(*L1, "sf", True), "layers[1].sf"),
    ("acc-bits-string", manifest_set(*L0, "acc_bits", "13"), "layers[0].acc_bits"),
    ("shift-bits-missing", manifest_del(*L0, "shift_bits"), "layers[0].shift_bits"),
    ("out-signed-int", manifest_set(*L1, "out_signed", 1), "layers[1].out_signed"),
    ("out-signed-wrong", manifest_set(*L0, "out_signed", True), "layers[0].out_signed"),
    ("out-max-nan", manifest_set(*L0, "out_max", NAN), "layers[0].out_max"),
    ("weights-missing", manifest_del(*L0, "weights"), "layers[0].weights"),
    ("weights-string", manifest_set(*L0, "weights", "layer0_weights.hex"),
     "layers[0].weights"),
    ("weights-width-wrong", manifest_set(*L0, "weights", "width", 13), "layers[0].weights.width"),
    ("weights-width-float", manifest_set(*L0, "weights", "width", 12.0),
     "layers[0].weights.width"),
    ("weights-width-huge", manifest_set(*L0, "weights", "width", 10 ** 12),
     "layers[0].weights.width"),
    ("weights-depth-bool", manifest_set(*L1, "weights", "depth", True),
     "layers[1].weights.depth"),
    ("params-depth-missing", manifest_del(*L1, "params", "depth"), "layers[1].params.depth"),
    ("files-missing", manifest_del(*L0, "weights", "files"), "layers[0].weights.files.hex"),
    ("files-list", manifest_set(*L0, "weights", "files", ["layer0_weights.hex"]),
     "layers[0].weights.files.hex"),
    ("hex-missing", manifest_del(*W0_HEX), "layers[0].weights.files.hex"),
    ("hex-int", manifest_set(*W0_HEX, 0), "layers[0].weights.files.hex"),
    ("hex-null", manifest_set(*P1_HEX, None), "layers[1].params.files.hex"),
    ("hex-empty", manifest_set(*W0_HEX, ""), "layers[0].weights.files.hex"),
    ("hex-parent", manifest_set(*W0_HEX, "../layer0_weights.hex"),
     "layers[0].weights.files.hex"),
    ("hex-absolute", manifest_set(*W0_HEX, "/etc/passwd"), "layers[0].weights.files.hex"),
    ("hex-subdir", manifest_set(*P1_HEX, "sub/layer1_params.hex"), "layers[1].params.files.hex"),
    ("hex-backslash", manifest_set(*W0_HEX, "..\\x.hex"), "layers[0].weights.files.hex"),
    ("hex-dot", manifest_set(*W0_HEX, "."), "layers[0].weights.files.hex"),
    ("hex-dotdot", manifest_set(*W0_HEX, ".."), "layers[0].weights.files.hex"),
    ("hex-nul", manifest_set(*W0_HEX, "layer0\x00weights.hex"), "layers[0].weights.files.hex"),
]


@pytest.fixture
def bundle(tmp_path, refs) -> Path:
    return Path(shutil.copytree(refs["bundle"], tmp_path / "bundle"))


def verilog_argv(bundle: Path, tmp_path: Path) -> list[Any]:
    return ["verilog", bundle, "-o", tmp_path / "rtl"]


@pytest.mark.parametrize("make, field", _params(MANIFEST_CASES))
def test_manifest(capsys, tmp_path, refs, bundle, make, field):
    text = make(refs["manifest"])
    manifest = bundle / "manifest.json"
    manifest.write_bytes(text.encode() if isinstance(text, str) else text)
    assert_user_error(capsys, tmp_path, verilog_argv(bundle, tmp_path), manifest, field)


ROM_NAMED = [
    # (id, manifest change, file the error names, relative to the bundle)
    ("hex-names-a-missing-file", manifest_set(*W0_HEX, "layer0_weigths.hex"),
     "layer0_weigths.hex"),
    ("hex-names-the-params", manifest_set(*W0_HEX, "layer0_params.hex"), "layer0_params.hex"),
    ("hex-names-the-manifest", manifest_set(*W0_HEX, "manifest.json"), "manifest.json"),
    ("hex-names-a-coe", manifest_set(*W0_HEX, "layer0_weights.coe"), "layer0_weights.coe"),
]


@pytest.mark.parametrize("make, name", _params(ROM_NAMED))
def test_manifest_naming_the_wrong_rom(capsys, tmp_path, refs, bundle, make, name):
    (bundle / "manifest.json").write_text(make(refs["manifest"]))
    assert_user_error(capsys, tmp_path, verilog_argv(bundle, tmp_path), bundle / name, None)


def test_bundle_without_a_manifest(capsys, tmp_path, bundle):
    (bundle / "manifest.json").unlink()
    assert_user_error(capsys, tmp_path, verilog_argv(bundle, tmp_path), bundle, None)
    (bundle / "manifest.json").mkdir()
    assert_user_error(capsys, tmp_path, verilog_argv(bundle, tmp_path), bundle, None)


# --------------------------------------------------------------------------- ROM images

def lines(fn: Callable[[list[str]], list[str]]) -> Callable[[bytes], bytes]:
    return lambda data: "".join(w + "\n" for w in fn(data.decode().split())).encode()


HEX_CASES = [
    # (id, file, change to its bytes, field named)
    ("empty", "layer0_weights.hex", lambda d: b"", "content"),
    ("blank", "layer0_weights.hex", lambda d: b"\n\n", "content"),
    ("comments-only", "layer0_weights.hex", lambda d: b"// nothing\n", "content"),
    ("truncated-word", "layer0_weights.hex", lambda d: d[:-2], "line 9"),
    ("truncated-half", "layer0_weights.hex", lambda d: d[:len(d) // 2], "line 5"),
    ("one-word-short", "layer0_weights.hex", lambda d: d[:d.rindex(b"\n", 0, -1) + 1], "depth"),
    ("one-word-extra", "layer0_weights.hex", lambda d: d + d[:4], "depth"),
    ("twice-as-deep", "layer1_weights.hex", lambda d: d + d, "depth"),
    ("digit-extra", "layer0_weights.hex", lines(lambda ws: ["0" + w for w in ws]), "line 1"),
    ("digit-missing", "layer1_weights.hex", lines(lambda ws: ws[:2] + [ws[2][1:]] + ws[3:]),
     "line 3"),
    ("too-wide-for-width", "layer0_params.hex", lines(lambda ws: ["f" + w[1:] for w in ws]),
     "line 1"),
    ("non-hex", "layer0_weights.hex", lines(lambda ws: ["g12"] + ws[1:]), "line 1"),
    ("hex-prefix", "layer0_weights.hex", lines(lambda ws: ["0x" + w for w in ws]), "line 1"),
    ("negative", "layer0_weights.hex", lines(lambda ws: ["-12"] + ws[1:]), "line 1"),
    ("nan", "layer1_weights.hex", lines(lambda ws: ["nan"] + ws[1:]), "line 1"),
    ("address", "layer0_weights.hex", lambda d: b"@0\n" + d, "line 1"),
    ("two-words-a-line", "layer0_weights.hex", lambda d: d.replace(b"\n", b" ", 1), "line 1"),
    ("non-ascii", "layer0_weights.hex", lambda d: "é".encode() + d, "line 1"),
    ("nul-bytes", "layer1_params.hex", lambda d: b"\0" * 8 + d, "line 1"),
    ("binary", "layer1_params.hex", lambda d: bytes(range(256)), "line 2"),
    ("enormous-word", "layer0_weights.hex", lambda d: b"f" * 1_000_000 + b"\n", "line 1"),
    ("shift-beyond-max", "layer0_params.hex",
     lines(lambda ws: ["1" + "f" * (len(w) - 1) for w in ws]), "layers[0].params"),
    ("a-directory", "layer1_weights.hex", None, None),
]


@pytest.mark.parametrize("name, corrupt, field", _params(HEX_CASES))
def test_hex_image_in_a_bundle(capsys, tmp_path, bundle, name, corrupt, field):
    rom = bundle / name
    if corrupt is None:
        rom.unlink()
        rom.mkdir()
    else:
        rom.write_bytes(corrupt(rom.read_bytes()))
    assert_user_error(capsys, tmp_path, verilog_argv(bundle, tmp_path), rom, field)


def rom_error(path: Path, width: int, depth: int | None) -> str:
    """``read_rom``'s error as the CLI prints it (no command reads .coe, .mif or .bin)."""
    with pytest.raises(BchwError) as e:
        romfmt.read_rom(path, width, depth)
    return f"bchw: error: {e.value}\n"


def edit(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        assert old in data
        return data.replace(old, new, 1)
    return change


ROM_CASES = [
    # (id, format, change to the bytes of layer0_weights (width 12, depth 9), field named)
    *[(f"{fmt}-empty", fmt, lambda d: b"", "content") for fmt in ("coe", "mif", "bin")],
    *[(f"{fmt}-truncated-{n}", fmt, lambda d, n=n: d[:n], None)
      for fmt in ("coe", "mif") for n in (1, 10, 40, 60)],
    *[(f"{fmt}-truncated-end", fmt, lambda d: d[:-2], None) for fmt in ("coe", "mif")],
    ("bin-truncated-odd", "bin", lambda d: d[:-1], "size"),
    ("bin-truncated-word", "bin", lambda d: d[:-2], "depth"),
    ("bin-one-byte", "bin", lambda d: d[:1], "size"),
    ("bin-word-too-wide", "bin", lambda d: b"\xff\xff" + d[2:], "word 0"),
    ("bin-extra-word", "bin", lambda d: d + b"\0\0", "depth"),
    ("coe-radix-10", "coe", edit(b"radix=16", b"radix=10"), "memory_initialization_radix"),
    ("coe-radix-missing", "coe", edit(b"memory_initialization_radix=16;\n", b""),
     "memory_initialization_radix"),
    ("coe-vector-missing", "coe", lambda d: d.split(b"\n")[0] + b"\n",
     "memory_initialization_vector"),
    ("coe-word-too-wide", "coe", edit(b"aa4", b"aa40"), "line 3"),
    ("coe-non-hex", "coe", edit(b"aa4", b"aZ4"), "line 3"),
    ("coe-nan", "coe", edit(b"aa4", b"nan"), "line 3"),
    ("coe-word-missing", "coe", edit(b"833,\n", b""), "depth"),
    ("coe-after-end", "coe", lambda d: d + b"123;\n", "line 12"),
    ("coe-non-ascii", "coe", lambda d: d.replace(b"aa4", "aä4".encode()), "line 3"),
    ("mif-width-wrong", "mif", edit(b"WIDTH=12", b"WIDTH=13"), "WIDTH"),
    ("mif-width-zero", "mif", edit(b"WIDTH=12", b"WIDTH=0"), "WIDTH"),
    ("mif-width-enormous", "mif", edit(b"WIDTH=12", b"WIDTH=" + b"9" * 60), "WIDTH"),
    ("mif-depth-wrong", "mif", edit(b"DEPTH=9", b"DEPTH=10"), "DEPTH"),
    ("mif-depth-1e12", "mif", edit(b"DEPTH=9", b"DEPTH=1000000000000"), "DEPTH"),
    ("mif-depth-negative", "mif", edit(b"DEPTH=9", b"DEPTH=-9"), "line 2"),
    ("mif-depth-missing", "mif", edit(b"DEPTH=9;\n", b""), "DEPTH"),
    ("mif-radix-unknown", "mif", edit(b"DATA_RADIX=HEX", b"DATA_RADIX=FLT"), "DATA_RADIX"),
    ("mif-address-twice", "mif", edit(b"1 : 833", b"0 : 833"), "line 9"),
    ("mif-address-beyond-depth", "mif", edit(b"8 : 30c", b"9 : 30c"), "line 16"),
    ("mif-address-missing", "mif", edit(b"\t4 : 2b7;\n", b""), "CONTENT"),
    ("mif-range-backwards", "mif", edit(b"\t8 : 30c;", b"\t[8..7] : 30c;"), "line 16"),
    ("mif-value-too-wide", "mif", edit(b"aa4", b"1aa4"), "line 8"),
    ("mif-value-nan", "mif", edit(b"aa4", b"nan"), "line 8"),
    ("mif-end-missing", "mif", edit(b"END;\n", b""), "line 16"),
    ("mif-binary", "mif", lambda d: bytes(range(128, 256)), "line 1"),
]


@pytest.mark.parametrize("fmt, corrupt, field", _params(ROM_CASES))
def test_rom_image(tmp_path, refs, fmt, corrupt, field):
    rom = tmp_path / f"layer0_weights.{fmt}"
    rom.write_bytes(corrupt((refs["bundle"] / rom.name).read_bytes()))
    err = rom_error(rom, 12, 9)
    assert err.startswith(f"bchw: error: {rom}: ") and err.count("\n") == 1, err
    if field is not None:
        assert f"field '{field}'" in err, err
    else:
        assert "field '" in err, err


@pytest.mark.parametrize("fmt", romfmt.FORMATS)
@pytest.mark.parametrize("width, depth", [(11, 9), (17, 9), (12, 8), (12, 10), (4096, 9)])
def test_rom_image_of_the_wrong_shape(tmp_path, refs, fmt, width, depth):
    rom = tmp_path / f"layer0_weights.{fmt}"
    shutil.copy(refs["bundle"] / rom.name, rom)
    err = rom_error(rom, width, depth)
    assert err.startswith(f"bchw: error: {rom}: field '") and err.count("\n") == 1, err


# --------------------------------------------------------------------------- IDX files

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
RNG = np.random.default_rng(1)
PIXELS = RNG.integers(0, 256, (12, 4, 4))

IDX_CASES = [
    # (id, file, new bytes from the valid ones, field named)
    ("empty", TRAIN_IMAGES, lambda d: b"", "magic"),
    ("three-bytes", TRAIN_LABELS, lambda d: d[:3], "magic"),
    ("magic-wrong", TRAIN_IMAGES, lambda d: b"\x01\x00" + d[2:], "magic"),
    ("magic-text", TEST_LABELS, lambda d: b"P5\n4 4\n255\n" + d, "magic"),
    ("dtype-unknown", TRAIN_IMAGES, lambda d: d[:2] + b"\x07" + d[3:], "dtype"),
    ("dtype-int32-labels", TRAIN_LABELS,
     lambda d: idx(np.arange(12) % 10, 0x0C, dtype=">i4"), "dtype"),
    ("dtype-float-images", TRAIN_IMAGES, lambda d: idx(np.full((12, 4, 4), np.nan), 0x0D,
                                                         dtype=">f4"), "dtype"),
    ("dtype-float-inf", TEST_IMAGES, lambda d: idx(np.full((6, 4, 4), np.inf), 0x0E,
                                                    dtype=">f8"), "dtype"),
    ("ndim-zero", TRAIN_LABELS, lambda d: d[:3] + b"\x00" + d[4:], "ndim"),
    ("ndim-255", TRAIN_IMAGES, lambda d: d[:3] + b"\xff" + b"\x00\x00\x00\x01" * 255, "ndim"),
    ("ndim-wrong-images", TRAIN_IMAGES, lambda d: idx(np.zeros(12)), "ndim"),
    ("ndim-wrong-labels", TEST_LABELS, lambda d: idx(np.zeros((6, 1))), "ndim"),
    ("header-truncated", TRAIN_IMAGES, lambda d: d[:9], "dims"),
    ("data-truncated-1", TRAIN_IMAGES, lambda d: d[:-1], "data"),
    ("data-truncated-half", TEST_IMAGES, lambda d: d[:len(d) // 2], "data"),
    ("data-header-only", TRAIN_LABELS, lambda d: d[:8], "data"),
    ("data-trailing", TRAIN_LABELS, lambda d: d + b"\x00", "data"),
    ("dims-absurd", TRAIN_IMAGES,
     lambda d: d[:4] + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + d[16:], "data"),
    ("dims-wrap-int64", TRAIN_IMAGES,
     lambda d: bytes([0, 0, 8, 4]) + struct.pack(">4I", *[65536] * 4), "data"),
    ("no-images", TRAIN_IMAGES, lambda d: idx(np.zeros((0, 4, 4))), "dims"),
    ("no-pixels", TEST_IMAGES, lambda d: idx(np.zeros((6, 0, 4))), "dims"),
    ("count-mismatch", TRAIN_LABELS, lambda d: idx(np.zeros(11)), "count"),
    ("label-out-of-range", TEST_LABELS, lambda d: idx(np.full(6, 10)), "labels"),
    ("label-255", TRAIN_LABELS, lambda d: idx(np.full(12, 255)), "labels"),
    ("test-pixels-differ", TEST_IMAGES, lambda d: idx(np.zeros((6, 5, 5))), "dims"),
]

IDX_GZ_CASES = [
    ("gz-truncated", lambda d: gzip.compress(d)[:20]),
    ("gz-corrupt", lambda d: (lambda z: z[:12] + bytes(b ^ 0x55 for b in z[12:]))(
        gzip.compress(d))),
    ("gz-header-only", lambda d: b"\x1f\x8b"),
    ("gz-of-text", lambda d: gzip.compress(b"not an idx file")),
]


def sample_argv(data_dir: Path, tmp_path: Path) -> list[Any]:
    return ["sample", "--dataset", "mnist", "--data-dir", data_dir, "--images", "3",
            "-o", tmp_path / "sample.npz"]


@pytest.fixture
def idx_dir(tmp_path, refs) -> Path:
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    for name, data in refs["idx"].items():
        (data_dir / name).write_bytes(data)
    return data_dir


@pytest.mark.parametrize("name, corrupt, field", _params(IDX_CASES))
def test_idx_file(capsys, tmp_path, idx_dir, name, corrupt, field):
    path = idx_dir / name
    path.write_bytes(corrupt(path.read_bytes()))
    assert_user_error(capsys, tmp_path, sample_argv(idx_dir, tmp_path), path, field)


@pytest.mark.parametrize("corrupt", [c[1] for c in IDX_GZ_CASES], ids=[c[0] for c in IDX_GZ_CASES])
def test_idx_gzip_file(capsys, tmp_path, idx_dir, corrupt):
    raw = idx_dir / TRAIN_LABELS
    path = raw.with_name(raw.name + ".gz")
    path.write_bytes(corrupt(raw.read_bytes()))
    raw.unlink()
    assert_user_error(capsys, tmp_path, sample_argv(idx_dir, tmp_path), path, None)


@pytest.mark.parametrize("name", [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS])
def test_idx_file_missing(capsys, tmp_path, idx_dir, name):
    (idx_dir / name).unlink()
    assert_user_error(capsys, tmp_path, sample_argv(idx_dir, tmp_path),
                      idx_dir / f"{name}[.gz]", None)


def test_idx_reference_is_valid(capsys, tmp_path, idx_dir):
    assert main([str(a) for a in sample_argv(idx_dir, tmp_path)]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- sample .npz

def npz(**arrays: Any) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        with np.load(io.BytesIO(data)) as z:
            merged = {k: z[k] for k in z.files}
        merged.update(arrays)
        for key in [k for k, v in merged.items() if v is None]:
            del merged[key]
        buf = io.BytesIO()
        np.savez(buf, **merged)
        return buf.getvalue()
    return make


def zip_patch(offset: int, value: bytes) -> Callable[[bytes], bytes]:
    """Overwrite the bytes at ``offset`` of the first central directory entry."""
    def patch(data: bytes) -> bytes:
        at = data.index(b"PK\x01\x02") + offset
        return data[:at] + value + data[at + len(value):]
    return patch


def npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def zipped(**members: bytes) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
            for info in src.infolist():
                if info.filename not in members:
                    dst.writestr(info, src.read(info))
            for name, content in members.items():
                dst.writestr(name, content)
        return buf.getvalue()
    return make


IMAGES = randnet.random_images(5, SIZES[0])
SAMPLE_CASES = [
    # (id, new bytes from the valid .npz (compressed), field named)
    ("empty", lambda d: b"", None),
    ("truncated-10", lambda d: d[:10], None),
    ("truncated-half", lambda d: d[:len(d) // 2], None),
    ("truncated-last", lambda d: d[:-1], None),
    ("text", lambda d: b"images,labels\n1,2\n", None),
    ("npy-not-npz", lambda d: (lambda b: (np.save(b, IMAGES), b.getvalue())[1])(io.BytesIO()),
     None),
    ("pickle", lambda d: pickle.dumps({"images": IMAGES}), None),
    ("deflate-corrupt", lambda d: d[:60] + bytes(b ^ 0x5A for b in d[60:90]) + d[90:], None),
    ("compression-unsupported", zip_patch(10, b"\x63\x00"), "images"),
    ("encrypted-flag", zip_patch(8, b"\x41\x00"), "images"),
    ("images-missing", npz(images=None), "images"),
    ("labels-missing", npz(labels=None), "labels"),
    ("images-float", npz(images=IMAGES.astype(np.float32)), "images"),
    ("images-nan", npz(images=np.full(IMAGES.shape, np.nan)), "images"),
    ("images-int16", npz(images=IMAGES.astype(np.int16)), "images"),
    ("images-flat", npz(images=IMAGES.reshape(-1)), "images"),
    ("images-3d", npz(images=IMAGES.reshape(5, 3, 4)), "images"),
    ("images-wrong-width", npz(images=IMAGES[:, :11]), "images"),
    ("images-none", npz(images=IMAGES[:0], labels=np.zeros(0, np.int64)), "images"),
    ("images-objects", npz(images=IMAGES.astype(object)), "images"),
    ("images-absurd-shape", zipped(**{"images.npy": npy_header((10**12, 12)) + bytes(60)}),
     "images"),
    ("images-header-corrupt", zipped(**{"images.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': }\n"}),
     "images"),
    ("labels-float", npz(labels=np.arange(5) / 2), "labels"),
    ("labels-nan", npz(labels=np.full(5, np.nan)), "labels"),
    ("labels-inf", npz(labels=np.full(5, np.inf)), "labels"),
    ("labels-strings", npz(labels=np.array(list("abcde"))), "labels"),
    ("labels-2d", npz(labels=np.zeros((5, 1), np.int64)), "labels"),
    ("labels-count", npz(labels=np.zeros(4, np.int64)), "labels"),
    ("labels-negative", npz(labels=-np.ones(5, np.int64)), "labels"),
    ("labels-uint64-huge", npz(labels=np.full(5, 2**64 - 1, np.uint64)), "labels"),
]


@pytest.mark.parametrize("corrupt, field", _params(SAMPLE_CASES))
def test_sample_file(capsys, tmp_path, refs, bundle, corrupt, field):
    path = tmp_path / "sample.npz"
    path.write_bytes(corrupt(refs["samples"]))
    assert_user_error(capsys, tmp_path, ["eval", bundle, "--samples", path], path, field)


def test_sample_with_pickled_code_is_refused_without_running_it(capsys, tmp_path, bundle):
    marker = tmp_path / "pwned"
    path = tmp_path / "sample.npz"
    labels = np.empty(5, dtype=object)
    labels[:] = [Exploit(marker)] * 5
    buf = io.BytesIO()
    np.savez(buf, images=IMAGES, labels=labels)
    path.write_bytes(buf.getvalue())
    assert_user_error(capsys, tmp_path, ["eval", bundle, "--samples", path], path, "labels")
    assert not marker.exists()


def test_sample_reference_is_valid(capsys, tmp_path, refs, bundle):
    path = tmp_path / "sample.npz"
    path.write_bytes(refs["samples"])
    assert main(["eval", str(bundle), "--samples", str(path)]) == 0
    capsys.readouterr()
