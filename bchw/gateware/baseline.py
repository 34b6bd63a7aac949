"""The multiplier baseline: the same generator with int8 weights, to measure what ±1 saves.

Each binary engine becomes one whose weight ROM word holds ``PE·SIMD`` signed
8-bit weights (lane ``s`` of PE ``p`` at bits ``[(p·SIMD+s)·8, (p·SIMD+s+1)·8)``,
two's complement, same addressing and padding as :func:`bchw.export.pack_weights`)
and whose trees add ``SIMD`` products ``w·x``, written as plain ``*`` so
synthesis maps them to DSPs or LUTs as it would a real design.  Folding,
pipeline and timing are the binary accelerator's, so :func:`bchw.perf.cycle_model`
holds unchanged; only the accumulator is wider.  The weights are random
(the baseline measures cost, not accuracy) and the requantization reuses the
bundle's per-neuron (M, S, B): most outputs saturate, which the hardware
does not care about, and :func:`int8_golden` models exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bchw import golden
from bchw.export import Bundle, LayerBundle, fold_counts, pack_params
from bchw.gateware.engine import LayerEngine
from bchw.gateware.top import Accelerator, to_verilog

#: Bits of a baseline weight, two's complement.
WEIGHT_BITS = 8


def int8_weights(bundle: Bundle, seed: int = 0) -> list[np.ndarray]:
    """Seeded random int8 weights, ``[out, in]`` per layer, over all of −128…127."""
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=(la.out_features, la.in_features), dtype=np.int8)
            for la in bundle.layers]


def pack_int8_weights(weights: np.ndarray, pe: int, simd: int) -> list[int]:
    """Pack int8 ``weights`` [out, in] into ``NF·SF`` words of ``PE·SIMD`` bytes (padding 0)."""
    n_out, n_in = weights.shape
    nf, sf = fold_counts(n_out, n_in, pe, simd)
    lanes = np.zeros((nf * pe, sf * simd), dtype=np.int8)
    lanes[:n_out, :n_in] = weights
    # [nf, pe, sf, simd] -> [nf, sf, pe, simd]: one word per (nf, sf), byte p*SIMD+s
    words = lanes.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    return [int.from_bytes(row.tobytes(), "little") for row in words]


def int8_widths(layer: LayerBundle) -> golden.LayerWidths:
    """The layer's widths with an accumulator for int8 weights: ``|acc| <= fan_in·xmax·128``.

    M, S, B keep their widths (they are the bundle's values); the requantizer's
    product and sum grow with the accumulator.
    """
    bound = layer.in_features * ((1 << layer.in_bits) - 1) * (1 << (WEIGHT_BITS - 1))
    return dataclasses.replace(layer.widths, acc_min=-bound, acc_max=bound,
                               acc_bits=golden.signed_bits(-bound, bound))


def int8_engine(layer: LayerBundle, weights: np.ndarray, beat_lanes: int | None = None,
                group_output: bool = False, ready_copies: int = 0) -> LayerEngine:
    """The baseline engine of ``layer``: its folding and parameters, ``weights`` inline
    (``beat_lanes``, ``group_output`` and ``ready_copies``: as :class:`LayerEngine`'s)."""
    if weights.shape != (layer.out_features, layer.in_features):
        raise ValueError(f"layer {layer.index}: int8 weights must be "
                         f"[{layer.out_features}, {layer.in_features}], got {list(weights.shape)}")
    return LayerEngine(
        in_features=layer.in_features, out_features=layer.out_features, in_bits=layer.in_bits,
        pe=layer.pe, simd=layer.simd, widths=int8_widths(layer), nf=layer.nf, sf=layer.sf,
        weight_rom={"init": pack_int8_weights(weights, layer.pe, layer.simd)},
        param_rom={"init": pack_params(layer.mul, layer.shift, layer.bias, layer.pe,
                                       layer.widths)},
        weight_bits=WEIGHT_BITS, beat_lanes=beat_lanes, group_output=group_output,
        ready_copies=ready_copies)


class Int8Accelerator(Accelerator):
    """:class:`bchw.gateware.top.Accelerator` with the int8 engines: the same ports and timing.

    Every ROM is inline, so the Verilog is self-contained.
    """

    def __init__(self, bundle: Bundle, weights: Sequence[np.ndarray]):
        if len(weights) != len(bundle.layers):
            raise ValueError(f"{len(bundle.layers)} layers but {len(weights)} weight matrices")
        self.weights = list(weights)
        super().__init__(bundle, "inline")

    def engine(self, layer: LayerBundle, beat_lanes: int | None = None,
               group_output: bool = False, ready_copies: int = 0) -> LayerEngine:
        """The int8 engine of ``layer``, with its weight matrix."""
        return int8_engine(layer, self.weights[layer.index], beat_lanes, group_output,
                           ready_copies)


def generate_int8_verilog(bundle: Bundle, seed: int = 0) -> str:
    """A self-contained ``bchw_top`` of the int8 baseline with :func:`int8_weights` ``(seed)``."""
    return to_verilog(Int8Accelerator(bundle, int8_weights(bundle, seed)))


def int8_golden(bundle: Bundle, weights: Sequence[np.ndarray], images: np.ndarray
                ) -> golden.GoldenResult:
    """What the baseline computes: ``acc = W·x`` exactly in int64, then the bundle's
    :func:`bchw.golden.requantize`; scores and classes as :func:`bchw.golden.infer`."""
    x = np.asarray(images)
    if x.ndim != 2 or x.shape[1] != bundle.n_in:
        raise ValueError(f"images must be [N, {bundle.n_in}], got {list(x.shape)}")
    x = x.astype(np.int64)
    layers, accs = [], []
    for layer, w in zip(bundle.layers, weights, strict=True):
        acc = x @ np.asarray(w, dtype=np.int64).T
        x = golden.requantize(acc, layer.mul, layer.shift, layer.bias,
                              layer.widths.out_lo, layer.widths.out_hi)
        accs.append(acc)
        layers.append(x)
    return golden.GoldenResult(layers=layers, accs=accs)
