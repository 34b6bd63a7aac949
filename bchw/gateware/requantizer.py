"""Requantization: ``clamp((M·acc + B) >> S, lo, hi)``, pipelined."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.gateware.multiplier import MUL_STAGES, Multiplier
from bchw.golden import LayerWidths
from bchw.perf import REQUANT_STAGES, clamp_mask_bits, product_slices, requant_sum_bits


class Requantizer(wiring.Component):
    """One neuron's requantizer, the arithmetic of :func:`bchw.golden.requantize`.

    Five register stages (:data:`bchw.perf.REQUANT_STAGES`): the multiplier's
    operands and its product (:class:`bchw.gateware.multiplier.Multiplier`; on an
    ECP5 with ``mul_instance``, the DSP block's own registers), the product again in
    the fabric, so that the ways to and from a DSP site, which may be far from the
    accumulator, each have a cycle, the sum with the offset, and the arithmetic
    shift with the clamp.
    This is the only multiplier of an engine, used once per output, not per
    input.  An accumulator wider than a DSP's signed operand
    (:data:`bchw.perf.DSP_BITS`) is multiplied in slices
    (:func:`bchw.perf.product_slices`), each product registered alone, and the
    partial products are summed with the offset: so no carry chain follows a
    multiplier within a cycle.

    Members
    -------
    en : In(1)
        Pipeline enable.
    acc : In(signed(acc_bits))
        The accumulated sum.
    mul, shift, bias : In
        The neuron's M (signed), S (unsigned) and B (signed).
    q : Out(out_bits)
        The clamped output, signed for the score layer, of five cycles ago.
    """

    def __init__(self, widths: LayerWidths, *, mul_instance: bool = False):
        self.w, self.mul_instance = widths, mul_instance
        out = signed(widths.out_bits) if widths.out_signed else unsigned(widths.out_bits)
        super().__init__({
            "en": In(1), "acc": In(signed(widths.acc_bits)),
            "mul": In(signed(widths.mul_bits)), "shift": In(unsigned(widths.shift_bits)),
            "bias": In(signed(widths.bias_bits)), "q": Out(out)})

    def elaborate(self, platform):
        w = self.w
        m = Module()
        # the accumulator's slices: unsigned ones (a zero above them makes them signed
        # operands), the top one signed
        cuts = product_slices(w.acc_bits)
        slices = [Cat(self.acc[lo:hi], Const(0, 1)).as_signed()
                  for lo, hi in zip(cuts, cuts[1:])] + [self.acc[cuts[-1]:].as_signed()]
        partial = []
        for k, sl in enumerate(slices):
            mul = Multiplier(len(sl), w.mul_bits, instance=self.mul_instance)
            m.submodules[f"mul{k}"] = mul
            m.d.comb += [mul.en.eq(self.en), mul.a.eq(sl), mul.b.eq(self.mul)]
            partial.append(mul.p)
        # each product is registered again in the fabric, by the adder: a DSP block may
        # be far from it, and the way out of it and the carry chain in one cycle were the
        # 500,000/s folding's critical path (3.6 ns of routing, then 1.7 ns). The offset
        # and the shift wait with the product (the offset's registers named for
        # bchw.synth.UNINITIALISED_REGISTERS: its constant bits fold)
        products = [Signal(p.shape(), name=f"product_d{k}", reset_less=True)
                    for k, p in enumerate(partial)]
        bias1, bias2, bias3 = (Signal(signed(w.bias_bits), name=f"bias_d{k}", reset_less=True)
                               for k in (1, 2, 3))
        shift1, shift2, shift3, shift4 = (Signal(unsigned(w.shift_bits), name=f"shift_d{k}",
                                                 reset_less=True) for k in (1, 2, 3, 4))
        total = Signal(signed(requant_sum_bits(w)), reset_less=True)
        shifted = Signal.like(total)
        # Out of range is a test of the bits of ``total >> S`` at and above the output's top
        # (its sign bit, signed): any set (over), or, below zero, any clear (under). Those
        # are the bits of ``total`` from ``base + S`` up, so the test reads ``total`` through
        # a mask of them, registered a stage ahead from S, and runs beside the shifter
        # instead of after it: after it, the shifter and the test were 4 LUT levels, the
        # 500,000/s folding's critical path on two placements. ``reach[i]`` is
        # ``i >= S``; S is at most ``shift_max`` (the bundle is checked on load), so from
        # there on it is 1. (A score layer's sum may be narrower than its output: then
        # there are no such bits, and nothing is out of range.)
        base = w.out_bits - 1 if w.out_signed else w.out_bits
        top = total[base:]
        reach = Signal(clamp_mask_bits(w), name="reach", reset_less=True)
        rest = len(top) - len(reach)
        mask = Cat(reach, Const((1 << rest) - 1, rest))
        sign = total[-1]
        if w.out_signed:
            under, over = sign & (~top & mask).any(), ~sign & (top & mask).any()
        else:
            under, over = sign, ~sign & (top & mask).any()
        assert (w.out_lo, w.out_hi) == ((-(1 << (w.out_bits - 1)), (1 << (w.out_bits - 1)) - 1)
                                        if w.out_signed else (0, (1 << w.out_bits) - 1))
        with m.If(self.en):
            m.d.sync += [bias1.eq(self.bias), shift1.eq(self.shift),
                         bias2.eq(bias1), shift2.eq(shift1),
                         [r.eq(p) for r, p in zip(products, partial, strict=True)],
                         bias3.eq(bias2), shift3.eq(shift2),
                         total.eq(sum((p << lo for p, lo in zip(products, cuts)), bias3)),
                         shift4.eq(shift3),
                         reach.eq(Cat(shift3 <= i for i in range(len(reach)))),
                         self.q.eq(Mux(under, w.out_lo, Mux(over, w.out_hi, shifted)))]
        m.d.comb += shifted.eq(total >> shift4)
        assert REQUANT_STAGES == MUL_STAGES + 3
        return m
