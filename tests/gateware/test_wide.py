"""bchw.gateware.wide: registers wider than one Amaranth cell, generated and simulated."""

import re

from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.gateware import wide
from bchw.gateware.simtools import simulate
from bchw.gateware.wide import CHUNK_BITS, wide_signal


def test_narrow_is_one_signal_wide_is_chunks():
    assert isinstance(wide_signal(CHUNK_BITS, "r"), Signal)
    wide = wide_signal(2 * CHUNK_BITS + 5, "r")
    assert len(wide) == 2 * CHUNK_BITS + 5
    assert [len(part) for part in wide.parts] == [CHUNK_BITS, CHUNK_BITS, 5]


class Shifter(wiring.Component):
    """A ``width``-bit register shifted by 8 bits a cycle, loaded 8 bits at a time, read at
    its top by another module: at 2**16 bits, the shape of the flattened vector that
    Amaranth 0.5 cannot make as one signal feeding another module."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({"i": In(8), "o": Out(8)})

    def elaborate(self, platform):
        m = Module()
        reg = wide_signal(self.width, "reg")
        m.d.sync += reg.eq(Cat(self.i, reg[:-8]))
        m.submodules.tap = tap = Tap()
        m.d.comb += [tap.i.eq(reg[-8:]), self.o.eq(tap.o)]
        return m


class Tap(wiring.Component):
    def __init__(self):
        super().__init__({"i": In(8), "o": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.o.eq(self.i)
        return m


def test_a_two_to_the_sixteen_bit_register_generates():
    assert "reg_1" in verilog.convert(Shifter(1 << 16), name="shifter")


def test_chunks_shift_as_one_register(monkeypatch):
    # chunks of 64 bits, so that Amaranth's Python simulator (whose masks of 2**15 bits
    # pass Python's limit on integer digits) runs the same structure
    monkeypatch.setattr(wide, "CHUNK_BITS", 64)
    assert [len(part) for part in wide_signal(200, "r").parts] == [64, 64, 64, 8]
    dut = Shifter(200)
    depth = 200 // 8

    async def bench(ctx):
        for k in range(3 * depth):
            ctx.set(dut.i, k % 251)
            await ctx.tick()
            if k >= depth - 1:
                # what went in ``depth`` edges ago comes out at the top
                assert ctx.get(dut.o) == (k - depth + 1) % 251

    simulate(dut, bench, cycles=3 * depth + 10)


def test_register_copies_all_follow_the_next_value():
    m = Module()
    nxt = Signal(3)
    copies = wide.register_copies(m, nxt, 3, "n", init=5)
    assert [c.name for c in copies] == ["n_copy0", "n_copy1", "n_copy2"]
    assert all(c.attrs["keep"] == 1 for c in copies)
    seen = []

    async def bench(ctx):
        seen.append([ctx.get(c) for c in copies])          # reset value
        for value in (1, 6, 2):
            ctx.set(nxt, value)
            await ctx.tick()
            seen.append([ctx.get(c) for c in copies])

    simulate(m, bench, cycles=10)
    assert seen == [[5] * 3, [1] * 3, [6] * 3, [2] * 3]


def test_register_tree_copies_two_cycles_later_each_first_level_copy_feeding_fanout():
    m = Module()
    nxt = Signal(4)
    copies = wide.register_tree(m, nxt, 10, "x", fanout=4)
    assert [c.name for c in copies] == [f"x_copy{k}" for k in range(10)]
    assert all(c.attrs["keep"] == 1 for c in copies)
    text = verilog.convert(m, ports=[nxt, *copies])
    # three first-level copies, of 4, 4 and 2 trees
    assert sorted(set(re.findall(r"\bx_fan_copy\d+\b", text))) == [
        f"x_fan_copy{j}" for j in range(3)]
    # each copy loads (through a temporary of Amaranth's) its first-level copy
    temps = dict(re.findall(r"(\\\$\d+)\s*= (x_fan_copy\d+);", text))
    loads = dict(re.findall(r"\b(x_copy\d+) <= (\\\$\d+)\s*;", text))
    assert {c: temps[t] for c, t in loads.items()} == {
        f"x_copy{k}": f"x_fan_copy{k // 4}" for k in range(10)}
    seen = []

    async def bench(ctx):
        for value in (3, 9, 12, 0):
            ctx.set(nxt, value)
            await ctx.tick()
            seen.append({ctx.get(c) for c in copies})

    simulate(m, bench, cycles=10)
    assert seen == [{0}, {3}, {9}, {12}]
