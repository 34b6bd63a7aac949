"""BinaryConnect layers, the networks they make, and their checkpoint format.

After Courbariaux, Bengio and David, "BinaryConnect: Training Deep Neural
Networks with binary weights during propagations" (NeurIPS 2015), and their
Theano code: real-valued weights are kept for the updates, binarized for the
propagations, clipped to [-1, 1] after each step; the gradient with respect
to the binary weight is applied to the real weight unchanged.

Activations between layers are fake-quantized to exactly the unsigned A-bit
codes the hardware computes (see :func:`activation_codes`), so the float
model and the integer golden model agree on the class for nearly every input.

A network is written as a spec: an MLP's layer sizes, "784-256-256-10", or a
convolutional network, "2x128C3-MP2-2x256C3-MP2-1024FC-10" (see
:func:`parse_net_spec`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bchw.errors import BchwError, atomic_write_bytes

BINARIZE_MODES = ("det", "stoch", "float")
CHECKPOINT_FORMAT = "bchw-checkpoint"
CHECKPOINT_VERSION = 1
# Numbers in a checkpoint lie within these magnitudes (positive ones at least
# MIN_POSITIVE): beyond them they are nonsense for a network, and folding them
# into integers in bchw.export would overflow float64.
MAX_MAGNITUDE = 1e30
MIN_POSITIVE = 1e-30
# A convolutional spec expands to at most this many tokens, each number at most
# MAX_SPEC_DIGITS long: a corrupt checkpoint's "1000000000x8C3" is refused,
# not expanded.
MAX_SPEC_TOKENS = 1000
MAX_SPEC_DIGITS = 9


def hard_sigmoid(w: torch.Tensor) -> torch.Tensor:
    """clip((w + 1) / 2, 0, 1): the probability that stochastic binarization gives +1."""
    return ((w + 1) / 2).clamp(0, 1)


def binarize(w: torch.Tensor, mode: str, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Binarize real weights to ±1 ('det', 'stoch') or pass them through ('float').

    'det' maps w >= 0 to +1 (zero included: the hardware stores bit 1 for
    w >= 0), 'stoch' draws +1 with probability hard_sigmoid(w) from
    ``generator`` (torch's global generator if None).
    """
    # (bool * 2 - 1 in place: a quarter of the time of torch.where on CPU.)
    if mode == "det":
        return (w >= 0).to(w.dtype).mul_(2).sub_(1)
    if mode == "stoch":
        u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        # u < hard_sigmoid(w)  <=>  2u - 1 < w, for u in [0, 1), without the clamp.
        return (u.mul_(2).sub_(1) < w).to(w.dtype).mul_(2).sub_(1)
    if mode == "float":
        return w
    raise ValueError(f"binarize mode must be one of {BINARIZE_MODES}, not {mode!r}")


