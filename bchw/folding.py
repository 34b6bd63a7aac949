"""Folding search: choose PE and SIMD per layer for a throughput target or a LUT budget.

Every engine's interval is ``NF·SF = ceil(out / PE) · ceil(in / SIMD)`` cycles
and the slowest stage (an engine, or the input assembler's
``ceil(n_in / in_lanes)`` beats) sets the accelerator's interval. For a cycle
budget ``C`` each layer independently takes the cheapest ``(PE, SIMD)`` with
``NF·SF <= C`` (cost: :func:`bchw.perf.engine_resources`' LUT estimate), so the
engines are balanced at the budget and no adder lane is wasted on a layer
that would only wait for a slower one. A throughput target fixes the budget
(``C = floor(clock / fps)``); a LUT budget is met by the smallest ``C`` whose
design fits, found by bisection (the cost falls as ``C`` grows). The last layer,
small, may be faster than the budget where a SIMD that takes the previous layer's
groups into an input memory costs fewer LUTs and the lanes stay busy overall.

Adder utilisation = multiply-free MACs per inference / (adder lanes × interval),
lanes = Σ PE·SIMD: the fraction of the lanes' cycles doing useful additions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bchw import golden, perf
from bchw.errors import BchwError


@dataclass(frozen=True)
class Folding:
    """A chosen folding and what it achieves, by the cycle and resource models."""

    pe: list[int]
    simd: list[int]
    in_lanes: int
    interval: int            # cycles
    lanes: int               # Σ PE·SIMD adder lanes
    macs: int                # multiply-free MACs per inference
    luts: int                # the resource model's estimate
    clock_mhz: float

    @property
    def utilisation(self) -> float:
        return self.macs / (self.lanes * self.interval)

    @property
    def inferences_per_s(self) -> float:
        return self.clock_mhz * 1e6 / self.interval

    @property
    def lower_bound(self) -> float:
        """The interval of perfectly used lanes: MACs / lanes."""
        return self.macs / self.lanes


def layer_shapes(sizes: list[int], act_bits: int) -> list[tuple[int, int, int, bool]]:
    """(in_features, out_features, in_bits, last) of each layer of an MLP."""
    n = len(sizes) - 1
    return [(sizes[i], sizes[i + 1], 8 if i == 0 else act_bits, i == n - 1) for i in range(n)]


def beat_lanes(n_in: int, simd: int, need: int) -> int | None:
    """Pixels a beat for a first layer of SIMD ``simd``: the fewest from ``need`` to
    ``2·need`` that divide SIMD, so that the beats go straight into its engine's input
    memory (:func:`bchw.perf.beats_into_engine`), or None (an input assembler takes them;
    also when the layer has one slice)."""
    if -(-n_in // simd) < 2:
        return None
    return next((d for d in range(need, min(2 * need, simd) + 1) if simd % d == 0), None)


def best_layer_folding(n_in: int, n_out: int, in_bits: int, widths: golden.LayerWidths,
                       budget: int, busy: float = 0.0, need: int | None = None,
                       producer: perf.LayerShape | None = None, last: bool = True,
                       faster: bool = False) -> tuple[int, int, int]:
    """(pe, simd, luts) of the cheapest folding of one layer within ``budget`` cycles.

    Foldings that keep their lanes busy for at least ``busy`` of the budget
    (``NF·SF >= busy · budget``) come first: a faster layer would only wait for
    the slowest one, its extra lanes idle. Others are taken only when the
    layer's sizes allow none of those.

    A layer of a multilayer perceptron takes its input into an input memory
    when it can, which saves its input buffer and the register upstream:
    ``need``, for the first layer, fed beats of at least ``need`` pixels, where
    :func:`beat_lanes` finds lanes that divide its SIMD (else the cost includes an
    input assembler's); ``producer``, for a later one, fed the groups of the
    (already folded) previous layer when its PE divides SIMD
    (:func:`bchw.perf.groups_into_engine`; else the cost includes the producer's
    output register, which the producer was costed without). For that a SIMD a
    little above the least for an SF (the same SF, more padding) is a candidate
    too, and with ``faster`` the least multiple of the producer's PE of any SF (a
    faster layer). ``last``: the last layer, which hands vectors to the argmax; the
    others are costed as handing groups on where they have two slices or more.
    """
    best = None
    for pe in range(1, n_out + 1):
        nf = -(-n_out // pe)
        if pe > 1 and -(-n_out // (pe - 1)) == nf:
            continue  # a smaller PE gives the same NF: never worse
        sf_max = budget // nf
        if sf_max < 1:
            continue
        for sf in sorted({min(sf_max, n_in), *range(max(1, sf_max - 8), sf_max + 1)}):
            simd = -(-n_in // sf)
            sf = -(-n_in // simd)       # the least SIMD for this SF, and its real SF
            least = -(-n_in // sf)
            for simd in _simd_candidates(n_in, least, need, producer, faster):
                shape = perf.LayerShape(n_in, n_out, in_bits, pe, simd, widths)
                luts = _layer_luts(shape, need, producer, last)
                key = (nf * sf < busy * budget, luts, pe * simd)
                if best is None or key < best[0]:
                    best = (key, pe, simd, luts)
    if best is None:
        raise BchwError(f"a {n_in}×{n_out} layer cannot finish within {budget} cycles",
                        field="folding")
    return best[1:]


def _fed(shape: perf.LayerShape, need: int | None, producer: perf.LayerShape | None) -> int:
    """The values a beat the layer takes into an input memory; 0 if it has none."""
    if need is not None:
        return beat_lanes(shape.in_features, shape.simd, need) or 0
    return producer.pe if producer is not None and perf.groups_into_engine(producer, shape) else 0


def _simd_candidates(n_in: int, least: int, need: int | None,
                     producer: perf.LayerShape | None, faster: bool = False) -> list[int]:
    """``least``, and if it can't take an input memory, the least SIMD of the same SF
    that can, and with ``faster`` (a later layer) the least multiple of the producer's PE
    whatever its SF (see :func:`best_layer_folding`)."""
    sf = -(-n_in // least)
    if _fed(perf.LayerShape(n_in, 1, 8, 1, least, None), need, producer):
        return [least]
    step = need if need is not None else producer.pe if producer is not None else 1
    wider = [s for s in range(least + 1, least + step) if -(-n_in // s) == sf
             and _fed(perf.LayerShape(n_in, 1, 8, 1, s, None), need, producer)]
    if faster and producer is not None:
        multiple = -(-least // producer.pe) * producer.pe
        if multiple not in wider[:1] and _fed(perf.LayerShape(n_in, 1, 8, 1, multiple, None),
                                              None, producer):
            return [least, *wider[:1], multiple]
    return [least, *wider[:1]]


def _layer_luts(shape: perf.LayerShape, need: int | None, producer: perf.LayerShape | None,
                last: bool) -> int:
    """The LUTs a folding of a layer costs, as :func:`best_layer_folding` counts them."""
    fed = _fed(shape, need, producer)
    hands = not last and shape.sf >= 2
    luts = perf.engine_resources(shape.in_features, shape.out_features, shape.in_bits,
                                 shape.pe, shape.simd, shape.widths, fed, hands).luts
    if need is not None and not fed:
        luts += perf.assembler_resources(shape.in_features, need).luts
    if producer is not None and not fed and producer.sf >= 2:
        args = (producer.in_features, producer.out_features, producer.in_bits, producer.pe,
                producer.simd, producer.widths)
        luts += (perf.engine_resources(*args, group_output=False).luts
                 - perf.engine_resources(*args, group_output=True).luts)
    return luts


#: Lanes of a balanced folding are kept busy at least this fraction of the interval.
BUSY = 0.95


def fold_for_budget(sizes: list[int], act_bits: int, budget: int, *, mul_bits: int,
                    score_bits: int, clock_mhz: float) -> Folding:
    """The cheapest balanced folding whose interval is at most ``budget`` cycles.

    The slowest layer may land below the budget (its sizes allow no folding
    closer to it); the others are then folded again to that interval, which can
    only make them cheaper, until nothing changes.
    """
    folding = _fold(sizes, act_bits, budget, mul_bits, score_bits, clock_mhz, 0.0)
    while folding.interval < budget:
        budget = folding.interval
        folding = _fold(sizes, act_bits, budget, mul_bits, score_bits, clock_mhz, 0.0)
    # Now balance: every layer as close below the interval as its sizes allow.
    balanced = _fold(sizes, act_bits, budget, mul_bits, score_bits, clock_mhz, BUSY)
    if balanced.interval > budget:
        return folding
    # The last layer, small, may yet be faster than the rest where that costs fewer LUTs
    # and the whole design's lanes stay busy: a SIMD that takes the groups of the layer
    # before into an input memory saves that layer's output register and its own input
    # buffer (2,000 LUTs and 4,000 flip-flops on the 784-256-256-256-10 MLP at
    # 500,000/s, for 7 idle lanes of 1,200).
    free = _fold(sizes, act_bits, budget, mul_bits, score_bits, clock_mhz, BUSY,
                 frozenset({len(sizes) - 2}))
    if free.interval <= budget and free.luts < balanced.luts and free.utilisation >= BUSY:
        return free
    return balanced


def _fold(sizes: list[int], act_bits: int, budget: int, mul_bits: int, score_bits: int,
          clock_mhz: float, busy: float, free: frozenset[int] = frozenset()) -> Folding:
    """Each layer's cheapest folding within ``budget``, those not in ``free`` kept busy
    (``busy``), those in it perhaps ``faster`` (see :func:`best_layer_folding`)."""
    # the fewest pixels a beat that keep the input within the budget; raised to a divisor
    # of layer 0's SIMD where one is near (beat_lanes), so that the beats go straight into
    # its engine's input memory, with no input assembler
    need = -(-sizes[0] // min(budget, sizes[0]))
    pe, simd, chosen = [], [], []
    shapes = layer_shapes(sizes, act_bits)
    for k, (n_in, n_out, in_bits, last) in enumerate(shapes):
        widths = golden.layer_widths(n_in, in_bits, mul_bits=mul_bits, last=last,
                                     act_bits=act_bits, score_bits=score_bits)
        p, s, _ = best_layer_folding(n_in, n_out, in_bits, widths, budget,
                                     0.0 if k in free else busy,
                                     need if k == 0 else None,
                                     chosen[-1] if chosen else None, last, k in free)
        pe.append(p)
        simd.append(s)
        chosen.append(perf.LayerShape(n_in, n_out, in_bits, p, s, widths))
    in_lanes = beat_lanes(sizes[0], simd[0], need) or -(-sizes[0] // -(-sizes[0] // need))
    luts = sum(part.luts for part in perf.mlp_breakdown(chosen, in_lanes, score_bits).values())
    interval = max([-(-sizes[0] // in_lanes)] + [
        perf.engine_interval(-(-o // p) * -(-i // s))
        for (i, o, _, _), p, s in zip(shapes, pe, simd)])
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    lanes = sum(p * s for p, s in zip(pe, simd))
    return Folding(pe, simd, in_lanes, interval, lanes, macs, luts, clock_mhz)


def _check_request(target_fps: float | None, max_luts: int | None, clock_mhz: float) -> None:
    if target_fps is None and max_luts is None:
        raise BchwError("give a throughput target or a LUT budget", field="--target-fps")
    if target_fps is not None and not target_fps > 0:
        raise BchwError(f"must be positive, not {target_fps}", field="--target-fps")
    if max_luts is not None and max_luts < 1:
        raise BchwError(f"must be positive, not {max_luts}", field="--max-luts")
    if not clock_mhz > 0:
        raise BchwError(f"must be positive, not {clock_mhz}", field="--clock-mhz")


def search_folding(sizes: list[int], act_bits: int, *, target_fps: float | None = None,
                   max_luts: int | None = None, clock_mhz: float = 150.0,
                   mul_bits: int = 18, score_bits: int = 16) -> Folding:
    """The folding for a throughput target and/or a LUT budget (see the module docstring)."""
    _check_request(target_fps, max_luts, clock_mhz)

    def fold(budget: int) -> Folding:
        return fold_for_budget(sizes, act_bits, budget, mul_bits=mul_bits,
                               score_bits=score_bits, clock_mhz=clock_mhz)

    slowest = max(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # PE = SIMD = 1
    hi = slowest if target_fps is None else int(clock_mhz * 1e6 // target_fps)
    if hi < 1:
        raise BchwError(f"{target_fps:g} inferences/s needs an interval under one cycle at "
                        f"{clock_mhz:g} MHz", field="--target-fps")
    best = fold(min(hi, slowest))
    if max_luts is None:
        return best
    return fold(_fastest_within(max_luts, hi, best.luts, lambda b: fold(b).luts, target_fps))


def _fastest_within(max_luts: int, hi: int, smallest: int, luts_of, target_fps: float | None
                    ) -> int:
    """The smallest cycle budget in [1, ``hi``] whose folding ``luts_of(budget)`` fits
    ``max_luts`` (the LUTs fall as the budget grows), by bisection; ``smallest`` is the LUTs
    at ``hi``, the cheapest allowed."""
    if smallest > max_luts:
        need = "" if target_fps is None else f" at {target_fps:g} inferences/s"
        raise BchwError(f"no folding fits {max_luts:,} LUTs{need}: the smallest needs about "
                        f"{smallest:,}", field="--max-luts")
    lo = 1  # the fastest folding
    while lo < hi:
        mid = (lo + hi) // 2
        if luts_of(mid) <= max_luts:
            hi = mid
        else:
            lo = mid + 1
    return hi


# --- convolutional networks -------------------------------------------------------------
#
# A convolution's engine takes one window a vector, H·W windows an image, so for a
# budget of C cycles an image its NF·SF may be at most C // (H·W) (and at least 2: the
# sliding window hands on at most one window every two cycles within a row). The
# windows, engines and pools hold each other up by more than the slowest stage's rate,
# so the interval of a candidate folding is the cycle model's, simulated
# (:class:`bchw.perf.CycleModel`); where it misses the target, the budget is tightened
# in proportion and the layers folded again.

#: Rounds of tightening the budget before a throughput target is declared out of reach.
CONV_ROUNDS = 12


@dataclass(frozen=True)
class EngineShape:
    """One engine of a network: its matrix, input bits and vectors an image."""

    n_in: int
    n_out: int
    in_bits: int
    last: bool
    vectors: int


def engine_shapes(layers, act_bits: int) -> list[EngineShape]:
    """The engines of :func:`bchw.nn.parse_net_spec`'s layers: a convolution's matrix is
    its window's ``kernel²·C_in`` × ``C_out``, ``H·W`` windows an image."""
    shapes = []
    for i, la in enumerate(layers):
        in_bits = 8 if i == 0 else act_bits
        if la.kind == "conv":
            shapes.append(EngineShape(la.kernel * la.kernel * la.in_channels, la.out_channels,
                                      in_bits, False, la.in_shape[1] * la.in_shape[2]))
        else:
            shapes.append(EngineShape(math.prod(la.in_shape), la.out_channels, in_bits,
                                      i == len(layers) - 1, 1))
    return shapes


