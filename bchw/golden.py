"""The golden model: the bundle's integer arithmetic, exactly, in numpy int64.

This module is the one source of truth for what the hardware computes:

* weights are ±1; inputs of layer 0 are u8 pixels, inputs of later layers are
  the previous layer's outputs (unsigned, ``act_bits`` wide);
* a neuron accumulates ``acc = Σ w·x`` exactly: :func:`acc_bits` is wide
  enough for the worst case, so nothing ever wraps;
* it then requantizes with three integer parameters per neuron, a signed
  multiplier ``M``, a right shift ``S`` and a signed offset ``B``::

      v = (M · acc + B) >> S          (arithmetic shift: floor division by 2**S)
      q = clamp(v, lo, hi)

  hidden layers clamp to ``[0, 2**act_bits − 1]`` (the ReLU is the lower
  bound); the last layer clamps to the signed ``score_bits`` range and its
  outputs are the class scores;
* the class is the first index of the maximum score.

The widths of every intermediate value are derived here from worst-case
bounds, recorded in the manifest by the exporter and used by the gateware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bchw.export import Bundle


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the narrowest two's-complement type that holds ``[lo, hi]``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def unsigned_bits(hi: int) -> int:
    """Bits of the narrowest unsigned type that holds ``[0, hi]`` (at least 1)."""
    return max(1, int(hi).bit_length())


@dataclass(frozen=True)
class LayerWidths:
    """Worst-case-derived widths of one layer's datapath."""

    acc_min: int
    acc_max: int
    acc_bits: int      # signed accumulator, never wraps
    mul_bits: int      # signed per-neuron multiplier M
    shift_bits: int    # unsigned per-neuron shift S
    shift_max: int
    bias_bits: int     # signed per-neuron offset B
    out_lo: int
    out_hi: int
    out_bits: int
    out_signed: bool

    @property
    def param_bits(self) -> int:
        """Bits of one neuron's packed (M, S, B) triple."""
        return self.mul_bits + self.shift_bits + self.bias_bits


def layer_widths(fan_in: int, in_bits: int, *, mul_bits: int, last: bool,
                 act_bits: int, score_bits: int) -> LayerWidths:
    """Derive every width of a layer from its fan-in and number formats.

    ``|acc| <= fan_in · (2**in_bits − 1)``; the bounds are reached by all
    inputs at maximum with all weights +1 (or all −1).  The offset ``B`` gets
    one bit more than the widest product ``M · acc`` and the shift is capped
    so that an offset clipped to the useful range still fits (see
    :func:`requant_params`).
    """
    xmax = (1 << in_bits) - 1
    acc_max = fan_in * xmax
    acc_bits = signed_bits(-acc_max, acc_max)
    if last:
        out_lo, out_hi = -(1 << (score_bits - 1)), (1 << (score_bits - 1)) - 1
        out_bits, out_signed = score_bits, True
    else:
        out_lo, out_hi = 0, (1 << act_bits) - 1
        out_bits, out_signed = act_bits, False
    bias_bits = mul_bits + acc_bits + 1
    reach = max(abs(out_lo), abs(out_hi)) + 2
    shift_max = max(0, mul_bits + acc_bits - 2 - reach.bit_length())
    return LayerWidths(
        acc_min=-acc_max, acc_max=acc_max, acc_bits=acc_bits, mul_bits=mul_bits,
        shift_bits=unsigned_bits(shift_max), shift_max=shift_max, bias_bits=bias_bits,
        out_lo=out_lo, out_hi=out_hi, out_bits=out_bits, out_signed=out_signed)


class RequantRangeError(ValueError):
    """A neuron's scale does not fit the multiplier width."""

    def __init__(self, neuron: int, scale: float, mul_bits: int):
        self.neuron, self.scale, self.mul_bits = neuron, scale, mul_bits
        super().__init__(f"neuron {neuron}: requantization scale {scale:.6g} does not fit a "
                         f"{mul_bits}-bit multiplier even with shift 0")


def requant_params(scale: np.ndarray, offset: np.ndarray, w: LayerWidths
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer (M, S, B) such that ``(M·acc + B) >> S ≈ floor(scale·acc + offset + ½)``.

    Each neuron gets the largest shift that keeps ``M`` and ``B`` in range,
    so the error is at most a few thousandths of an output step over the
    whole accumulator range.  Offsets far outside the reachable range are
    clipped first: such a neuron is constant, and stays the same constant.
    """
    scale = np.asarray(scale, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    mul_lim = (1 << (w.mul_bits - 1)) - 1
    bias_lo, bias_hi = -(1 << (w.bias_bits - 1)), (1 << (w.bias_bits - 1)) - 1
    mul = np.zeros(scale.shape, dtype=np.int64)
    shift = np.zeros(scale.shape, dtype=np.int64)
    bias = np.zeros(scale.shape, dtype=np.int64)
    for j, (k, c) in enumerate(zip(scale.tolist(), offset.tolist())):
        reach = abs(k) * w.acc_max
        c = min(max(c, w.out_lo - 1 - reach), w.out_hi + 1 + reach)
        for s in range(w.shift_max, -1, -1):
            m = round(k * (1 << s))
            b = int(np.floor((c + 0.5) * (1 << s)))
            if abs(m) <= mul_lim and bias_lo <= b <= bias_hi:
                mul[j], shift[j], bias[j] = m, s, b
                break
        else:
            raise RequantRangeError(j, k, w.mul_bits)
    return mul, shift, bias


def requantize(acc: np.ndarray, mul: np.ndarray, shift: np.ndarray, bias: np.ndarray,
               lo: int, hi: int) -> np.ndarray:
    """``clamp((M·acc + B) >> S, lo, hi)`` in int64, broadcasting over a batch."""
    v = (acc.astype(np.int64) * mul + bias) >> shift
    return np.clip(v, lo, hi)


def accumulate(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``acc[n, j] = Σ_i w[j, i] · x[n, i]`` exactly.

    float64 products and sums of integers below 2**53 are exact, and BLAS
    makes this fast; the bound is checked, not assumed.
    """
    bound = float(np.abs(x).max(initial=0)) * weights.shape[1]
    if bound >= 2.0 ** 52:
        raise OverflowError("accumulator bound exceeds exact float64 range")
    acc = x.astype(np.float64) @ weights.astype(np.float64).T
    return np.rint(acc).astype(np.int64)


@dataclass
class GoldenResult:
    """Outputs of :func:`infer`: per-layer integer outputs, scores and classes."""

    layers: list[np.ndarray]     # output of each layer, int64 [N, out_features]
    accs: list[np.ndarray]       # accumulator of each layer, int64 [N, out_features]

    @property
    def scores(self) -> np.ndarray:
        return self.layers[-1]

    @property
    def classes(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)


def infer(bundle: Bundle, images: np.ndarray) -> GoldenResult:
    """Run the bundle's integer arithmetic on u8 ``images`` [N, n_in]."""
    x = np.asarray(images)
    if x.ndim != 2 or x.shape[1] != bundle.n_in:
        raise ValueError(f"images must be [N, {bundle.n_in}], got {list(x.shape)}")
    x = x.astype(np.int64)
    layers, accs = [], []
    for layer in bundle.layers:
        acc = accumulate(x, layer.weights)
        x = requantize(acc, layer.mul, layer.shift, layer.bias,
                       layer.widths.out_lo, layer.widths.out_hi)
        accs.append(acc)
        layers.append(x)
    return GoldenResult(layers=layers, accs=accs)
