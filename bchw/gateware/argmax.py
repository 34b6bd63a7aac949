"""Argmax over the class scores: the first index of the maximum."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.golden import unsigned_bits
from bchw.perf import argmax_stages


class Argmax(wiring.Component):
    """Takes a vector of signed scores, gives ``{scores, class}`` :func:`bchw.perf.argmax_stages`
    cycles later.

    Each level of the comparison tree is two register stages, one that
    compares (the upper and lower halves apart) and one that selects, so the clock is
    not limited by a chain of comparators nor by a comparator driving a wide
    multiplexer; the stages advance together, and all hold while a result that was
    offered and not taken waits in a skid register beside the last (``s.ready`` is that
    enable, a register). The tree keeps the left (lower-index)
    operand on ties, so the class is the first index of the maximum, as
    :mod:`bchw.golden` defines.

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

        def stage(value, name, reset_less=True):
            """``value`` registered once (advancing with the pipeline)."""
            r = Signal(Value.cast(value).shape(), name=name, reset_less=reset_less)
            with m.If(en):
                m.d.sync += r.eq(value)
            return r

        def greater(vb, va, name):
            """``vb > va`` one stage later, from the registered comparisons of the upper
            halves (signed) and of the lower ones (unsigned): two carry chains of half the
            width each, after a route from the last engine's output register (a full-width
            chain was the 500,000/s folding's critical path, 6.66 ns)."""
            half = sb // 2
            if half < 2:
                return stage(vb > va, name)
            hb, ha = vb[half:].as_signed(), va[half:].as_signed()
            hi_gt, hi_eq = stage(hb > ha, f"{name}_hi"), stage(hb == ha, f"{name}_eq")
            lo_gt = stage(vb[:half] > va[:half], f"{name}_lo")
            return hi_gt | (hi_eq & lo_gt)

        nodes = [(Const(i, self.class_bits), self.s.payload[i * sb:(i + 1) * sb].as_signed())
                 for i in range(self.n)]
        levels = self.stages // 2 if self.n > 1 else 0
        for k in range(levels):
            # compare: register the comparison with both operands
            pairs = []
            for i in range(0, len(nodes), 2):
                j = i // 2
                (ia, va) = nodes[i]
                ra = (stage(ia, f"idx_{k}_{j}_a"), stage(va, f"max_{k}_{j}_a"))
                if i + 1 == len(nodes):
                    pairs.append((ra, None, None))
                    continue
                (ib, vb) = nodes[i + 1]
                rb = (stage(ib, f"idx_{k}_{j}_b"), stage(vb, f"max_{k}_{j}_b"))
                pairs.append((ra, rb, greater(vb, va, f"gt_{k}_{j}")))
            # select: the greater, the left (lower index) one on ties
            nodes = []
            for j, (ra, rb, gt) in enumerate(pairs):
                pick = ra if rb is None else (Mux(gt, rb[0], ra[0]), Mux(gt, rb[1], ra[1]))
                nodes.append((stage(pick[0], f"idx_{k}_{j}"), stage(pick[1], f"max_{k}_{j}")))
        if levels == 0:
            nodes = [(stage(nodes[0][0], "idx"), stage(nodes[0][1], "max"))]
        assert len(nodes) == 1
        payload, valid = self.s.payload, self.s.valid & self.s.ready
        for k in range(self.stages):
            payload, valid = stage(payload, f"scores_{k}"), stage(valid, f"valid_{k}", False)
        # A skid register beside the last stage takes its result when it is offered and not
        # taken; the stages hold while it is full. So ``m.ready`` reaches one flip-flop:
        # as the stages' enable it reached every stage's bits and the last engine's output
        # register (a placement's critical path at 500,000/s, 147.4 MHz).
        result = Cat(nodes[0][0], payload)
        held = Signal()
        skid = Signal.like(result, name="skid", reset_less=True)
        with m.If(en):
            m.d.sync += skid.eq(result)
        m.d.sync += held.eq(Mux(held, ~self.m.ready, valid & ~self.m.ready))
        m.d.comb += [en.eq(~held), self.s.ready.eq(en),
                     self.m.valid.eq(held | valid), self.m.payload.eq(Mux(held, skid, result))]
        return m
