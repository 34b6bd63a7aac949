"""Argmax over the class scores: the first index of the maximum."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.golden import unsigned_bits


class Argmax(wiring.Component):
    """Takes a vector of signed scores, gives ``{scores, class}`` one cycle later.

    The comparison tree keeps the left (lower-index) operand on ties, so the
    class is the first index of the maximum, as :mod:`bchw.golden` defines.

    Members
    -------
    s : In(stream.Signature(num_classes · score_bits))
        Score ``i`` at bits ``[i·score_bits, (i+1)·score_bits)``, two's complement.
    m : Out(stream.Signature(class_bits + num_classes · score_bits))
        The class in the low ``class_bits`` bits, then the scores as received.
    """

    def __init__(self, num_classes: int, score_bits: int):
        self.n, self.score_bits = num_classes, score_bits
        self.class_bits = unsigned_bits(num_classes - 1)
        super().__init__({
            "s": In(stream.Signature(num_classes * score_bits)),
            "m": Out(stream.Signature(self.class_bits + num_classes * score_bits))})

    def elaborate(self, platform):
        m = Module()
        sb = self.score_bits
        nodes = [(Const(i, self.class_bits), self.s.payload[i * sb:(i + 1) * sb].as_signed())
                 for i in range(self.n)]
        while len(nodes) > 1:
            nxt = []
            for i in range(0, len(nodes), 2):
                if i + 1 == len(nodes):
                    nxt.append(nodes[i])
                    continue
                (ia, va), (ib, vb) = nodes[i], nodes[i + 1]
                # named signals, so each level refers to the one below instead of
                # repeating its expressions (which would grow 3x a level)
                idx = Signal(self.class_bits, name=f"idx_{len(nodes)}_{i // 2}")
                val = Signal(signed(sb), name=f"max_{len(nodes)}_{i // 2}")
                m.d.comb += [idx.eq(Mux(vb > va, ib, ia)), val.eq(Mux(vb > va, vb, va))]
                nxt.append((idx, val))
            nodes = nxt
        cls = nodes[0][0]
        m.d.comb += self.s.ready.eq(~self.m.valid | self.m.ready)
        with m.If(self.s.valid & self.s.ready):
            m.d.sync += [self.m.valid.eq(1), self.m.payload.eq(Cat(cls, self.s.payload))]
        with m.Elif(self.m.ready):
            m.d.sync += self.m.valid.eq(0)
        return m
