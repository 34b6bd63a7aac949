"""SlidingWindow in Amaranth's simulator: every window equals :func:`bchw.golden.windows`, and
every pixel taken and every window given at the cycle of the timing contract, under input gaps,
output back-pressure and reset in mid-image."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from bchw import golden
from bchw.gateware.simtools import (
    always,
    check_reset_mid_stream,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
)
from bchw.gateware.window import SlidingWindow
from bchw.perf import window_contract


def first_window_offset(width: int, kernel: int) -> int:
    """Cycles from an image's first beat to its first window, all inputs valid."""
    p = (kernel - 1) // 2
    return p * (width + p) + p + 1


def image_cycles(height: int, width: int, kernel: int) -> int:
    """Cycles from an image's first beat to the next one's, every input valid and every output
    ready: the grid, plus a stall for every emit but a row's first (kernel 1: for every emit
    but the first after reset, which comes before the first beat it is counted from)."""
    p = (kernel - 1) // 2
    stalls = height * width if p == 0 else height * (width - 1)
    return (height + p) * (width + p) + stalls


def random_maps(images: int, height: int, width: int, channels: int, bits: int,
                seed: int) -> np.ndarray:
    """[N, H, W, C] maps: an all-ones image first, whose rows would show through the
    padding of the next ones if the masks were wrong, then random ones."""
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, 1 << bits, size=(images, height, width, channels))
    maps[0] = (1 << bits) - 1
    return maps


def pixels_of(maps: np.ndarray, bits: int) -> list[int]:
    return [pack(pixel, bits) for pixel in maps.reshape(-1, maps.shape[-1])]


def windows_of(maps: np.ndarray, kernel: int, bits: int) -> list[int]:
    out = golden.windows(maps, kernel, (kernel - 1) // 2)
    return [pack(window, bits) for window in out.reshape(-1, out.shape[-1])]


# (height, width, channels, kernel, bits)
SHAPES = [(4, 5, 1, 3, 8), (7, 3, 3, 3, 4), (8, 8, 1, 5, 1), (5, 4, 3, 5, 8),
          (3, 7, 3, 1, 8), (2, 1, 1, 5, 4), (1, 6, 2, 3, 8), (3, 2, 1, 1, 1)]
RATES = [(1.0, 1.0), (0.5, 0.6), (1.0, 0.3), (0.4, 1.0)]


@pytest.mark.parametrize("in_rate, out_rate", RATES)
@pytest.mark.parametrize("height, width, channels, kernel, bits", SHAPES)
def test_windows(height: int, width: int, channels: int, kernel: int, bits: int,
                 in_rate: float, out_rate: float):
    images = 3
    maps = random_maps(images, height, width, channels, bits, seed=height * 100 + width)
    dut = SlidingWindow(channels, height, width, kernel, bits)
    assert len(dut.m.payload) == kernel * kernel * channels * bits
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=kernel)
    ready = always if out_rate == 1 else random_pattern(out_rate, seed=channels + 10)
    count = images * height * width
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, dut.s, pixels_of(maps, bits), valid=valid))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, count, ready=ready))

    simulate(dut, producer, consumer, cycles=count * 30 + 200)
    assert [t.payload for t in got] == windows_of(maps, kernel, bits)
    assert (sent, [t.cycle for t in got]) == window_contract(height, width, kernel, images,
                                                             valid, ready)
    if in_rate == 1 and out_rate == 1:
        firsts = sent[::height * width]
        offset = first_window_offset(width, kernel)
        assert [t.cycle for t in got[::height * width]] == [c + offset for c in firsts]
        periods = [b - a for a, b in zip(firsts, firsts[1:])]
        assert periods == [image_cycles(height, width, kernel)] * (images - 1)


@pytest.mark.parametrize("height, width, kernel", [(5, 4, 3), (8, 8, 5), (3, 7, 1), (1, 1, 3),
                                                   (2, 9, 7)])
def test_contract_in_closed_form(height: int, width: int, kernel: int):
    """The contract's own consequences, always valid and ready: the first window
    ``p·(W + p) + p + 1`` cycles after the first beat, an image every
    :func:`image_cycles` cycles."""
    images = 4
    sent, taken = window_contract(height, width, kernel, images, always, always)
    n = height * width
    firsts = sent[::n]
    assert firsts[0] == 0
    assert [taken[i * n] - firsts[i] for i in range(images)] == (
        [first_window_offset(width, kernel)] * images)
    periods = [b - a for a, b in zip(firsts, firsts[1:])]
    assert periods == [image_cycles(height, width, kernel)] * (images - 1)


@pytest.mark.parametrize("height, width, channels, kernel, bits", [(8, 8, 3, 3, 8),
                                                                   (6, 5, 1, 5, 4)])
def test_reset_mid_image(height: int, width: int, channels: int, kernel: int, bits: int):
    """Reset in mid-row, a window waiting, the line buffers and window registers full of ones:
    the next images come out exact and on time."""
    ones = (1 << bits) - 1
    old = pixels_of(np.full((2, height, width, channels), ones), bits)
    maps = random_maps(3, height, width, channels, bits, seed=2)[1:]
    images = len(maps)
    count = images * height * width
    dut = SlidingWindow(channels, height, width, kernel, bits)
    # windows are taken until the middle of a row in the middle of the first image, then the
    # unit stalls at its second emit; the reset comes well after
    p = (kernel - 1) // 2
    stop = first_window_offset(width, kernel) + (height // 2) * (2 * width + p - 1) + width // 2
    reset = stop + 3 * (width + p)
    valid, ready = random_pattern(0.7, seed=3), random_pattern(0.6, seed=4)
    sent, got = check_reset_mid_stream(dut, dut.s, dut.m, old, pixels_of(maps, bits), count,
                                       stop=stop, reset=reset, quiet=3 * width,
                                       cycles=reset + count * 30 + 500, valid=valid, ready=ready)
    assert [t.payload for t in got] == windows_of(maps, kernel, bits)
    assert (sent, [t.cycle for t in got]) == window_contract(height, width, kernel, images,
                                                             valid, ready, start=reset + 1)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("args", [(1, 4, 4, 2, 8), (1, 4, 4, 0, 8), (0, 4, 4, 3, 8),
                                  (1, 0, 4, 3, 8), (1, 4, 0, 3, 8), (1, 4, 4, 3, 0)])
def test_bad_arguments(args):
    with pytest.raises(ValueError, match="must be"):
        SlidingWindow(*args)
    gc.collect()          # the half-built component goes now, while its warning is ignored
