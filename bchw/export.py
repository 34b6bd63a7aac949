"""Export: checkpoint → bundle (fold batch norm, quantize, pack ROM images), and bundle loading.

A bundle is a directory holding ``manifest.json`` and the ROM images it
names.  It is the only thing the golden model, the cycle model and the
gateware read.

ROM word layout (the one place it is defined; :func:`pack_weights` and
:func:`unpack_weights` are tested by round trip):

* **weights** of a layer with ``PE`` and ``SIMD``: ``NF = ceil(out/PE)`` neuron
  folds by ``SF = ceil(in/SIMD)`` synapse folds; word address ``nf·SF + sf``;
  bit ``p·SIMD + s`` of that word is the weight of neuron ``nf·PE + p`` for
  input ``sf·SIMD + s``: 1 ↔ +1, 0 ↔ −1.  Padding bits (neurons or inputs past
  the layer's size) are 0; padded inputs are zero, so they add nothing.
* **params**: word address ``nf``; PE fields of ``mul_bits + shift_bits +
  bias_bits`` bits, field ``p`` at bit ``p·param_bits``; within a field, ``M``
  (two's complement) in the low bits, then ``S`` (unsigned), then ``B`` (two's
  complement).  Padded neurons have M = S = B = 0, so they output 0.

Convolutional layers are matrices over windows (see :class:`LayerGeometry`):
a k×k convolution of C input channels to C_out is the matrix
[C_out, k·k·C] whose column ``(ky·k + kx)·C + c`` is kernel row ``ky``,
column ``kx``, channel ``c`` (channel fastest), packed like any other layer.
Feature maps travel in HWC order (raster order, the channels of a pixel
together), so the first fully connected layer after a convolution has its
columns permuted from PyTorch's C·H·W flattening to H·W·C, and a
convolutional network takes its pixels in HWC order, one pixel (C u8
values) a beat.

The manifest of a network with convolutions tags every layer with ``kind``
("fc" or "conv") and gives each convolution its ``in_shape`` [C, H, W],
``kernel``, ``padding``, ``pool`` (0: none) and ``out_shape`` [C_out, H', W']
(after pooling), and its ``io`` says ``"pixel_order": "hwc"``.  An MLP's
manifest has none of these fields (its layers are all "fc"), so MLP bundles
are what they were before convolutions existed, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bchw import golden, romfmt
from bchw.errors import BchwError, atomic_dir

SCHEMA = "bchw-bundle"
SCHEMA_VERSION = 1
PIXEL_BITS = 8
DEFAULT_MUL_BITS = 18
DEFAULT_SCORE_BITS = 16
DEFAULT_SCORE_FRAC_BITS = 7


# --------------------------------------------------------------------------- configuration

@dataclass
class HardwareConfig:
    """The accelerator configuration a bundle is packed for."""

    pe: list[int]
    simd: list[int]
    in_lanes: int | None = None        # u8 values a beat; default layer 0's SIMD, a CNN's C
    mul_bits: int = DEFAULT_MUL_BITS
    score_bits: int = DEFAULT_SCORE_BITS
    score_frac_bits: int = DEFAULT_SCORE_FRAC_BITS
    source: str | None = None          # the config file it came from, named in errors

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> HardwareConfig:
        """Read ``{"layers": [{"pe": .., "simd": ..}, ..], "in_lanes": .., ...}``."""
        data = _read_json(path, "hardware config")
        if not isinstance(data, dict):
            raise BchwError("expected a JSON object", path=path)
        known = {"layers", "in_lanes", "mul_bits", "score_bits", "score_frac_bits"}
        for key in data:
            if key not in known:
                raise BchwError(f"unknown field (expected one of {sorted(known)})",
                                path=path, field=key)
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise BchwError("must be a non-empty list of {\"pe\": int, \"simd\": int}",
                            path=path, field="layers")
        pe, simd = [], []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or set(layer) != {"pe", "simd"}:
                raise BchwError("must be an object with exactly 'pe' and 'simd'",
                                path=path, field=f"layers[{i}]")
            pe.append(_int_field(layer["pe"], path, f"layers[{i}].pe", 1, 1 << 20))
            simd.append(_int_field(layer["simd"], path, f"layers[{i}].simd", 1, 1 << 20))
        kwargs = {}
        for key, lo, hi in (("in_lanes", 1, 4096), ("mul_bits", 2, 32),
                            ("score_bits", 2, 32), ("score_frac_bits", 0, 16)):
            if key in data:
                kwargs[key] = _int_field(data[key], path, key, lo, hi)
        return cls(pe=pe, simd=simd, source=str(path), **kwargs)

    def check(self, sizes: Sequence[int], where: str) -> None:
        """Raise :class:`BchwError` unless this folding fits an MLP of layer ``sizes``."""
        self.check_layers(mlp_geometry(sizes), where)

    def check_layers(self, layers: Sequence[LayerGeometry], where: str) -> None:
        """Raise :class:`BchwError` unless this folding fits ``layers``.

        PE folds a layer's outputs (a convolution's output channels), SIMD its
        inputs (a convolution's k·k·C window).  A convolutional network takes
        one pixel a beat, so its ``in_lanes`` must be the image's channels.
        """
        where = self.source or where
        n_layers = len(layers)
        for name, values in (("pe", self.pe), ("simd", self.simd)):
            if len(values) != n_layers:
                raise BchwError(f"{len(values)} values given for {n_layers} layers",
                                path=where, field="layers" if self.source else name)
        for i, g in enumerate(layers):
            outs, ins = f"{g.out_features} outputs", f"{g.in_features} inputs"
            if g.kind == "conv":
                outs += " (its output channels)"
                ins += f" (its {g.kernel}×{g.kernel}×{g.in_shape[0]} window)"
            if not 1 <= self.pe[i] <= g.out_features:
                raise BchwError(f"pe={self.pe[i]} does not fit layer {i}: it must be between 1 "
                                f"and the layer's {outs}",
                                path=where, field=f"layers[{i}].pe")
            if not 1 <= self.simd[i] <= g.in_features:
                raise BchwError(f"simd={self.simd[i]} does not fit layer {i}: it must be between "
                                f"1 and the layer's {ins}",
                                path=where, field=f"layers[{i}].simd")
        lanes = self.input_lanes(layers)
        if layers[0].kind == "conv":
            channels = layers[0].in_shape[0]
            if lanes != channels:
                raise BchwError(f"in_lanes={lanes}: a convolutional network takes one pixel of "
                                f"its {channels} channel(s) a beat, so in_lanes must be "
                                f"{channels}", path=where, field="in_lanes")
        elif not 1 <= lanes <= layers[0].in_features:
            raise BchwError(f"in_lanes={lanes} must be between 1 and the "
                            f"{layers[0].in_features} inputs", path=where, field="in_lanes")
        for name, v, lo, hi in (("mul_bits", self.mul_bits, 2, 32),
                                ("score_bits", self.score_bits, 2, 32),
                                ("score_frac_bits", self.score_frac_bits, 0, 16)):
            if not lo <= v <= hi:
                raise BchwError(f"{v} is out of range {lo}..{hi}", path=where, field=name)

    @property
    def lanes(self) -> int:
        """Pixels per input beat of an MLP: ``in_lanes``, by default layer 0's SIMD."""
        return self.in_lanes if self.in_lanes is not None else self.simd[0]

    def input_lanes(self, layers: Sequence[LayerGeometry]) -> int:
        """Pixels per input beat for ``layers``: a convolutional network's default is one
        pixel of all its channels, an MLP's :attr:`lanes`."""
        if self.in_lanes is None and layers[0].kind == "conv":
            return layers[0].in_shape[0]
        return self.lanes


def parse_int_list(text: str, what: str) -> list[int]:
    """Parse ``"16,16,10"`` from the command line."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise BchwError(f"expected comma-separated integers, got {text!r}", field=what) from None
    return values


# --------------------------------------------------------------------------- layer geometry

@dataclass(frozen=True)
class LayerGeometry:
    """What a layer maps per image, and so how its matrix is applied.

    ``kind`` 'fc': a fully connected layer, ``in_shape`` (F_in, 1, 1) to
    ``out_shape`` (F_out, 1, 1); ``kernel``, ``padding`` and ``pool`` are 0.
    ``kind`` 'conv': ``in_shape`` (C, H, W) feature maps through
    ``kernel``×``kernel`` windows, stride 1, zero ``padding`` (kernel − 1)/2
    (H and W are kept), then, if ``pool`` > 0, ``pool``×``pool`` max pooling
    of stride ``pool``, to ``out_shape`` (C_out, H/pool, W/pool).  Its matrix
    is [C_out, k·k·C]: one neuron per output channel, applied to every window.
    The values are :class:`bchw.nn.LayerSpec`'s.
    """

    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int = 0
    padding: int = 0
    pool: int = 0

    @property
    def in_features(self) -> int:
        """Inputs of one neuron: a convolution's window k·k·C, a fully connected layer's F_in."""
        if self.kind == "conv":
            return self.kernel * self.kernel * self.in_shape[0]
        return self.in_shape[0]

    @property
    def out_features(self) -> int:
        return self.out_shape[0]

    @classmethod
    def fc(cls, n_in: int, n_out: int) -> LayerGeometry:
        return cls("fc", (n_in, 1, 1), (n_out, 1, 1))


def mlp_geometry(sizes: Sequence[int]) -> list[LayerGeometry]:
    """The fully connected layers of an MLP of layer ``sizes``."""
    return [LayerGeometry.fc(a, b) for a, b in zip(sizes[:-1], sizes[1:])]


def checkpoint_geometry(cfg: dict[str, Any], where: str) -> list[LayerGeometry]:
    """The layers of a checkpoint's ``config`` (its spec and, for a CNN, its ``in_shape``)."""
    from bchw.nn import is_mlp_spec, parse_net_spec

    spec, in_shape = cfg["spec"], None
    if not is_mlp_spec(spec):
        in_shape = cfg.get("in_shape")
        if not (isinstance(in_shape, (list, tuple)) and len(in_shape) == 3
                and all(type(v) is int and v >= 1 for v in in_shape)):
            raise BchwError(f"a convolutional network's checkpoint records its input shape "
                            f"[C, H, W], three positive integers, not {in_shape!r}",
                            path=where, field="config.in_shape")
    try:
        specs = parse_net_spec(spec, in_shape)
    except BchwError as e:
        raise BchwError(e.message, path=where, field="config.spec") from None
    return [LayerGeometry(s.kind, tuple(s.in_shape), tuple(s.out_shape), s.kernel, s.padding,
                          s.pool) for s in specs]


# --------------------------------------------------------------------------- ROM packing

def fold_counts(n_out: int, n_in: int, pe: int, simd: int) -> tuple[int, int]:
    """(NF, SF): neuron folds and synapse folds of a layer."""
    return math.ceil(n_out / pe), math.ceil(n_in / simd)


def pack_weights(weights: np.ndarray, pe: int, simd: int) -> list[int]:
    """Pack ±1 ``weights`` [out, in] into ``NF·SF`` words of ``PE·SIMD`` bits."""
    n_out, n_in = weights.shape
    nf, sf = fold_counts(n_out, n_in, pe, simd)
    bits = np.zeros((nf * pe, sf * simd), dtype=np.uint8)
    bits[:n_out, :n_in] = weights > 0
    # [nf, pe, sf, simd] -> [nf, sf, pe, simd]: one word per (nf, sf), bit p*SIMD+s
    words = bits.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    packed = np.packbits(words, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def unpack_weights(words: Sequence[int], n_out: int, n_in: int, pe: int, simd: int
                   ) -> np.ndarray:
    """Inverse of :func:`pack_weights`: ±1 int8 [out, in]."""
    nf, sf = fold_counts(n_out, n_in, pe, simd)
    width = pe * simd
    nbytes = (width + 7) // 8
    raw = np.frombuffer(b"".join(w.to_bytes(nbytes, "little") for w in words), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(words), nbytes), axis=1, bitorder="little")[:, :width]
    bits = bits.reshape(nf, sf, pe, simd).transpose(0, 2, 1, 3).reshape(nf * pe, sf * simd)
    return np.where(bits[:n_out, :n_in] == 1, 1, -1).astype(np.int8)


def pack_params(mul: np.ndarray, shift: np.ndarray, bias: np.ndarray, pe: int,
                w: golden.LayerWidths) -> list[int]:
    """Pack per-neuron (M, S, B) into ``NF`` words of ``PE·param_bits`` bits."""
    n_out = len(mul)
    nf = math.ceil(n_out / pe)
    words = []
    for f in range(nf):
        word = 0
        for p in range(pe):
            j = f * pe + p
            if j >= n_out:
                continue
            fields = ((int(mul[j]), w.mul_bits), (int(shift[j]), w.shift_bits),
                      (int(bias[j]), w.bias_bits))
            value, pos = 0, 0
            for v, bits in fields:
                value |= (v & ((1 << bits) - 1)) << pos
                pos += bits
            word |= value << (p * w.param_bits)
        words.append(word)
    return words


def unpack_params(words: Sequence[int], n_out: int, pe: int, w: golden.LayerWidths
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_params`."""
    mul = np.zeros(n_out, dtype=np.int64)
    shift = np.zeros(n_out, dtype=np.int64)
    bias = np.zeros(n_out, dtype=np.int64)

    def signed(v: int, bits: int) -> int:
        return v - (1 << bits) if v >> (bits - 1) else v

    for j in range(n_out):
        field_ = (words[j // pe] >> ((j % pe) * w.param_bits)) & ((1 << w.param_bits) - 1)
        mul[j] = signed(field_ & ((1 << w.mul_bits) - 1), w.mul_bits)
        shift[j] = (field_ >> w.mul_bits) & ((1 << w.shift_bits) - 1)
        bias[j] = signed(field_ >> (w.mul_bits + w.shift_bits), w.bias_bits)
    return mul, shift, bias


# --------------------------------------------------------------------------- the bundle

@dataclass
class LayerBundle:
    """One layer as the hardware sees it.

    ``in_features`` and ``out_features`` are its matrix's: a convolution's
    k·k·C window and its output channels.  The geometry fields are
    :class:`LayerGeometry`'s (a fully connected layer: ``kind`` 'fc',
    ``in_shape`` (in_features, 1, 1), ``out_shape`` (out_features, 1, 1),
    ``kernel``, ``padding`` and ``pool`` 0).
    """

    index: int
    in_features: int
    out_features: int
    in_bits: int
    pe: int
    simd: int
    widths: golden.LayerWidths
    weights: np.ndarray          # int8 ±1 [out, in]; a convolution's columns (ky, kx, c)
    mul: np.ndarray              # int64 [out]
    shift: np.ndarray
    bias: np.ndarray
    weight_file: str
    param_file: str
    kind: str = "fc"
    in_shape: tuple[int, int, int] | None = None     # default (in_features, 1, 1)
    kernel: int = 0
    padding: int = 0
    pool: int = 0
    out_shape: tuple[int, int, int] | None = None    # default (out_features, 1, 1)

    def __post_init__(self) -> None:
        if self.in_shape is None:
            self.in_shape = (self.in_features, 1, 1)
        if self.out_shape is None:
            self.out_shape = (self.out_features, 1, 1)

    @property
    def geometry(self) -> LayerGeometry:
        return LayerGeometry(self.kind, self.in_shape, self.out_shape, self.kernel,
                             self.padding, self.pool)

    @property
    def nf(self) -> int:
        return fold_counts(self.out_features, self.in_features, self.pe, self.simd)[0]

    @property
    def sf(self) -> int:
        return fold_counts(self.out_features, self.in_features, self.pe, self.simd)[1]

    @property
    def weight_width(self) -> int:
        return self.pe * self.simd



@dataclass
class Bundle:
    """A loaded, validated bundle."""

    path: Path
    manifest: dict[str, Any]
    layers: list[LayerBundle] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        """u8 values per image: an MLP's inputs, a convolutional network's C·H·W pixels."""
        return math.prod(self.layers[0].in_shape)

    @property
    def has_conv(self) -> bool:
        """Whether any layer is a convolution (then pixels arrive in HWC order)."""
        return any(la.kind == "conv" for la in self.layers)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    @property
    def io(self) -> dict[str, Any]:
        return dict(self.manifest["io"])

    @property
    def dataset(self) -> str | None:
        return self.manifest["model"].get("dataset")



def io_layout(n_in: int, lanes: int, num_classes: int, score_bits: int,
              pixel_order: str | None = None) -> dict[str, Any]:
    """The manifest's ``io``: ``pixel_order`` is recorded for convolutional networks only
    ('hwc'), so that an MLP's ``io`` is what it always was."""
    class_bits = golden.unsigned_bits(num_classes - 1)
    io: dict[str, Any] = {
        "n_in": n_in, "in_lanes": lanes, "in_beats": math.ceil(n_in / lanes),
        "pixel_bits": PIXEL_BITS, "num_classes": num_classes, "class_bits": class_bits,
        "score_bits": score_bits, "out_bits": class_bits + num_classes * score_bits}
    if pixel_order is not None:
        io["pixel_order"] = pixel_order
    return io


def _layer_widths(fan_in: int, in_bits: int, last: bool, arith: dict[str, int]
                  ) -> golden.LayerWidths:
    return golden.layer_widths(fan_in, in_bits, mul_bits=arith["mul_bits"], last=last,
                               act_bits=arith["act_bits"], score_bits=arith["score_bits"])


def binary_matrix(weight: Any, geometry: LayerGeometry, previous: LayerGeometry | None
                  ) -> np.ndarray:
    """A layer's ±1 matrix [out, in] from its real weights, in the hardware's column order.

    A convolution's weight [C_out, C, k, k] becomes [C_out, k·k·C] with
    columns in window order (ky, kx, c), channel fastest: the order in which
    the sliding window emits a window of HWC feature maps.  The first fully
    connected layer after a convolution reads PyTorch's C·H·W flattening;
    its columns are permuted to H·W·C, the order the maps travel in.  Zero
    is +1 (bit 1), as in :func:`bchw.nn.binarize`.
    """
    w = weight.double().numpy()
    if geometry.kind == "conv":
        w = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    elif previous is not None and previous.kind == "conv":
        c, h, wd = previous.out_shape
        w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return np.where(w >= 0, 1, -1).astype(np.int8)


def fold_checkpoint(ckpt: dict[str, Any], hw: HardwareConfig, where: str,
                    geometry: Sequence[LayerGeometry] | None = None
                    ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                               dict[str, int]]:
    """Fold input normalisation and batch norm into integer (M, S, B) per neuron.

    Float model, per layer: ``y = W_b·x``; ``z = γ(y − μ)/√(σ² + ε) + β``;
    hidden layers output ``clamp(round(z/s), 0, 2**A − 1)`` with
    ``s = act_clip/(2**A − 1)``, the last layer outputs ``z``.  With integer
    inputs, ``y = a·acc + y0`` (layer 0: ``a = 1/(255·std)``,
    ``y0 = −mean/std · Σ_i w_i``; later layers: ``a = s``, ``y0 = 0``), so the
    integer output is ``round(k·acc + c)`` with ``k = γ·a/(√(σ²+ε)·s_out)``
    and ``c = (γ(y0 − μ)/√(σ²+ε) + β)/s_out``, where ``s_out = s`` for hidden
    layers and ``2**−score_frac_bits`` for the scores.

    A convolution is the same per output channel, with its k·k·C window as
    the input vector: layer 0 pads its *pixels* with 0, normalised like any
    other, so ``y0`` sums the whole window's weights at every position.  Its
    max pooling comes before the batch norm, on ``y``, and ``a > 0``, so it is
    max pooling of ``acc`` (:func:`bchw.golden.infer`).  ``geometry`` defaults
    to the checkpoint's (:func:`checkpoint_geometry`).
    """
    cfg = ckpt["config"]
    if geometry is None:
        geometry = checkpoint_geometry(cfg, where)
    act_bits, act_clip = int(cfg["act_bits"]), float(cfg["act_clip"])
    arith = {"act_bits": act_bits, "mul_bits": hw.mul_bits, "score_bits": hw.score_bits,
             "score_frac_bits": hw.score_frac_bits, "pixel_bits": PIXEL_BITS}
    s_act = act_clip / ((1 << act_bits) - 1)
    mean, std = float(ckpt["input_norm"]["mean"]), float(ckpt["input_norm"]["std"])
    weights, params = [], []
    layers = ckpt["layers"]
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        wb = binary_matrix(layer["weight"], geometry[i], geometry[i - 1] if i else None)
        if i == 0:
            a = 1.0 / (255.0 * std)
            y0 = -mean / std * wb.sum(axis=1, dtype=np.float64)
            in_bits = PIXEL_BITS
        else:
            a, y0, in_bits = s_act, np.zeros(wb.shape[0]), act_bits
        gamma = layer["bn_weight"].double().numpy()
        beta = layer["bn_bias"].double().numpy()
        mu = layer["bn_mean"].double().numpy()
        sd = np.sqrt(layer["bn_var"].double().numpy() + float(layer["bn_eps"]))
        s_out = 2.0 ** -hw.score_frac_bits if last else s_act
        k = gamma * a / (sd * s_out)
        c = (gamma * (y0 - mu) / sd + beta) / s_out
        widths = _layer_widths(wb.shape[1], in_bits, last, arith)
        try:
            params.append(golden.requant_params(k, c, widths))
        except golden.RequantRangeError as e:
            raise BchwError(f"layer {i} {e}; raise mul_bits", path=where,
                            field=f"layers[{i}]") from None
        weights.append(wb)
    return weights, params, arith


def export_bundle(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                  hw: HardwareConfig, formats: Sequence[str] = romfmt.FORMATS) -> Bundle:
    """Export ``checkpoint`` to a bundle directory ``out_dir`` (written atomically)."""
    from bchw.nn import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    return export_state(ckpt, out_dir, hw, formats, where=str(checkpoint), digest=digest)


def export_state(ckpt: dict[str, Any], out_dir: str | os.PathLike, hw: HardwareConfig,
                 formats: Sequence[str] = romfmt.FORMATS, where: str = "checkpoint",
                 digest: str | None = None) -> Bundle:
    """Export a loaded checkpoint dictionary (see :mod:`bchw.nn`), MLP or CNN, to a bundle."""
    cfg = ckpt["config"]
    if cfg.get("binarize") == "float":
        raise BchwError("a float-weight baseline has no binary weights to export; train with "
                        "--binarize det or stoch", path=where, field="config.binarize")
    if cfg.get("float_act"):
        raise BchwError("activations were not quantized in training, so the integer hardware "
                        "would not match it; train without --float-act", path=where,
                        field="config.float_act")
    geometry = checkpoint_geometry(cfg, where)
    hw.check_layers(geometry, "hardware config")
    weights, params, arith = fold_checkpoint(ckpt, hw, where, geometry)
    model = {"spec": cfg["spec"], "dataset": cfg.get("dataset"),
             "binarize": cfg.get("binarize"), "act_clip": float(cfg["act_clip"]),
             "input_mean": float(ckpt["input_norm"]["mean"]),
             "input_std": float(ckpt["input_norm"]["std"]),
             "checkpoint_sha256": digest}
    return write_bundle(out_dir, weights, params, arith, hw, model, formats, geometry=geometry)


def write_bundle(out_dir: str | os.PathLike, weights: Sequence[np.ndarray],
                 params: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 arith: dict[str, int], hw: HardwareConfig, model: dict[str, Any],
                 formats: Sequence[str] = romfmt.FORMATS, *,
                 geometry: Sequence[LayerGeometry] | None = None) -> Bundle:
    """Write a bundle from integer weights (±1 [out, in] per layer) and (M, S, B) per layer.

    ``arith`` holds ``act_bits``, ``mul_bits``, ``score_bits``,
    ``score_frac_bits`` and ``pixel_bits``; ``model`` is recorded as it is.
    ``geometry`` gives each layer's :class:`LayerGeometry` (default: an MLP
    of the weights' sizes); a convolution's weights are its window matrix
    (:func:`binary_matrix`).
    """
    if geometry is None:
        geometry = mlp_geometry([weights[0].shape[1]] + [w.shape[0] for w in weights])
    for i, (g, wb) in enumerate(zip(geometry, weights, strict=True)):
        if wb.shape != (g.out_features, g.in_features):
            raise ValueError(f"layer {i}: weights {list(wb.shape)} for a {g.kind} layer of "
                             f"{g.out_features}×{g.in_features}")
    hw.check_layers(geometry, "hardware config")
    tagged = any(g.kind == "conv" for g in geometry)
    manifest: dict[str, Any] = {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "model": model,
        "arithmetic": dict(arith),
        "io": io_layout(math.prod(geometry[0].in_shape), hw.input_lanes(geometry),
                        geometry[-1].out_features, arith["score_bits"],
                        "hwc" if tagged else None),
        "layers": [],
    }
    with atomic_dir(out_dir) as tmp:
        for i, (wb, (mul, shift, bias)) in enumerate(zip(weights, params)):
            last = i == len(weights) - 1
            in_bits = PIXEL_BITS if i == 0 else arith["act_bits"]
            widths = _layer_widths(wb.shape[1], in_bits, last, arith)
            pe, simd = hw.pe[i], hw.simd[i]
            entry = _layer_manifest(i, geometry[i], in_bits, pe, simd, widths, tagged)
            for kind, words, width in (
                    ("weights", pack_weights(wb, pe, simd), pe * simd),
                    ("params", pack_params(mul, shift, bias, pe, widths),
                     pe * widths.param_bits)):
                files = {}
                for fmt in formats:
                    files[fmt] = f"layer{i}_{kind}.{fmt}"
                    romfmt.write_rom(tmp / files[fmt], words, width, fmt)
                entry[kind]["files"] = files
            manifest["layers"].append(entry)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return load_bundle(out_dir)


def _layer_manifest(i: int, g: LayerGeometry, in_bits: int, pe: int, simd: int,
                    w: golden.LayerWidths, tagged: bool) -> dict[str, Any]:
    """A layer's manifest entry; ``tagged`` (a network with convolutions) adds its ``kind``."""
    n_in, n_out = g.in_features, g.out_features
    nf, sf = fold_counts(n_out, n_in, pe, simd)
    entry: dict[str, Any] = {"index": i}
    if tagged:
        entry["kind"] = g.kind
    if g.kind == "conv":
        entry.update({"in_shape": list(g.in_shape), "kernel": g.kernel, "padding": g.padding,
                      "pool": g.pool, "out_shape": list(g.out_shape)})
    entry.update({
        "in_features": n_in, "out_features": n_out, "in_bits": in_bits,
        "pe": pe, "simd": simd, "nf": nf, "sf": sf,
        "acc_bits": w.acc_bits, "mul_bits": w.mul_bits, "shift_bits": w.shift_bits,
        "bias_bits": w.bias_bits, "out_bits": w.out_bits, "out_signed": w.out_signed,
        "out_min": w.out_lo, "out_max": w.out_hi,
        "weights": {"width": pe * simd, "depth": nf * sf},
        "params": {"width": pe * w.param_bits, "depth": nf},
    })
    return entry


# --------------------------------------------------------------------------- loading and validation

def _read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BchwError(f"{what} not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BchwError(f"cannot read {what}: {e}", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BchwError(f"not valid JSON ({e.msg} at line {e.lineno})", path=path) from None
    except ValueError:  # json refuses integers of thousands of digits
        raise BchwError("not valid JSON for bchw (a number has too many digits)",
                        path=path) from None
    except RecursionError:
        raise BchwError("not valid JSON for bchw (nested too deeply)", path=path) from None


def _int_field(v: Any, path: Any, name: str, lo: int | None = None, hi: int | None = None
               ) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BchwError(f"must be an integer, got {json.dumps(v)}", path=path, field=name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise BchwError(f"{v} is out of range {rng}", path=path, field=name)
    return v


def resolve_bundle_dir(path: str | os.PathLike) -> Path:
    """A bundle directory, or a model directory holding one in ``bundle/``."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return p
    if (p / "bundle" / "manifest.json").is_file():
        return p / "bundle"
    if p.is_file() and p.name == "manifest.json":
        return p.parent
    raise BchwError("no bundle here (expected manifest.json, or bundle/manifest.json)", path=p)


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load and validate a bundle; every wrong field is reported by name."""
    root = resolve_bundle_dir(path)
    mpath = root / "manifest.json"
    m = _read_json(mpath, "manifest")
    if not isinstance(m, dict):
        raise BchwError("manifest must be a JSON object", path=mpath)
    if m.get("schema") != SCHEMA:
        raise BchwError(f"expected {SCHEMA!r}, got {json.dumps(m.get('schema'))}",
                        path=mpath, field="schema")
    if m.get("version") != SCHEMA_VERSION or type(m.get("version")) is not int:
        raise BchwError(f"unsupported schema version {json.dumps(m.get('version'))}; this bchw "
                        f"reads version {SCHEMA_VERSION}", path=mpath, field="version")
    for key, kind in (("model", dict), ("arithmetic", dict), ("io", dict), ("layers", list)):
        if not isinstance(m.get(key), kind):
            raise BchwError(f"missing or not a JSON {kind.__name__.replace('dict', 'object')}",
                            path=mpath, field=key)
    dataset = m["model"].get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise BchwError(f"must be a string or null, got {json.dumps(dataset)}", path=mpath,
                        field="model.dataset")
    arith = m["arithmetic"]
    for key, lo, hi in (("act_bits", 1, 16), ("mul_bits", 2, 32), ("score_bits", 2, 32),
                        ("score_frac_bits", 0, 16), ("pixel_bits", PIXEL_BITS, PIXEL_BITS)):
        _int_field(arith.get(key), mpath, f"arithmetic.{key}", lo, hi)
    layers_m = m["layers"]
    if not layers_m:
        raise BchwError("a bundle needs at least one layer", path=mpath, field="layers")
    tagged = "conv" in [_layer_kind(mpath, i, lm) for i, lm in enumerate(layers_m)]
    bundle = Bundle(path=root, manifest=m)
    previous = None
    for i, lm in enumerate(layers_m):
        layer = _load_layer(root, mpath, i, lm, arith, previous, last=i == len(layers_m) - 1,
                            tagged=tagged)
        bundle.layers.append(layer)
        previous = layer.geometry
    io = m["io"]
    first = bundle.layers[0]
    lanes = _int_field(io.get("in_lanes"), mpath, "io.in_lanes", 1, bundle.n_in)
    if first.kind == "conv":
        lanes = first.in_shape[0]    # one pixel of all its channels a beat
    expected_io = io_layout(bundle.n_in, lanes, bundle.num_classes, arith["score_bits"],
                            "hwc" if tagged else None)
    for key, value in expected_io.items():
        if io.get(key) != value or type(io.get(key)) is not type(value):
            raise BchwError(f"expected {json.dumps(value)}, got {json.dumps(io.get(key))}",
                            path=mpath, field=f"io.{key}")
    return bundle


def _layer_kind(mpath: Path, i: int, lm: Any) -> str:
    """A layer entry's ``kind``: 'fc' when absent (an MLP's manifest has none)."""
    if not isinstance(lm, dict):
        raise BchwError("must be a JSON object", path=mpath, field=f"layers[{i}]")
    kind = lm.get("kind", "fc")
    if kind not in ("fc", "conv") or type(kind) is not str:
        raise BchwError(f"must be \"fc\" or \"conv\", got {json.dumps(kind)}", path=mpath,
                        field=f"layers[{i}].kind")
    return kind


def _shape_field(v: Any, path: Any, name: str) -> tuple[int, int, int]:
    if not (isinstance(v, list) and len(v) == 3
            and all(type(x) is int and 1 <= x <= 1 << 20 for x in v)):
        raise BchwError(f"must be [C, H, W], three positive integers, got {json.dumps(v)}",
                        path=path, field=name)
    return (v[0], v[1], v[2])


def _conv_geometry(mpath: Path, f: str, lm: dict[str, Any], n_in: int, n_out: int,
                   previous: LayerGeometry | None) -> LayerGeometry:
    """A convolution's geometry from its manifest entry, every field checked against the rest
    and against the ``previous`` layer's output."""
    in_shape = _shape_field(lm.get("in_shape"), mpath, f"{f}.in_shape")
    if previous is not None and in_shape != previous.out_shape:
        raise BchwError(f"{list(in_shape)} does not match the previous layer's out_shape "
                        f"{list(previous.out_shape)}", path=mpath, field=f"{f}.in_shape")
    if previous is None and math.prod(in_shape) > 1 << 16:
        raise BchwError(f"{math.prod(in_shape)} pixels is more than bchw supports", path=mpath,
                        field=f"{f}.in_shape")
    kernel = _int_field(lm.get("kernel"), mpath, f"{f}.kernel", 1, 1 << 10)
    if kernel % 2 == 0:
        raise BchwError(f"must be odd, so that padding (kernel - 1)/2 keeps the size, got "
                        f"{kernel}", path=mpath, field=f"{f}.kernel")
    padding = _int_field(lm.get("padding"), mpath, f"{f}.padding", 0, 1 << 10)
    if padding != (kernel - 1) // 2:
        raise BchwError(f"expected (kernel - 1)/2 = {(kernel - 1) // 2}, got {padding}",
                        path=mpath, field=f"{f}.padding")
    channels, height, width = in_shape
    pool = _int_field(lm.get("pool"), mpath, f"{f}.pool", 0, 1 << 20)
    if pool == 1 or (pool and (height % pool or width % pool)):
        raise BchwError(f"{pool} must be 0 (no pooling), or 2 or more dividing the "
                        f"{height}×{width} maps", path=mpath, field=f"{f}.pool")
    if n_in != kernel * kernel * channels:
        raise BchwError(f"expected the {kernel}×{kernel}×{channels} window, "
                        f"{kernel * kernel * channels} inputs, got {n_in}", path=mpath,
                        field=f"{f}.in_features")
    out_shape = (n_out, height // pool, width // pool) if pool else (n_out, height, width)
    got = _shape_field(lm.get("out_shape"), mpath, f"{f}.out_shape")
    if got != out_shape:
        raise BchwError(f"expected {list(out_shape)} (out_features, and the maps after "
                        f"pooling), got {list(got)}", path=mpath, field=f"{f}.out_shape")
    return LayerGeometry("conv", in_shape, out_shape, kernel, padding, pool)


def _load_layer(root: Path, mpath: Path, i: int, lm: Any, arith: dict[str, int],
                previous: LayerGeometry | None, last: bool, tagged: bool) -> LayerBundle:
    f = f"layers[{i}]"
    kind = _layer_kind(mpath, i, lm)
    n_in = _int_field(lm.get("in_features"), mpath, f"{f}.in_features", 1, 1 << 20)
    n_out = _int_field(lm.get("out_features"), mpath, f"{f}.out_features", 1, 1 << 20)
    if kind == "conv":
        if last:
            raise BchwError("the last layer gives the class scores: it must be \"fc\"",
                            path=mpath, field=f"{f}.kind")
        if previous is not None and previous.kind != "conv":
            raise BchwError("a convolution cannot follow a fully connected layer", path=mpath,
                            field=f"{f}.kind")
        geometry = _conv_geometry(mpath, f, lm, n_in, n_out, previous)
    else:
        geometry = LayerGeometry.fc(n_in, n_out)
        if previous is not None and n_in != math.prod(previous.out_shape):
            outputs = (f"{previous.out_features}" if previous.kind == "fc" else
                       f"{'×'.join(map(str, previous.out_shape))} = "
                       f"{math.prod(previous.out_shape)}")
            raise BchwError(f"{n_in} does not match the previous layer's {outputs} outputs",
                            path=mpath, field=f"{f}.in_features")
        if i == 0 and n_in > 1 << 16:
            raise BchwError(f"{n_in} inputs is more than bchw supports", path=mpath,
                            field=f"{f}.in_features")
    pe = _int_field(lm.get("pe"), mpath, f"{f}.pe", 1, n_out)
    simd = _int_field(lm.get("simd"), mpath, f"{f}.simd", 1, n_in)
    in_bits = PIXEL_BITS if i == 0 else arith["act_bits"]
    widths = _layer_widths(n_in, in_bits, last, arith)
    nf, sf = fold_counts(n_out, n_in, pe, simd)
    expected = _layer_manifest(i, geometry, in_bits, pe, simd, widths, tagged)
    for key, value in expected.items():
        got = lm.get(key)
        if isinstance(value, dict):
            if not isinstance(got, dict):
                raise BchwError("missing or not a JSON object", path=mpath, field=f"{f}.{key}")
            for sub, v in value.items():
                if got.get(sub) != v or type(got.get(sub)) is not int:
                    raise BchwError(f"expected {v} for this layer, got {json.dumps(got.get(sub))}",
                                    path=mpath, field=f"{f}.{key}.{sub}")
        elif got != value or type(got) is not type(value):
            raise BchwError(f"expected {json.dumps(value)} for this layer, got {json.dumps(got)}",
                            path=mpath, field=f"{f}.{key}")
    roms = {}
    for rom, width, depth in (("weights", pe * simd, nf * sf),
                               ("params", pe * widths.param_bits, nf)):
        files = lm[rom].get("files")
        if not isinstance(files, dict) or not isinstance(files.get("hex"), str):
            raise BchwError("must name the hex image", path=mpath, field=f"{f}.{rom}.files.hex")
        name = files["hex"]
        if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
            raise BchwError(f"{name!r} must be a plain file name inside the bundle", path=mpath,
                            field=f"{f}.{rom}.files.hex")
        roms[rom] = (name, romfmt.read_rom(root / name, width, depth, "hex"))
    weights = unpack_weights(roms["weights"][1], n_out, n_in, pe, simd)
    mul, shift, bias = unpack_params(roms["params"][1], n_out, pe, widths)
    if (shift > widths.shift_max).any():
        j = int(np.argmax(shift > widths.shift_max))
        raise BchwError(f"neuron {j} has shift {int(shift[j])} > {widths.shift_max}",
                        path=root / roms["params"][0], field=f"{f}.params")
    return LayerBundle(index=i, in_features=n_in, out_features=n_out, in_bits=in_bits, pe=pe,
                       simd=simd, widths=widths, weights=weights, mul=mul, shift=shift,
                       bias=bias, weight_file=roms["weights"][0], param_file=roms["params"][0],
                       kind=kind, in_shape=geometry.in_shape, kernel=geometry.kernel,
                       padding=geometry.padding, pool=geometry.pool,
                       out_shape=geometry.out_shape)
