"""Requantizer in Amaranth's simulator: :func:`bchw.golden.requantize` exactly,
``REQUANT_STAGES`` enabled cycles later."""

from __future__ import annotations

import numpy as np
import pytest

from bchw import golden
from bchw.gateware.requantizer import Requantizer
from bchw.gateware.simtools import always, check_pipeline, random_pattern, simulate
from bchw.perf import REQUANT_STAGES

# (fan_in, in_bits, mul_bits, last, act_bits, score_bits): hidden layers clamp unsigned,
# the score layer clamps signed
WIDTHS = [
    (784, 8, 18, False, 8, 16),
    (13, 4, 18, False, 4, 16),
    (7, 1, 12, False, 1, 16),
    (100, 8, 18, True, 8, 16),
    (5, 3, 16, True, 3, 9),
    (5000, 8, 18, True, 8, 16),     # a 22-bit accumulator: two slices of the product
]
#: M·acc + B narrower than the scores (shift_max 0): never clamped, and sign-extended
NARROW = [(7, 8, 4, True, 8, 20)]


def widths_of(case) -> golden.LayerWidths:
    fan_in, in_bits, mul_bits, last, act_bits, score_bits = case
    return golden.layer_widths(fan_in, in_bits, mul_bits=mul_bits, last=last,
                               act_bits=act_bits, score_bits=score_bits)


def run_requantizer(w: golden.LayerWidths, acc, mul, shift, bias, enable=always) -> None:
    dut = Requantizer(w)
    expected = golden.requantize(np.asarray(acc), np.asarray(mul), np.asarray(shift),
                                 np.asarray(bias), w.out_lo, w.out_hi).tolist()
    assert min(expected) >= w.out_lo and max(expected) <= w.out_hi
    inputs = list(zip(*(np.asarray(v).tolist() for v in (acc, mul, shift, bias))))

    async def testbench(ctx):
        await check_pipeline(ctx, dut.en, [dut.acc, dut.mul, dut.shift, dut.bias], inputs,
                             dut.q, expected, REQUANT_STAGES, enable=enable)

    simulate(dut, testbench, cycles=len(inputs) + REQUANT_STAGES + 10)


def random_operands(w: golden.LayerWidths, n: int, seed: int):
    """Accumulators over the whole range (bounds included) with real (M, S, B) of random
    scales of both signs and offsets, some far outside the output range."""
    rng = np.random.default_rng(seed)
    span = w.out_hi - w.out_lo + 1
    scale = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-4, 0.5, n) * span / w.acc_max
    scale[:4] = [span / w.acc_max, -span / w.acc_max, 1e-6, 3.0]
    offset = rng.uniform(w.out_lo - span, w.out_hi + span, n)
    offset[::7] *= 1000.0
    mul, shift, bias = golden.requant_params(scale, offset, w)
    acc = rng.integers(w.acc_min, w.acc_max + 1, n)
    acc[::5] = w.acc_max
    acc[1::5] = w.acc_min
    acc[2::5] = 0
    return acc, mul, shift, bias


@pytest.mark.parametrize("case", WIDTHS, ids=lambda c: f"fan{c[0]}-in{c[1]}-m{c[2]}-"
                         f"{'score' if c[3] else 'hidden'}")
def test_matches_golden_requantize(case):
    w = widths_of(case)
    run_requantizer(w, *random_operands(w, 150, seed=case[0]))


@pytest.mark.parametrize("case", [WIDTHS[1], WIDTHS[3]], ids=["hidden", "score"])
def test_enable_low_freezes_pipeline(case):
    w = widths_of(case)
    run_requantizer(w, *random_operands(w, 100, seed=7), enable=random_pattern(0.5, seed=3))


@pytest.mark.parametrize("case", WIDTHS + NARROW, ids=lambda c: f"fan{c[0]}-in{c[1]}-m{c[2]}-"
                         f"{'score' if c[3] else 'hidden'}-out{c[5] if c[3] else c[4]}")
def test_extreme_parameters(case):
    """Every corner of the parameter fields and the accumulator: nothing overflows."""
    w = widths_of(case)
    muls = [-(1 << (w.mul_bits - 1)), (1 << (w.mul_bits - 1)) - 1, 1, -1, 0]
    biases = [-(1 << (w.bias_bits - 1)), (1 << (w.bias_bits - 1)) - 1, 0]
    corners = [(a, m, s, b) for a in (w.acc_min, w.acc_max, 0, 1, -1) for m in muls
               for s in (0, w.shift_max) for b in biases]
    run_requantizer(w, *(np.array(v) for v in zip(*corners)))


@pytest.mark.parametrize("case", WIDTHS, ids=lambda c: f"fan{c[0]}-in{c[1]}-m{c[2]}-"
                         f"{'score' if c[3] else 'hidden'}")
def test_clamp_edges_at_every_shift(case):
    """At each shift S, ``M·acc + B`` one either side of where ``>> S`` leaves the output
    range, above and below: the clamp tests the bits from ``S`` up through a mask of
    its own, which the random operands reach at few shifts."""
    w = widths_of(case)
    bias_lo, bias_hi = -(1 << (w.bias_bits - 1)), (1 << (w.bias_bits - 1)) - 1
    edges = [(w.out_hi + 1) << s for s in range(w.shift_max + 1)] + [
        w.out_lo << s for s in range(w.shift_max + 1)]
    totals = sorted({t + d for t in edges for d in (-1, 0, 1) if bias_lo <= t + d <= bias_hi})
    # acc 0 and 1 with M 1: the total is the offset B, or B + 1 through the multiplier
    ops = [(a, 1, s, t - a) for t in totals for a in (0, 1) for s in range(w.shift_max + 1)
           if bias_lo <= t - a]
    run_requantizer(w, *(np.array(v) for v in zip(*ops)))