class _StraightThrough(torch.autograd.Function):
    """Binarized weights forward, the gradient passed to the real weights unchanged
    (identity straight-through), without the extra tensors of ``w + (wb - w).detach()``."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, mode: str, generator: torch.Generator | None
                ) -> torch.Tensor:
        return binarize(w, mode, generator)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class _BinaryWeights(nn.Module):
    """The BinaryConnect rules shared by :class:`BinaryLinear` and :class:`BinaryConv2d`.

    ``weight`` holds the real values, initialised U(-1, 1) and kept in
    [-1, 1] by :meth:`clip_`. Training forwards binarize with ``mode``
    (identity straight-through gradient); eval forwards binarize
    deterministically, as the hardware does ('float' never binarizes), unless
    ``eval_weights`` is 'real': then they use the real weights, the paper's
    test-time rule for stochastic BinaryConnect (its Theano code's
    ``deterministic and stochastic`` case).
    ``lr_scale`` is the paper's per-layer Glorot learning-rate scale,
    1 / sqrt(1.5 / (fan_in + fan_out)).
    """

    def __init__(self, shape: tuple[int, ...], fan_in: int, fan_out: int, mode: str,
                 generator: torch.Generator | None):
        super().__init__()
        if mode not in BINARIZE_MODES:
            raise ValueError(f"mode must be one of {BINARIZE_MODES}, not {mode!r}")
        self.mode = mode
        self.generator = generator
        self.lr_scale = 1.0 / math.sqrt(1.5 / (fan_in + fan_out))
        self.eval_weights = "binary"
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-1, 1))

    def binary_weight(self) -> torch.Tensor:
        if self.mode == "float" or (not self.training and self.eval_weights == "real"):
            return self.weight
        if not self.training:
            return binarize(self.weight, "det")
        return _StraightThrough.apply(self.weight, self.mode, self.generator)

    @torch.no_grad()
    def clip_(self) -> None:
        self.weight.clamp_(-1, 1)


class BinaryLinear(_BinaryWeights):
    """Linear layer without bias whose propagations use binarized weights.

    ``weight`` is [out, in]; the binarization, clipping, evaluation and
    learning-rate rules are :class:`_BinaryWeights`'s.
    """

    def __init__(self, in_features: int, out_features: int, mode: str = "det",
                 generator: torch.Generator | None = None):
        super().__init__((out_features, in_features), in_features, out_features, mode,
                         generator)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.binary_weight().t()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, mode={self.mode}"


class BinaryConv2d(_BinaryWeights):
    """k×k convolution without bias, stride 1, zero padding (k - 1) // 2, binarized weights.

    The padding keeps the height and width (k is odd). ``weight`` is
    [out, in, k, k]; the binarization, clipping, evaluation and learning-rate
    rules are :class:`_BinaryWeights`'s, with fan_in = in·k·k and
    fan_out = out·k·k as for the paper's (Lasagne) convolution layers.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 mode: str = "det", generator: torch.Generator | None = None):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, not {kernel_size}")
        area = kernel_size * kernel_size
        super().__init__((out_channels, in_channels, kernel_size, kernel_size),
                         in_channels * area, out_channels * area, mode, generator)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.padding = (kernel_size - 1) // 2

    def forward(self, x: torch.Tensor, padding: int | None = None) -> torch.Tensor:
        """The convolution, with ``padding`` instead of the layer's own when given."""
        pad = self.padding if padding is None else padding
        return nn.functional.conv2d(x, self.binary_weight(), padding=pad)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, kernel={self.kernel_size}, "
                f"padding={self.padding}, mode={self.mode}")


