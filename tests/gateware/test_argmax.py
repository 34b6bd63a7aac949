"""Argmax in Amaranth's simulator: the class of :mod:`bchw.golden` (first index of the
maximum), payload ``{scores, class}``, one register stage, under back-pressure."""

from __future__ import annotations

import numpy as np
import pytest

from bchw import golden
from bchw.gateware.argmax import Argmax
from bchw.gateware.simtools import (
    always,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
    unpack,
)
from bchw.perf import argmax_stages


def random_scores(n: int, classes: int, score_bits: int, seed: int) -> np.ndarray:
    """Scores of both signs, the extremes, and many ties (first index must win)."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (score_bits - 1)), (1 << (score_bits - 1)) - 1
    scores = rng.integers(lo, hi + 1, size=(n, classes))
    narrow = rng.integers(-2, 2, size=(n, classes))     # few distinct values: ties
    scores[n // 3:2 * n // 3] = narrow[n // 3:2 * n // 3]
    # upper halves equal (the comparator decides on the lower ones), of either sign
    half = score_bits // 2
    base = rng.integers(lo >> half, (hi >> half) + 1, size=(n, 1)) << half
    low = base + rng.integers(0, 1 << half, size=(n, classes))
    scores[2 * n // 3:] = low[2 * n // 3:]
    scores[0], scores[1], scores[2] = lo, hi, -1        # all tied
    scores[3] = lo
    scores[3, -1] = lo + 1                              # the maximum last, all negative
    return scores


@pytest.mark.parametrize("classes, score_bits", [(1, 4), (2, 16), (3, 5), (7, 9), (10, 16)])
@pytest.mark.parametrize("in_rate, out_rate", [(1.0, 1.0), (0.5, 0.5), (1.0, 0.3)])
def test_stream_of_scores(classes: int, score_bits: int, in_rate: float, out_rate: float):
    dut = Argmax(classes, score_bits)
    scores = random_scores(60, classes, score_bits, seed=classes * 100 + score_bits)
    classes_ref = golden.GoldenResult(layers=[scores], accs=[]).classes
    assert len(dut.m.payload) == dut.class_bits + classes * score_bits
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=1)
    ready = always if out_rate == 1 else random_pattern(out_rate, seed=2)
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, dut.s, [pack(s, score_bits) for s in scores],
                                     valid=valid))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, len(scores), ready=ready))

    simulate(dut, producer, consumer, cycles=60 * 20)
    assert len(got) == len(scores)
    for n, transfer in enumerate(got):
        cls = transfer.payload & ((1 << dut.class_bits) - 1)
        values = unpack(transfer.payload >> dut.class_bits, score_bits, classes, signed=True)
        assert (cls, values) == (classes_ref[n], scores[n].tolist()), f"scores {n}"
    if in_rate == 1 and out_rate == 1:
        # one result a cycle, argmax_stages cycles after its scores
        assert [t.cycle for t in got] == [c + argmax_stages(dut.n) for c in sent]
