"""A pipelined adder tree that adds SIMD inputs, each negated, masked or scaled by its weight."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.perf import clog2, tree_depth

#: How a lane applies its weight: ``negate`` (bit: ``x`` or ``−x``), ``mask`` (bit: ``x`` or
#: 0) or ``multiply`` (signed ``weight_bits``-bit integer: ``w·x``).
LANES = ("negate", "mask", "multiply")


class AdderTree(wiring.Component):
    """``sum = Σ_s lane(w[s], x[s])`` over ``simd`` unsigned ``in_bits``-bit lanes.

    With ±1 weights there are no multipliers: in the ``negate`` lanes a
    weight selects between a value and its negation (``Σ ±x``; but for the first
    lane as its ones' complement, whose ``+1`` an adder of the tree takes as its
    carry-in); in the
    ``mask`` lanes between a value and zero (``Σ_{w=+1} x``, unsigned and a
    bit narrower, from which an engine rebuilds ``Σ ±x = 2·Σ_{w=+1} x − Σ x``).
    The ``multiply`` lanes hold the product with a signed integer weight: the
    multiplier baseline that binary weights are measured against.  The lanes
    are registered, then every ``levels``-th level of the tree and the last,
    so ``sum`` follows its inputs by :func:`bchw.perf.tree_depth` cycles
    whatever the lane; the output width grows one bit a level and never
    truncates.

    Members
    -------
    en : In(1)
        Pipeline enable: every register holds while low.
    x : In(simd · in_bits)
        Lane ``s`` at bits ``[s·in_bits, (s+1)·in_bits)``, unsigned.
    w : In(simd · weight_bits)
        Weight of each lane: for ``negate`` and ``mask`` one bit, 1 ↔ +1, 0 ↔ −1; for
        ``multiply`` a two's complement integer at bits ``[s·weight_bits, (s+1)·weight_bits)``.
    sum : Out(lane_bits + clog2(simd))
        The sum of the inputs of ``tree_depth(simd, levels)`` cycles ago; unsigned for
        ``mask``.
    """

    def __init__(self, simd: int, in_bits: int, lane: str = "negate", weight_bits: int = 1,
                 levels: int = 1):
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, not {lane!r}")
        if (lane == "multiply") != (weight_bits > 1):
            raise ValueError("multiply lanes take weights of more than one bit, the others one")
        if levels < 1:
            raise ValueError(f"levels must be at least 1, not {levels}")
        self.simd, self.in_bits, self.lane, self.weight_bits = simd, in_bits, lane, weight_bits
        self.levels = levels
        self.depth = tree_depth(simd, levels)
        # |w·x| <= 2**(weight_bits-1) · (2**in_bits - 1) fits in_bits + weight_bits signed bits
        self.lane_bits = {"negate": in_bits + 1, "mask": in_bits,
                          "multiply": in_bits + weight_bits}[lane]
        self.sum_bits = self.lane_bits + clog2(simd)
        self.kind = unsigned if lane == "mask" else signed
        super().__init__({"en": In(1), "x": In(simd * in_bits), "w": In(simd * weight_bits),
                          "sum": Out(self.kind(self.sum_bits))})

    def elaborate(self, platform):
        m = Module()
        bits, wb = self.lane_bits, self.weight_bits
        level = []
        # negate lanes but the first take the ones' complement, ``~x = −x − 1`` (a LUT a bit,
        # no carry chain), and leave their ``+1`` pending: each adder of the tree takes one
        # as its carry-in, which costs nothing, and a tree of SIMD lanes has SIMD − 1
        # adders. So no lane has a carry chain of its own but the first, and no chain
        # computes a lane's ``−x`` that yosys could share between PEs.
        carries = []
        for s in range(self.simd):
            x = self.x[s * self.in_bits:(s + 1) * self.in_bits]
            w = self.w[s * wb:(s + 1) * wb]
            if self.lane == "negate":
                r = Signal(signed(bits), name=f"neg{s}", reset_less=True)
                if s == 0:
                    value = Mux(w, x, -x)
                else:
                    value = Cat(x, Const(0, bits - self.in_bits)) ^ (~w).replicate(bits)
                    carry = Signal(name=f"negc{s}", reset_less=True)
                    with m.If(self.en):
                        m.d.sync += carry.eq(~w)
                    carries.append(carry)
            elif self.lane == "mask":
                r = Signal(unsigned(bits), name=f"mask{s}", reset_less=True)
                value = Mux(w, x, 0)
            else:
                r = Signal(signed(bits), name=f"prod{s}", reset_less=True)
                value = x * w.as_signed()
            with m.If(self.en):
                m.d.sync += r.eq(value)
            level.append(r)
        depth, last = 0, clog2(self.simd)
        while len(level) > 1:
            depth += 1
            bits += 1
            staged = depth % self.levels == 0 or depth == last
            nxt = []
            for i in range(0, len(level), 2):
                if i + 1 < len(level):
                    value = level[i] + level[i + 1] + (carries.pop() if carries else 0)
                else:
                    value = level[i]
                if staged:
                    r = Signal(self.kind(bits), name=f"l{depth}_{i // 2}", reset_less=True)
                    with m.If(self.en):
                        m.d.sync += r.eq(value)
                else:
                    r = Signal(self.kind(bits), name=f"l{depth}_{i // 2}")
                    m.d.comb += r.eq(value)
                nxt.append(r)
            if staged:    # the carries still pending wait a stage with the sums
                waiting = [Signal(name=f"c{depth}_{k}", reset_less=True)
                           for k in range(len(carries))]
                with m.If(self.en):
                    m.d.sync += [r.eq(c) for r, c in zip(waiting, carries)]
                carries = waiting
            level = nxt
        assert not carries      # every adder took one: SIMD − 1 of them
        m.d.comb += self.sum.eq(level[0])
        return m
