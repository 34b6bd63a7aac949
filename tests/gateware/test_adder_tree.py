"""AdderTree in Amaranth's simulator: ``Σ ±x`` exactly, ``tree_depth(simd)`` enabled cycles
later, against :func:`bchw.golden.accumulate`."""

from __future__ import annotations

import numpy as np
import pytest

from bchw import golden
from bchw.gateware.adder_tree import AdderTree
from bchw.gateware.simtools import always, check_pipeline, pack, random_pattern, simulate
from bchw.perf import tree_depth

CASES = [(1, 1), (1, 8), (2, 8), (3, 1), (3, 8), (5, 1), (5, 8), (16, 1), (16, 8)]


def run_tree(simd: int, in_bits: int, x: np.ndarray, w: np.ndarray, enable=always,
             levels: int = 1) -> None:
    """Feed rows of ``x`` (unsigned) and ``w`` (±1), one per cycle; check every output."""
    dut = AdderTree(simd, in_bits, levels=levels)
    depth = tree_depth(simd, levels)
    assert dut.depth == depth
    # the output holds the worst case, so nothing can be truncated
    bound = simd * ((1 << in_bits) - 1)
    assert golden.signed_bits(-bound, bound) <= len(dut.sum)
    expected = [int(golden.accumulate(x[i:i + 1], w[i:i + 1])[0, 0]) for i in range(len(x))]
    inputs = [(pack(xi, in_bits), pack(wi > 0, 1)) for xi, wi in zip(x, w)]

    async def testbench(ctx):
        seen = await check_pipeline(ctx, dut.en, [dut.x, dut.w], inputs, dut.sum, expected,
                                    depth, enable=enable)
        assert seen == sum(bool(enable(i)) for i in range(len(x)))

    simulate(dut, testbench, cycles=len(x) + depth + 10)


@pytest.mark.parametrize("simd, in_bits", CASES)
def test_random_sums_exact_after_tree_depth(simd: int, in_bits: int):
    rng = np.random.default_rng(simd * 10 + in_bits)
    x = rng.integers(0, 1 << in_bits, size=(80, simd))
    w = rng.choice([-1, 1], size=(80, simd))
    run_tree(simd, in_bits, x, w)


@pytest.mark.parametrize("simd, in_bits", [(1, 8), (3, 8), (5, 1), (16, 8)])
def test_enable_low_freezes_pipeline(simd: int, in_bits: int):
    rng = np.random.default_rng(simd + 1000 * in_bits)
    x = rng.integers(0, 1 << in_bits, size=(80, simd))
    w = rng.choice([-1, 1], size=(80, simd))
    run_tree(simd, in_bits, x, w, enable=random_pattern(0.5, seed=simd))


@pytest.mark.parametrize("simd, in_bits", CASES)
def test_extremes_reach_the_bound(simd: int, in_bits: int):
    xmax = (1 << in_bits) - 1
    bound = simd * xmax
    x = np.full((4, simd), xmax)
    x[2] = 0
    w = np.array([[1] * simd, [-1] * simd, [1] * simd, [(-1) ** s for s in range(simd)]])
    expected = golden.accumulate(x, w).diagonal()
    assert expected[0] == bound and expected[1] == -bound
    run_tree(simd, in_bits, x, w)


def test_tree_depth_with_levels_per_stage():
    # the lanes, then a register after every `levels` adder levels and after the last
    assert [tree_depth(s, 2) for s in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 2, 2, 3, 3, 4]
    assert [tree_depth(s, 3) for s in (2, 8, 9, 64)] == [2, 2, 3, 3]


@pytest.mark.parametrize("simd, levels", [(2, 2), (5, 2), (16, 2), (17, 3), (29, 2), (88, 3)])
def test_levels_per_stage_keep_sums_exact(simd: int, levels: int):
    rng = np.random.default_rng(simd + 7 * levels)
    x = rng.integers(0, 256, size=(60, simd))
    x[0] = 255
    w = rng.choice([-1, 1], size=(60, simd))
    w[0] = 1
    run_tree(simd, 8, x, w, enable=random_pattern(0.7, seed=simd), levels=levels)
