"""Argmax over the class scores: the first index of the maximum."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.golden import unsigned_bits
from bchw.perf import argmax_stages


class Argmax(wiring.Component):
    """Takes a vector of signed scores, gives ``{scores, class}`` :func:`bchw.perf.argmax_stages`
    cycles later.

    Each level of the comparison tree is a register stage, so the clock is
    not limited by a chain of comparators; the stages advance together and
    all hold while the output is offered and not taken (``s.ready`` is that
    enable). The tree keeps the left (lower-index) operand on ties, so the
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
        self.stages = argmax_stages(num_classes)
        super().__init__({
            "s": In(stream.Signature(num_classes * score_bits)),
            "m": Out(stream.Signature(self.class_bits + num_classes * score_bits))})

    def elaborate(self, platform):
        m = Module()
        sb = self.score_bits
        en = Signal()
        nodes = [(Const(i, self.class_bits), self.s.payload[i * sb:(i + 1) * sb].as_signed())
                 for i in range(self.n)]
        payload, valid = self.s.payload, self.s.valid
        for k in range(self.stages):
            nxt = []
            for i in range(0, len(nodes), 2):
                idx = Signal(self.class_bits, name=f"idx_{k}_{i // 2}", reset_less=True)
                val = Signal(signed(sb), name=f"max_{k}_{i // 2}", reset_less=True)
                if i + 1 == len(nodes):
                    ia, va = nodes[i]
                    new_idx, new_val = ia, va
                else:
                    (ia, va), (ib, vb) = nodes[i], nodes[i + 1]
                    new_idx, new_val = Mux(vb > va, ib, ia), Mux(vb > va, vb, va)
                with m.If(en):
                    m.d.sync += [idx.eq(new_idx), val.eq(new_val)]
                nxt.append((idx, val))
            nodes = nxt
            stage_payload = Signal(len(payload), name=f"scores_{k}", reset_less=True)
            stage_valid = Signal(name=f"valid_{k}")
            with m.If(en):
                m.d.sync += [stage_payload.eq(payload), stage_valid.eq(valid & self.s.ready)
                             if k == 0 else stage_valid.eq(valid)]
            payload, valid = stage_payload, stage_valid
        assert len(nodes) == 1
        m.d.comb += [en.eq(~(valid & ~self.m.ready)), self.s.ready.eq(en),
                     self.m.valid.eq(valid), self.m.payload.eq(Cat(nodes[0][0], payload))]
        return m
