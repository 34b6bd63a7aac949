"""A pipelined adder tree that adds SIMD inputs, each negated where its weight bit is 0."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.perf import clog2, tree_depth


class AdderTree(wiring.Component):
    """``sum = Σ_s (w[s] ? x[s] : −x[s])`` over ``simd`` unsigned ``in_bits``-bit lanes.

    There are no multipliers: a ±1 weight selects between a value and its
    negation.  The negated lanes are registered, then every level of the
    tree, so ``sum`` follows its inputs by :func:`bchw.perf.tree_depth`
    cycles; the output width grows one bit a level and never truncates.

    Members
    -------
    en : In(1)
        Pipeline enable: every register holds while low.
    x : In(simd · in_bits)
        Lane ``s`` at bits ``[s·in_bits, (s+1)·in_bits)``, unsigned.
    w : In(simd)
        Weight bit of each lane: 1 ↔ +1, 0 ↔ −1.
    sum : Out(signed(in_bits + 1 + clog2(simd)))
        The sum of the inputs of ``tree_depth(simd)`` cycles ago.
    """

    def __init__(self, simd: int, in_bits: int):
        self.simd, self.in_bits = simd, in_bits
        self.depth = tree_depth(simd)
        self.sum_bits = in_bits + 1 + clog2(simd)
        super().__init__({"en": In(1), "x": In(simd * in_bits), "w": In(simd),
                          "sum": Out(signed(self.sum_bits))})

    def elaborate(self, platform):
        m = Module()
        bits = self.in_bits + 1
        level = []
        for s in range(self.simd):
            x = self.x[s * self.in_bits:(s + 1) * self.in_bits]
            r = Signal(signed(bits), name=f"neg{s}", reset_less=True)
            with m.If(self.en):
                m.d.sync += r.eq(Mux(self.w[s], x, -x))
            level.append(r)
        depth = 0
        while len(level) > 1:
            depth += 1
            bits += 1
            nxt = []
            for i in range(0, len(level), 2):
                r = Signal(signed(bits), name=f"l{depth}_{i // 2}", reset_less=True)
                value = level[i] + level[i + 1] if i + 1 < len(level) else level[i]
                with m.If(self.en):
                    m.d.sync += r.eq(value)
                nxt.append(r)
            level = nxt
        m.d.comb += self.sum.eq(level[0])
        return m