def activation_codes(z: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """The hardware's activation: clamp(round(z / s), 0, 2**bits - 1), s = clip / (2**bits - 1).

    Rounding is half up, floor(z / s + 1/2), which is what an integer
    requantizer ``(acc * m + o) >> shift`` computes when ``o`` carries the half.
    """
    top = 2**bits - 1
    return torch.floor(z / (clip / top) + 0.5).clamp(0, top)


class _QuantizedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.clip = clip
        return activation_codes(z, bits, clip) * (clip / (2**bits - 1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        return grad * ((z >= 0) & (z <= ctx.clip)).to(grad.dtype), None, None


class ActQuant(nn.Module):
    """ReLU fake-quantized to ``bits`` unsigned bits over [0, clip].

    The output is exactly ``code * s`` with ``code`` from
    :func:`activation_codes`; the gradient passes straight through the
    rounding and is zero outside [0, clip]. ``quantize=False`` gives a plain
    ReLU, for float baselines.
    """

    def __init__(self, bits: int = 8, clip: float = 2.0, quantize: bool = True):
        super().__init__()
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in 1..16, not {bits}")
        if not clip > 0:
            raise ValueError(f"clip must be positive, not {clip}")
        self.bits = bits
        self.clip = float(clip)
        self.quantize = quantize

    @property
    def step(self) -> float:
        return self.clip / (2**self.bits - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.quantize:
            return torch.relu(z)
        return _QuantizedReLU.apply(z, self.bits, self.clip)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip={self.clip}, quantize={self.quantize}"


# Specs: an MLP's layer sizes, or the layer tokens of a convolutional network.

def is_mlp_spec(spec: Any) -> bool:
    """Whether ``spec`` is written as an MLP's layer sizes (digits and '-' only).

    Such a spec is read by :func:`parse_spec`, even when malformed ("784--10"),
    so that its errors speak of layer sizes.
    """
    return isinstance(spec, str) and re.fullmatch(r"[0-9-]*", spec.strip()) is not None


def parse_spec(spec: Any) -> list[int]:
    """Layer sizes from an MLP spec such as "784-256-256-10" (at least two positive ints)."""
    if not is_mlp_spec(spec) or not re.fullmatch(r"\d+(-\d+)+", spec.strip()):
        conv = isinstance(spec, str) and re.search(r"\dC\d|MP\d|\dFC", spec)
        raise BchwError(f"layer sizes must look like '784-256-10' (two or more positive "
                        f"integers joined by '-'), not {spec!r}"
                        + ("; this is a convolutional network's spec, and only MLPs "
                           "are read here" if conv else ""), field="spec")
    sizes = [int(s) for s in spec.strip().split("-")]
    if min(sizes) < 1:
        raise BchwError(f"layer sizes must be positive, not {spec!r}", field="spec")
    return sizes


@dataclass(frozen=True)
class LayerSpec:
    """One binary layer of a network, with the shapes it maps per image.

    ``kind`` 'conv': ``in_channels`` -> ``out_channels`` feature maps through
    ``kernel`` × ``kernel`` binary convolutions, stride 1, zero ``padding``
    (kernel - 1) // 2 (height and width are kept), then, if ``pool`` > 0,
    ``pool`` × ``pool`` max pooling of stride ``pool``.
    ``kind`` 'fc': ``in_channels`` -> ``out_channels`` features (``kernel``,
    ``padding`` and ``pool`` are 0).
    ``in_shape`` and ``out_shape`` are (C, H, W), after pooling; F features
    are (F, 1, 1). The first 'fc' after a 'conv' reads its C·H·W outputs
    flattened channel-major (PyTorch's order: feature c·H·W + h·W + w holds
    channel c, row h, column w), and the hardware reads them in that order.
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel: int
    padding: int
    pool: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]


# One token of a convolutional spec: an optional repeat "2x" / "2×" before a
# convolution or a fully connected layer, a max pooling, or the classes.
_TOKEN = re.compile(r"(?:(?P<repeat>\d+)[x\u00d7])?(?:(?P<conv>\d+)C(?P<kernel>\d+)"
                    r"|(?P<fc>\d+)FC)|MP(?P<pool>\d+)|(?P<classes>\d+)")


def _spec_tokens(spec: Any) -> list[tuple[str, int, int]]:
    """The layers of a convolutional spec, repeats expanded, checked for form and order.

    Each is (kind, size, kernel): ('conv', N, k), ('pool', 0, k), ('fc', N, 0),
    and last ('classes', N, 0). Sizes, which need the input shape, are
    :func:`parse_net_spec`'s to check.
    """
    def fail(message: str):
        raise BchwError(f"{message} (spec {_show(spec, 80)})", field="spec")

    if not isinstance(spec, str):
        fail(f"a spec is a string such as '32C3-MP2-64C3-MP2-256FC-10' or "
             f"'784-256-10', not {type(spec).__name__}")
    texts = spec.strip().split("-")
    if any(len(digits) > MAX_SPEC_DIGITS for digits in re.findall(r"\d+", spec)):
        fail(f"numbers in a spec have at most {MAX_SPEC_DIGITS} digits")
    tokens: list[tuple[str, int, int]] = []
    for i, text in enumerate(texts):
        m = _TOKEN.fullmatch(text)
        if m is None:
            fail(f"{text!r} is not a layer: write NCk (N k×k convolutions), MPk (k×k max "
                 f"pooling), NFC (N fully connected) or, last, the number of classes, "
                 f"with an optional repeat such as 2x128C3")
        if min(int(v) for v in m.groupdict().values() if v is not None) < 1:
            fail(f"{text!r}: sizes, kernels and repeats must be positive")
        if m["classes"] is not None and i == 0:
            fail("a convolutional network's spec starts with a layer, not a bare integer: "
                 "the input shape comes from the data set (an MLP's spec is all integers)")
        if m["classes"] is not None and i < len(texts) - 1:
            fail(f"only the last token, the number of classes, is a bare integer: "
                 f"write {text}FC for a hidden fully connected layer of {text}")
        if m["classes"] is None and i == len(texts) - 1:
            fail(f"the last token must be the number of classes, a bare integer, "
                 f"not {text!r}")
        if m["conv"] is not None:
            if int(m["kernel"]) % 2 == 0:
                fail(f"{text!r}: the kernel must be odd, so that padding (k - 1) / 2 "
                     f"keeps the size")
            token = ("conv", int(m["conv"]), int(m["kernel"]))
        elif m["fc"] is not None:
            token = ("fc", int(m["fc"]), 0)
        elif m["pool"] is not None:
            if int(m["pool"]) < 2:
                fail(f"{text!r}: max pooling is at least 2×2")
            token = ("pool", 0, int(m["pool"]))
        else:
            token = ("classes", int(m["classes"]), 0)
        repeat = int(m["repeat"] or 1)
        if len(tokens) + repeat > MAX_SPEC_TOKENS:
            fail(f"more than {MAX_SPEC_TOKENS} layers")
        tokens += [token] * repeat
    after = {None: "start the spec", "pool": "follow another max pooling",
             "fc": "follow a fully connected layer"}
    for (kind, _, kernel), previous in zip(tokens, [None] + [t[0] for t in tokens]):
        if kind == "pool" and previous != "conv":
            fail(f"max pooling MP{kernel} must follow a convolution, not {after[previous]}")
        if kind == "conv" and previous == "fc":
            fail("a convolution cannot follow a fully connected layer")
    return tokens


def canonical_spec(spec: Any) -> str:
    """``spec`` in the form a checkpoint records: sizes without leading zeros, repeats expanded.

    "064-32-10" -> "64-32-10"; "2x128C3-MP2-10" -> "128C3-128C3-MP2-10". Checks
    the form and the order of the layers; the sizes need the input shape
    (:func:`parse_net_spec`).
    """
    if is_mlp_spec(spec):
        return "-".join(map(str, parse_spec(spec)))
    names = {"conv": "{}C{}", "pool": "MP{1}", "fc": "{}FC", "classes": "{}"}
    return "-".join(names[kind].format(size, kernel)
                    for kind, size, kernel in _spec_tokens(spec))


def parse_net_spec(spec: Any, in_shape: Sequence[int] | None) -> list[LayerSpec]:
    """The binary layers of ``spec`` for input images of shape ``in_shape`` (C, H, W).

    A convolutional network's spec is tokens joined by '-':

    - ``NCk``: a binary convolution to N channels, k×k kernel (k odd), stride
      1, zero padding (k - 1) // 2 (k = 3: padding 1, as in the paper);
    - ``MPk``: k×k max pooling, stride k, no padding, of the convolution just
      before it (its height and width must divide by k);
    - ``NFC``: a hidden fully connected layer of N;
    - last, a bare integer: the number of classes (a fully connected layer
      without activation).

    ``2x128C3`` (or ``2×128C3``) stands for two such layers, so the paper's
    CIFAR-10 network is "2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10".
    The input shape comes from the data set, not the spec, so such a spec
    never starts with a bare integer. An MLP's spec, all bare integers with
    the input features first ("784-256-10"), gives fully connected layers;
    ``in_shape`` may then be None, else its C·H·W must be the first size.

    Every problem is a :class:`BchwError` with field 'spec' saying what is wrong.
    """
    if is_mlp_spec(spec):
        sizes = parse_spec(spec)
        if in_shape is not None and math.prod(in_shape) != sizes[0]:
            raise BchwError(f"the input has {math.prod(in_shape)} features "
                            f"({'×'.join(map(str, in_shape))}), so an MLP's spec must start "
                            f"with {math.prod(in_shape)}, not {spec!r}", field="spec")
        return [LayerSpec("fc", i, o, 0, 0, 0, (i, 1, 1), (o, 1, 1))
                for i, o in zip(sizes[:-1], sizes[1:])]
    tokens = _spec_tokens(spec)
    if in_shape is None or len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"a convolutional spec needs the input shape as (C, H, W), "
                         f"three positive integers, not {in_shape!r}")
    shape = tuple(int(v) for v in in_shape)
    layers: list[LayerSpec] = []
    for kind, size, kernel in tokens:
        if kind == "conv":
            layers.append(LayerSpec("conv", shape[0], size, kernel, (kernel - 1) // 2, 0,
                                    shape, (size, *shape[1:])))
        elif kind == "pool":
            conv = layers[-1]
            channels, height, width = conv.out_shape
            if height % kernel or width % kernel:
                raise BchwError(f"MP{kernel} after layer {len(layers)} needs a height and "
                                f"width divisible by {kernel}, not {height}×{width} (input "
                                f"{'×'.join(map(str, in_shape))}, spec {_show(spec, 80)})",
                                field="spec")
            layers[-1] = dataclasses.replace(
                conv, pool=kernel, out_shape=(channels, height // kernel, width // kernel))
        else:  # a fully connected layer reads all C·H·W values before it
            features = math.prod(shape)
            layers.append(LayerSpec("fc", features, size, 0, 0, 0, (features, 1, 1),
                                    (size, 1, 1)))
        shape = layers[-1].out_shape
    return layers


def square_hinge_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean(max(0, 1 - t * y)**2) with targets t = 2 * onehot - 1, as in the paper."""
    t = 2 * nn.functional.one_hot(labels, scores.shape[1]).to(scores.dtype) - 1
    return (1 - t * scores).clamp(min=0).square().mean()


class BinaryNet(nn.Module):
    """A BinaryConnect network of ``spec`` (:func:`parse_net_spec`), convolutional or not.

    Each convolution is BinaryConv2d -> MaxPool2d (when an ``MPk`` follows
    it in the spec) -> BatchNorm2d -> ActQuant, the order in which the
    paper's Theano code trains its CIFAR-10 network; each hidden fully
    connected layer BinaryLinear -> BatchNorm1d -> ActQuant, and the last
    BinaryLinear -> BatchNorm1d (the class scores). No layer has a bias:
    batch norm provides it. Between the last convolution and the first fully
    connected layer the C·H·W values are flattened channel-major, PyTorch's
    order (see :class:`LayerSpec`).

    Input: pixels 0..255 as a float tensor [batch, C·H·W], flattened as the
    data sets give them (a convolutional network reshapes them to
    [batch, C, H, W] itself, channel-major); the model normalises them,
    x = (pix / 255 - input_mean) / input_std, with scalar buffers set from the
    training set (:meth:`set_input_norm`). The first convolution pads the
    pixels with 0 before they are normalised (so the hardware pads with u8 0
    and folds the normalisation exactly). Output: class scores [batch, classes].

    ``convs`` and ``linears`` hold the binary layers, ``norms`` their batch
    norms (convolutions first) and ``acts`` the activations of all but the
    last; an MLP's module names are those of :class:`BinaryMLP`'s checkpoints.
    ``in_shape`` is recorded (and needed) for every spec but an MLP's sizes.
    """

    def __init__(self, spec: str, in_shape: Sequence[int] | None = None, *,
                 act_bits: int = 8, act_clip: float = 2.0, binarize: str = "det",
                 float_act: bool = False, bn_eps: float = 1e-4, bn_momentum: float = 0.15,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.layer_specs = parse_net_spec(spec, in_shape)
        self.spec = canonical_spec(spec)
        self.in_shape = None if is_mlp_spec(spec) else tuple(int(v) for v in in_shape)
        self.in_features = math.prod(self.layer_specs[0].in_shape)
        self.num_classes = self.layer_specs[-1].out_channels
        self.act_bits = act_bits
        self.act_clip = float(act_clip)
        self.binarize = binarize
        self.float_act = float_act
        convs = [s for s in self.layer_specs if s.kind == "conv"]
        fcs = [s for s in self.layer_specs if s.kind == "fc"]
        self.convs = nn.ModuleList(BinaryConv2d(s.in_channels, s.out_channels, s.kernel,
                                                binarize, generator) for s in convs)
        self.pools = nn.ModuleList(nn.MaxPool2d(s.pool) if s.pool else nn.Identity()
                                   for s in convs)
        self.linears = nn.ModuleList(BinaryLinear(s.in_channels, s.out_channels, binarize,
                                                  generator) for s in fcs)
        self.norms = nn.ModuleList(
            [nn.BatchNorm2d(s.out_channels, eps=bn_eps, momentum=bn_momentum) for s in convs]
            + [nn.BatchNorm1d(s.out_channels, eps=bn_eps, momentum=bn_momentum) for s in fcs])
        self.acts = nn.ModuleList(ActQuant(act_bits, act_clip, quantize=not float_act)
                                  for _ in self.layer_specs[:-1])
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(1.0))

    @property
    def binary_layers(self) -> list[_BinaryWeights]:
        """The binary layers in the order of the spec (and of a checkpoint's ``layers``)."""
        return [*self.convs, *self.linears]

    def set_input_norm(self, mean: float, std: float) -> None:
        self.input_mean.fill_(mean)
        self.input_std.fill_(std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.convs:
            x = (pixels / 255 - self.input_mean) / self.input_std
        else:
            # The first convolution's zero padding is of *pixels* (value 0, then
            # normalised like every pixel), as the hardware pads its u8 input; the
            # later ones pad activation code 0, which is the float 0.
            pad = self.convs[0].padding
            x = nn.functional.pad(pixels.reshape(-1, *self.in_shape), (pad,) * 4)
            x = (x / 255 - self.input_mean) / self.input_std
        for i, (conv, pool) in enumerate(zip(self.convs, self.pools)):
            x = self.acts[i](self.norms[i](pool(conv(x, padding=0 if i == 0 else None))))
        x = x.flatten(1)  # channel-major C·H·W: the order the hardware reads
        for i, linear in enumerate(self.linears, len(self.convs)):
            x = self.norms[i](linear(x))
            if i < len(self.acts):
                x = self.acts[i](x)
        return x

    def clip_(self) -> None:
        for layer in self.binary_layers:
            layer.clip_()

    def set_eval_weights(self, kind: str) -> None:
        """Evaluate with 'binary' weights (the hardware's, the default) or 'real' ones."""
        if kind not in ("binary", "real"):
            raise ValueError(f"eval weights must be 'binary' or 'real', not {kind!r}")
        for layer in self.binary_layers:
            layer.eval_weights = kind

    def architecture(self) -> dict:
        """The settings a checkpoint's config must record to rebuild this model."""
        arch = {"spec": self.spec, "act_bits": self.act_bits, "act_clip": self.act_clip,
                "binarize": self.binarize, "float_act": self.float_act}
        if self.in_shape is not None:
            arch["in_shape"] = list(self.in_shape)
        return arch


class BinaryMLP(BinaryNet):
    """The BinaryNet of an MLP spec, "784-256-256-10": BinaryLinear -> BatchNorm1d -> ActQuant
    per hidden layer, BinaryLinear -> BatchNorm1d last, with its layer ``sizes``.

    Any other spec is a :class:`BchwError` (field 'spec').
    """

    def __init__(self, spec: str, **options):
        sizes = parse_spec(spec)
        super().__init__(spec, None, **options)
        self.sizes = sizes


# Checkpoints: plain tensors, numbers, strings, lists and dicts, so that
# torch.load(weights_only=True) reads them without running pickled code.
# ``layers`` holds one entry per binary layer, in the order of the spec:
# weight ([out, in] or [out, in, k, k]) and the batch norm after it.

def save_checkpoint(path: str | os.PathLike, model: BinaryNet, config: dict,
                    metrics: dict) -> None:
    """Write ``model`` with its training ``config`` and ``metrics`` (plain JSON types)."""
    arch = model.architecture()
    for key, value in arch.items():
        if key in config and config[key] != value:
            raise ValueError(f"config[{key!r}] = {config[key]!r} but the model has {value!r}")
    layers = [{"weight": layer.weight.detach().float().cpu().clone(),
               "bn_mean": norm.running_mean.detach().float().cpu().clone(),
               "bn_var": norm.running_var.detach().float().cpu().clone(),
               "bn_weight": norm.weight.detach().float().cpu().clone(),
               "bn_bias": norm.bias.detach().float().cpu().clone(),
               "bn_eps": float(norm.eps)}
              for layer, norm in zip(model.binary_layers, model.norms)]
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": {**config, **arch},
            "input_norm": {"mean": float(model.input_mean), "std": float(model.input_std)},
            "layers": layers, "metrics": metrics}
    _validate_checkpoint(ckpt, path)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    try:  # refuse to write what load_checkpoint could not read
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"config and metrics must hold plain JSON types only: {e}") from None
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint; every problem is a BchwError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise BchwError("no such checkpoint file (train one with `bchw train`)", path=path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # torch raises many types for truncated or foreign files; all mean the same here.
    except Exception as e:  # noqa: BLE001
        # One line, the reason only: not torch's advice to load the pickled code anyway.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise BchwError(f"not a readable bchw checkpoint (truncated, corrupt, or holding "
                        f"more than tensors and plain data): {type(e).__name__}: "
                        f"{reason.split('. ', 1)[0]}", path=path) from None
    _validate_checkpoint(ckpt, path)
    return ckpt


def model_from_checkpoint(ckpt: dict | str | os.PathLike) -> BinaryNet:
    """Rebuild the model of a checkpoint (a loaded dict or a path), in eval mode.

    An MLP spec gives a :class:`BinaryMLP`, any other a :class:`BinaryNet`
    for the recorded ``config.in_shape``.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = ckpt["config"]
    options = {"act_bits": cfg["act_bits"], "act_clip": cfg["act_clip"],
               "binarize": cfg["binarize"], "float_act": cfg.get("float_act", False)}
    if is_mlp_spec(cfg["spec"]):
        model = BinaryMLP(cfg["spec"], **options)
    else:
        model = BinaryNet(cfg["spec"], cfg["in_shape"], **options)
    with torch.no_grad():
        for layer, binary, norm in zip(ckpt["layers"], model.binary_layers, model.norms):
            binary.weight.copy_(layer["weight"])
            norm.running_mean.copy_(layer["bn_mean"])
            norm.running_var.copy_(layer["bn_var"])
            norm.weight.copy_(layer["bn_weight"])
            norm.bias.copy_(layer["bn_bias"])
            norm.eps = layer["bn_eps"]
    model.set_input_norm(ckpt["input_norm"]["mean"], ckpt["input_norm"]["std"])
    return model.eval()


def _validate_checkpoint(ckpt: Any, path: str | os.PathLike) -> None:
    def fail(field: str | None, message: str):
        raise BchwError(message, path=path, field=field)

    def get(d: dict, key: str, types: type | tuple, where: str) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in d:
            fail(name, "missing")
        value = d[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                    else (types,)):
            fail(name, f"must be {_type_names(types)}, not a bool")
        if not isinstance(value, types):
            fail(name, f"must be {_type_names(types)}, not {type(value).__name__}")
        return value

    def number(d: dict, key: str, where: str, *, positive: bool) -> float:
        value = get(d, key, (int, float), where)
        lo = MIN_POSITIVE if positive else -MAX_MAGNITUDE
        if not lo <= value <= MAX_MAGNITUDE:  # NaN fails too; exact for huge ints
            fail(f"{where}.{key}", f"must be a number in {lo:g}..{MAX_MAGNITUDE:g}, "
                                   f"not {_show(value)}")
        return float(value)

    if not isinstance(ckpt, dict):
        fail(None, f"must hold a dict, not {type(ckpt).__name__}")
    if get(ckpt, "format", str, "") != CHECKPOINT_FORMAT:
        fail("format", f"must be {CHECKPOINT_FORMAT!r}, not {_show(ckpt['format'])}")
    if get(ckpt, "version", int, "") != CHECKPOINT_VERSION:
        fail("version", f"this bchw reads version {CHECKPOINT_VERSION}, "
                        f"not {_show(ckpt['version'])}")

    cfg = get(ckpt, "config", dict, "")
    spec = get(cfg, "spec", str, "config")
    in_shape = None
    try:
        canonical_spec(spec)  # the form first: whether config.in_shape is needed
        if not is_mlp_spec(spec):
            in_shape = get(cfg, "in_shape", list, "config")
            if len(in_shape) != 3 or not all(type(v) is int and 1 <= v <= MAX_MAGNITUDE
                                             for v in in_shape):
                fail("config.in_shape", f"must be [channels, height, width], three positive "
                                        f"integers, not {_show(in_shape)}")
        layer_specs = parse_net_spec(spec, in_shape)
    except BchwError as e:
        if e.field != "spec":
            raise
        fail("config.spec", e.message)
    act_bits = get(cfg, "act_bits", int, "config")
    if not 1 <= act_bits <= 16:
        fail("config.act_bits", f"must be in 1..16, not {_show(act_bits)}")
    number(cfg, "act_clip", "config", positive=True)
    if get(cfg, "binarize", str, "config") not in BINARIZE_MODES:
        fail("config.binarize", f"must be one of {BINARIZE_MODES}, not {_show(cfg['binarize'])}")
    if "float_act" in cfg:
        get(cfg, "float_act", bool, "config")
    get(cfg, "dataset", str, "config")
    get(cfg, "seed", int, "config")

    norm = get(ckpt, "input_norm", dict, "")
    number(norm, "mean", "input_norm", positive=False)
    number(norm, "std", "input_norm", positive=True)

    layers = get(ckpt, "layers", list, "")
    if len(layers) != len(layer_specs):
        fail("layers", f"spec {_show(spec, 80)} has {len(layer_specs)} layers, "
                       f"the checkpoint {len(layers)}")
    for i, (layer, spec_i) in enumerate(zip(layers, layer_specs)):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            fail(where, f"must be a dict, not {type(layer).__name__}")
        out = (spec_i.out_channels,)
        weight = (spec_i.out_channels, spec_i.in_channels)
        if spec_i.kind == "conv":
            weight += (spec_i.kernel, spec_i.kernel)
        shapes = {"weight": weight, "bn_mean": out, "bn_var": out, "bn_weight": out,
                  "bn_bias": out}
        for key, shape in shapes.items():
            t = get(layer, key, torch.Tensor, where)
            if t.layout != torch.strided or t.device.type != "cpu":
                fail(f"{where}.{key}", f"must be a dense CPU tensor, not {t.layout} on "
                                       f"{t.device.type}")
            if not t.is_floating_point():
                fail(f"{where}.{key}", f"must be a floating-point tensor, not {t.dtype}")
            if tuple(t.shape) != shape:
                fail(f"{where}.{key}", f"shape must be {list(shape)} for spec "
                                       f"{_show(spec, 80)}, not {list(t.shape)}")
            if not torch.isfinite(t).all():
                fail(f"{where}.{key}", "holds NaN or infinite values")
            if t.abs().max() > MAX_MAGNITUDE:
                fail(f"{where}.{key}", f"holds values beyond ±{MAX_MAGNITUDE:g}")
        if (layer["bn_var"] < 0).any():
            fail(f"{where}.bn_var", "holds negative variances")
        number(layer, "bn_eps", where, positive=True)

    get(ckpt, "metrics", dict, "")


def _show(value: Any, limit: int = 40) -> str:
    """A short one-line repr for a message: no huge integers, long strings cut at ``limit``."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _type_names(types: type | tuple) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)
