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

A convolution (:class:`bchw.export.LayerGeometry`) is a matrix over windows:
its feature maps are [N, H, W, C] (HWC, the order they travel in), padded
with zeros, cut into k×k windows flattened in (ky, kx, c) order
(:func:`windows`), accumulated like a fully connected layer's inputs; its
max pooling takes the maximum *accumulator* of each pool×pool window
(:func:`max_pool`), as training pools before its batch norm, and then
requantizes.  The hardware may pool the requantized codes instead: that is
the same, channel by channel (:func:`pool_codes`).

The widths of every intermediate value are derived here from worst-case
bounds, recorded in the manifest by the exporter and used by the gateware.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bchw.export import Bundle, LayerBundle

#: Values of a layer's window matrix (or input vectors) per batch that :func:`infer`
#: works on at once: 2**22 float64 values are 32 MiB, and the matrix products stay fast.
BATCH_VALUES = 1 << 22


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
    bound = max(abs(float(x.max(initial=0))), abs(float(x.min(initial=0)))) * weights.shape[1]
    if bound >= 2.0 ** 52:
        raise OverflowError("accumulator bound exceeds exact float64 range")
    acc = np.asarray(x, dtype=np.float64) @ weights.astype(np.float64).T
    return np.rint(acc).astype(np.int64)


def windows(maps: np.ndarray, kernel: int, padding: int) -> np.ndarray:
    """The k×k windows of HWC feature ``maps`` [N, H, W, C], stride 1, zero ``padding``.

    Gives [N, H', W', k·k·C] with H' = H + 2·padding − k + 1 (H when
    padding = (k − 1)/2): the window at (y, x) holds the padded maps' values
    at rows y..y+k−1 and columns x..x+k−1, flattened in (ky, kx, c) order,
    channel fastest, as the sliding-window hardware emits them and as the
    exported weight columns are ordered.
    """
    n, h, w, c = maps.shape
    padded = np.pad(maps, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h_out, w_out = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    out = np.empty((n, h_out, w_out, kernel * kernel * c), dtype=maps.dtype)
    for ky in range(kernel):
        for kx in range(kernel):
            j = (ky * kernel + kx) * c
            out[..., j:j + c] = padded[:, ky:ky + h_out, kx:kx + w_out, :]
    return out


def max_pool(maps: np.ndarray, pool: int) -> np.ndarray:
    """pool×pool max pooling, stride ``pool``, of HWC ``maps`` [N, H, W, C] (H, W divisible)."""
    n, h, w, c = maps.shape
    return maps.reshape(n, h // pool, pool, w // pool, pool, c).max(axis=(2, 4))


def pool_codes(codes: np.ndarray, mul: np.ndarray, pool: int) -> np.ndarray:
    """Pooling of requantized HWC ``codes`` [N, H, W, C] that equals pooling the accumulators.

    ``clamp((M·acc + B) >> S)`` never decreases as ``acc`` grows when M >= 0
    and never increases when M < 0, so requantizing the maximum accumulator
    gives the maximum code of a channel with M >= 0 and the *minimum* code of
    one with M < 0 (M = 0: all codes are equal).  Hardware that pools after
    its requantizer pools this way.
    """
    negative = np.asarray(mul) < 0
    return np.where(negative, -max_pool(-codes, pool), max_pool(codes, pool))


def input_pixels(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """u8 ``images`` [N, n_in] in the order the hardware takes them, as int64.

    A data set's images are C·H·W, channel-major; a convolutional network
    takes them in HWC order (``io.pixel_order`` "hwc"), one pixel of C values
    a beat: [N, H·W·C].  An MLP takes them as they are.
    """
    x = np.asarray(images)
    if x.ndim != 2 or x.shape[1] != bundle.n_in:
        raise ValueError(f"images must be [N, {bundle.n_in}], got {list(x.shape)}")
    x = x.astype(np.int64)
    first = bundle.layers[0]
    if first.kind == "conv":
        c, h, w = first.in_shape
        x = x.reshape(len(x), c, h, w).transpose(0, 2, 3, 1).reshape(len(x), c * h * w)
    return x


@dataclass
class GoldenResult:
    """Outputs of :func:`infer`: per-layer integer outputs, scores and classes.

    A convolution's output and accumulators are its feature maps after
    pooling, flattened in HWC order (the order they travel in): [N, H'·W'·C].
    """

    layers: list[np.ndarray]     # output of each layer, int64 [N, out_features or H'·W'·C]
    accs: list[np.ndarray]       # accumulators of each layer (a convolution's: max-pooled)

    @property
    def scores(self) -> np.ndarray:
        return self.layers[-1]

    @property
    def classes(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)


def layer_forward(layer: LayerBundle, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One layer's (output, accumulators) for its input ``x``.

    A fully connected layer takes [N, in_features] and gives [N, out_features];
    a convolution takes HWC maps [N, H, W, C] and gives [N, H', W', C_out]
    after pooling.
    """
    lo, hi = layer.widths.out_lo, layer.widths.out_hi
    if layer.kind != "conv":
        acc = accumulate(x, layer.weights)
        return requantize(acc, layer.mul, layer.shift, layer.bias, lo, hi), acc
    cols = windows(x.astype(np.float64), layer.kernel, layer.padding)   # accumulate's type
    acc = accumulate(cols.reshape(-1, cols.shape[-1]), layer.weights)
    acc = acc.reshape(*cols.shape[:3], layer.out_features)
    if layer.pool:
        acc = max_pool(acc, layer.pool)
    return requantize(acc, layer.mul, layer.shift, layer.bias, lo, hi), acc


def _batches(bundle: Bundle, images: np.ndarray) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """(output, accumulators) of every layer, flattened, for successive batches of images.

    A batch's largest window matrix (or input vectors) holds about
    :data:`BATCH_VALUES` values, whatever the image count.
    """
    x = input_pixels(bundle, images)
    per_image = max(la.in_shape[1] * la.in_shape[2] * la.in_features for la in bundle.layers)
    step = max(1, BATCH_VALUES // per_image)
    for start in range(0, max(len(x), 1), step):
        h = x[start:start + step]
        outs = []
        for layer in bundle.layers:
            if layer.kind == "conv":   # HWC values (flat, or maps already) as maps
                c, height, width = layer.in_shape
                h = h.reshape(len(h), height, width, c)
            else:
                h = h.reshape(len(h), layer.in_features)
            h, acc = layer_forward(layer, h)
            outs.append((_flat(h), _flat(acc)))
        yield outs


def _flat(x: np.ndarray) -> np.ndarray:
    """[N, ...] as [N, values] (HWC for maps), N = 0 included."""
    return x.reshape(len(x), int(np.prod(x.shape[1:])))


def infer(bundle: Bundle, images: np.ndarray) -> GoldenResult:
    """Run the bundle's integer arithmetic on u8 ``images`` [N, n_in] (C·H·W, as data sets
    give them), every layer's outputs and accumulators kept."""
    batches = list(_batches(bundle, images))
    n_layers = len(bundle.layers)
    layers = [np.concatenate([b[i][0] for b in batches]) for i in range(n_layers)]
    accs = [np.concatenate([b[i][1] for b in batches]) for i in range(n_layers)]
    return GoldenResult(layers=layers, accs=accs)


def classify(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """The classes of u8 ``images`` [N, n_in], as :func:`infer` gives them, keeping only the
    scores (a convolutional network's hidden maps of a whole test set are gigabytes)."""
    scores = [b[-1][0] for b in _batches(bundle, images)]
    return np.argmax(np.concatenate(scores), axis=1)
