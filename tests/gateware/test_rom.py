"""Rom (inline mode) in Amaranth's simulator: the word at ``addr`` one cycle later, held while
``en`` is low."""

from __future__ import annotations

import random

import pytest

from bchw.gateware.rom import ROM_VERILOG, ROW_BITS, Rom
from bchw.perf import ROM_ROW_WORDS
from bchw.gateware.simtools import check_pipeline, random_pattern, simulate


@pytest.mark.parametrize("width, depth", [(1, 1), (7, 5), (37, 17), (64, 32)])
def test_inline_read_follows_addr_by_one_cycle(width: int, depth: int):
    rng = random.Random(width * 100 + depth)
    words = [rng.getrandbits(width) for _ in range(depth)]
    words[0] = (1 << width) - 1
    dut = Rom(width, depth, init=words)
    addrs = [rng.randrange(depth) for _ in range(120)]
    inputs = [(a,) for a in addrs]
    expected = [words[a] for a in addrs]

    async def testbench(ctx):
        seen = await check_pipeline(ctx, dut.en, [dut.addr], inputs, dut.data, expected, 1,
                                    enable=random_pattern(0.6, seed=depth))
        assert seen > 40

    simulate(dut, testbench, cycles=200)


def test_a_rom_read_in_rows_follows_addr_by_two_cycles():
    # 1,408 × 48: yosys would put its three 512-word rows side by side (bchw.perf.rom_rows)
    rng = random.Random(3)
    words = [rng.getrandbits(48) for _ in range(1408)]
    dut = Rom(48, 1408, init=words)
    assert (dut.rows, dut.latency) == (3, 2)
    addrs = [rng.randrange(1408) for _ in range(150)]
    expected = [words[a] for a in addrs]

    async def testbench(ctx):
        seen = await check_pipeline(ctx, dut.en, [dut.addr], [(a,) for a in addrs], dut.data,
                                    expected, 2, enable=random_pattern(0.6, seed=9))
        assert seen > 50

    simulate(dut, testbench, cycles=260)


def test_every_address_reads_its_word():
    words = [(a * 0x9E3779B1) & 0xFFFFF for a in range(13)]
    dut = Rom(20, 13, init=words)
    inputs = [(a,) for a in range(13)]

    async def testbench(ctx):
        assert await check_pipeline(ctx, dut.en, [dut.addr], inputs, dut.data, words, 1) == 13

    simulate(dut, testbench, cycles=50)


@pytest.mark.parametrize("lo, width", [(0, 5), (5, 7), (12, 8)])
def test_a_part_reads_its_bits_of_the_image_words(lo: int, width: int):
    rng = random.Random(lo)
    words = [rng.getrandbits(20) for _ in range(9)]
    dut = Rom(width, 9, init=words, lo=lo, image_width=20)
    inputs = [(a,) for a in range(9)]
    expected = [(word >> lo) % (1 << width) for word in words]

    async def testbench(ctx):
        assert await check_pipeline(ctx, dut.en, [dut.addr], inputs, dut.data, expected, 1) == 9

    simulate(dut, testbench, cycles=40)


def test_a_part_outside_the_image_word_is_refused():
    with pytest.raises(ValueError, match="not in a 20-bit image word"):
        Rom(8, 4, init=[0] * 4, lo=13, image_width=20)


def test_the_verilog_rows_are_the_models():
    assert f"localparam ROW_BITS = {ROW_BITS};" in ROM_VERILOG
    assert 1 << ROW_BITS == ROM_ROW_WORDS
