"""MaxPool in Amaranth's simulator: every pooled pixel equals :func:`bchw.golden.pool_codes`
(maximum, or minimum for channels of negative multiplier), and every pixel and result taken at
the cycle of the timing contract, under input gaps, output back-pressure and reset in
mid-image."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from bchw import golden
from bchw.gateware.pool import MaxPool
from bchw.gateware.simtools import (
    always,
    check_reset_mid_stream,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
)
from bchw.perf import pool_contract


def multipliers(channels: int, seed: int) -> np.ndarray:
    """Requantization multipliers of both signs (and zero), the first channel negative."""
    mul = np.random.default_rng(seed).integers(-5, 6, size=channels)
    mul[0] = -3
    return mul


def random_maps(images: int, height: int, width: int, channels: int, bits: int,
                seed: int) -> np.ndarray:
    """[N, H, W, C] maps: all ones, random, all zeros, random, so that a window's result
    left from the image before would show for the maximum and for the minimum."""
    maps = np.random.default_rng(seed).integers(0, 1 << bits,
                                                size=(images, height, width, channels))
    maps[0] = (1 << bits) - 1
    maps[2::4] = 0
    return maps


def pixels_of(maps: np.ndarray, bits: int) -> list[int]:
    return [pack(pixel, bits) for pixel in maps.reshape(-1, maps.shape[-1])]


def pooled_of(maps: np.ndarray, mul: np.ndarray, pool: int, bits: int) -> list[int]:
    out = golden.pool_codes(maps, mul, pool)
    return [pack(pixel, bits) for pixel in out.reshape(-1, out.shape[-1])]


# (height, width, channels, pool, bits)
SHAPES = [(4, 6, 3, 2, 8), (6, 3, 1, 3, 4), (8, 8, 3, 4, 1), (2, 4, 2, 2, 8),
          (6, 9, 3, 3, 8), (4, 4, 1, 4, 4), (3, 5, 3, 1, 8)]
RATES = [(1.0, 1.0), (0.5, 0.6), (1.0, 0.3), (0.4, 1.0), (1.0, 0.5)]


@pytest.mark.parametrize("in_rate, out_rate", RATES)
@pytest.mark.parametrize("height, width, channels, pool, bits", SHAPES)
def test_pooling(height: int, width: int, channels: int, pool: int, bits: int,
                 in_rate: float, out_rate: float):
    images = 4
    maps = random_maps(images, height, width, channels, bits, seed=height * 100 + width)
    mul = multipliers(channels, seed=pool)
    dut = MaxPool(channels, height, width, pool, bits, minimum=mul < 0)
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=pool)
    ready = always if out_rate == 1 else random_pattern(out_rate, seed=channels + 10)
    count = images * (height // pool) * (width // pool)
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, dut.s, pixels_of(maps, bits), valid=valid))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, count, ready=ready))

    simulate(dut, producer, consumer, cycles=images * height * width * 20 + 200)
    assert [t.payload for t in got] == pooled_of(maps, mul, pool, bits)
    assert (sent, [t.cycle for t in got]) == pool_contract(height, width, pool, images,
                                                           valid, ready)
    if in_rate == 1 and out_rate == 1 and pool > 1:
        # a pixel every cycle, a result the cycle after its window's last pixel
        assert sent == list(range(len(sent)))
        lasts = [i for i in range(len(sent))
                 if (i // width) % pool == pool - 1 and (i % width) % pool == pool - 1]
        assert [t.cycle for t in got] == [sent[i] + 1 for i in lasts]


@pytest.mark.parametrize("height, width, channels, pool, bits", [(4, 6, 3, 2, 8),
                                                                 (6, 9, 2, 3, 4)])
def test_reset_mid_image(height: int, width: int, channels: int, pool: int, bits: int):
    """Reset in mid-row of windows, a result waiting, the partial results all ones: the next
    images come out exact and on time."""
    ones = (1 << bits) - 1
    old = pixels_of(np.full((2, height, width, channels), ones), bits)
    maps = random_maps(4, height, width, channels, bits, seed=2)[1:]
    mul = multipliers(channels, seed=3)
    images = len(maps)
    count = images * (height // pool) * (width // pool)
    dut = MaxPool(channels, height, width, pool, bits, minimum=mul < 0)
    # results are taken until the last row of the second row of windows begins: the first
    # window that row completes waits, the second stalls the unit; the reset comes after
    stop = (2 * pool - 1) * width
    reset = stop + 2 * pool * width
    valid, ready = random_pattern(0.7, seed=3), random_pattern(0.6, seed=4)
    sent, got = check_reset_mid_stream(dut, dut.s, dut.m, old, pixels_of(maps, bits), count,
                                       stop=stop, reset=reset, quiet=3 * width,
                                       cycles=reset + images * height * width * 20 + 500,
                                       valid=valid, ready=ready, stalled=True)
    assert [t.payload for t in got] == pooled_of(maps, mul, pool, bits)
    assert (sent, [t.cycle for t in got]) == pool_contract(height, width, pool, images,
                                                           valid, ready, start=reset + 1)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("args", [(1, 4, 6, 4, 8, [True]), (1, 6, 4, 4, 8, [True]),
                                  (2, 4, 4, 2, 8, [True]), (0, 4, 4, 2, 8, []),
                                  (1, 4, 4, 0, 8, [False]), (1, 4, 4, 2, 0, [False])])
def test_bad_arguments(args):
    with pytest.raises(ValueError, match="must"):
        MaxPool(*args)
    gc.collect()          # the half-built component goes now, while its warning is ignored