def _conv_fixed_luts(layers, act_bits: int, score_bits: int) -> int:
    """The LUTs of what the folding does not change: windows, pools, flattener, argmax."""
    total = perf.argmax_resources(layers[-1].out_channels, score_bits)
    for i, la in enumerate(layers):
        if la.kind != "conv":
            continue
        channels, height, width = la.in_shape
        total += perf.window_resources(channels, height, width, la.kernel,
                                       8 if i == 0 else act_bits)
        if la.pool:
            total += perf.pool_resources(la.out_channels, height, width, la.pool, act_bits)
        if layers[i + 1].kind != "conv":
            channels, height, width = la.out_shape
            total += perf.flatten_resources(height * width, channels, act_bits)
    return total.luts


def _conv_layer_foldings(shapes: list[EngineShape], act_bits: int, budget: int,
                         mul_bits: int, score_bits: int) -> list[tuple[int, int, int]]:
    """(pe, simd, luts) of each engine's cheapest folding within its share of ``budget``
    cycles an image: ``budget // vectors`` a vector, at least 2 for a convolution (its
    sliding window hands on a window every two cycles at most)."""
    out = []
    for s in shapes:
        per_vector = max(budget // s.vectors, 2 if s.vectors > 1 else 1)
        widths = golden.layer_widths(s.n_in, s.in_bits, mul_bits=mul_bits, last=s.last,
                                     act_bits=act_bits, score_bits=score_bits)
        out.append(best_layer_folding(s.n_in, s.n_out, s.in_bits, widths, per_vector, BUSY))
    return out


def _conv_fold(layers, shapes: list[EngineShape], act_bits: int, budget: int, mul_bits: int,
               score_bits: int, clock_mhz: float) -> Folding:
    """:func:`_conv_layer_foldings`, and the interval the cycle model simulates for it."""
    chosen = _conv_layer_foldings(shapes, act_bits, budget, mul_bits, score_bits)
    pe, simd = [c[0] for c in chosen], [c[1] for c in chosen]
    engines = []
    for s, p, q in zip(shapes, pe, simd):
        nf, sf = -(-s.n_out // p), -(-s.n_in // q)
        engines.append(perf.engine_timing(nf * sf, q, sf=sf, pe=p))
    convs = [perf.ConvTiming(la.in_shape[1], la.in_shape[2], la.kernel, la.pool)
             for la in layers if la.kind == "conv"]
    model = perf.CycleModel(in_beats=convs[0].height * convs[0].width, engines=engines,
                            argmax=perf.argmax_stages(layers[-1].out_channels), convs=convs)
    macs = sum(s.vectors * s.n_in * s.n_out for s in shapes)
    lanes = sum(p * q for p, q in zip(pe, simd))
    luts = sum(c[2] for c in chosen) + _conv_fixed_luts(layers, act_bits, score_bits)
    return Folding(pe, simd, layers[0].in_channels, model.interval, lanes, macs, luts,
                   clock_mhz)


def search_conv_folding(layers, act_bits: int, *, target_fps: float | None = None,
                        max_luts: int | None = None, clock_mhz: float = 150.0,
                        mul_bits: int = 18, score_bits: int = 16) -> Folding:
    """The folding of a convolutional network (the layers of :func:`bchw.nn.parse_net_spec`)
    for a throughput target and/or a LUT budget: the cheapest whose simulated interval
    meets the target; with a LUT budget, the fastest that fits (by bisection on the
    budget of cycles, the LUTs falling as it grows)."""
    _check_request(target_fps, max_luts, clock_mhz)
    shapes = engine_shapes(layers, act_bits)

    def fold(budget: int) -> Folding:
        return _conv_fold(layers, shapes, act_bits, budget, mul_bits, score_bits, clock_mhz)

    def conv_luts(budget: int) -> int:
        """The LUTs of ``fold(budget)``'s folding, without simulating its interval."""
        return (sum(c[2] for c in _conv_layer_foldings(shapes, act_bits, budget, mul_bits,
                                                       score_bits))
                + _conv_fixed_luts(layers, act_bits, score_bits))

    slowest = max(s.vectors * s.n_in * s.n_out for s in shapes)   # PE = SIMD = 1
    if target_fps is not None:
        target = int(clock_mhz * 1e6 // target_fps)
        budget, best = min(target, slowest), None
        for _ in range(CONV_ROUNDS):
            if budget < 1:
                break
            best = fold(budget)
            if best.interval <= target:
                break
            budget = min(budget - 1, budget * target // best.interval)
        if best is None or best.interval > target:
            raise BchwError(f"{target_fps:g} inferences/s (an interval of {target} cycles at "
                            f"{clock_mhz:g} MHz) is beyond this network's sliding windows and "
                            f"engines: no folding found within {CONV_ROUNDS} rounds",
                            field="--target-fps")
        hi, smallest = budget, best.luts
        if max_luts is None:
            return best
    else:   # not simulated: a folding of one lane a layer would take long to simulate
        hi = slowest
        smallest = conv_luts(hi)
    return fold(_fastest_within(max_luts, hi, smallest, conv_luts, target_fps))


def search_net_folding(layers, act_bits: int, **kwargs) -> Folding:
    """:func:`search_folding` for a multilayer perceptron, :func:`search_conv_folding` for a
    convolutional network (``layers`` from :func:`bchw.nn.parse_net_spec`)."""
    if all(la.kind == "fc" for la in layers):
        sizes = [layers[0].in_channels] + [la.out_channels for la in layers]
        return search_folding(sizes, act_bits, **kwargs)
    return search_conv_folding(layers, act_bits, **kwargs)
