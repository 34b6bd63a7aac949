"""Stream drivers for Amaranth's simulator, shared by the gateware unit tests.

A testbench counts clock edges from 0, the first edge after it starts;
:func:`stream_put` and :func:`stream_get` report the edge at which each
transfer happened in that count, so two testbenches started together (as
:func:`simulate` starts them) report cycles on the same time base.  Valid and
ready are driven from per-cycle *patterns* ``cycle → bool``, the convention of
:meth:`bchw.perf.CycleModel.stream`, so a measured run and the cycle model
can be given exactly the same gaps and back-pressure.

A "stream" here is anything with ``valid``, ``ready`` and ``payload``: an
``amaranth.lib.stream`` interface, or a :class:`Port` gathering the flat
signals of an AXI4-Stream port (its ``payload`` may be a ``Cat`` of
``tdata`` and ``tlast``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from amaranth.hdl import ClockDomain, Module, Value
from amaranth.sim import Simulator

#: Clock period of :func:`simulate`; only cycles matter, the value is arbitrary.
PERIOD = 1e-6

Pattern = Callable[[int], bool]


class Port(NamedTuple):
    """The flat signals of a stream port, e.g. ``Port(dut.s_axis_tvalid, dut.s_axis_tready,
    Cat(dut.s_axis_tdata, dut.s_axis_tlast))``."""

    valid: Value
    ready: Value
    payload: Value


class Transfer(NamedTuple):
    """A payload taken by :func:`stream_get`, and the edge at which it was taken."""

    cycle: int
    payload: int


def always(cycle: int) -> bool:
    """The pattern that is high at every cycle: no gaps, no back-pressure."""
    return True


def random_pattern(rate: float, seed: int) -> Pattern:
    """A seeded pattern, high at each cycle with probability ``rate``.

    Cycle ``c`` always gives the same answer, whatever order it is asked in,
    so the simulator and the cycle model can both be given the pattern.
    """
    rng = random.Random(seed)
    drawn: list[bool] = []

    def pattern(cycle: int) -> bool:
        while len(drawn) <= cycle:
            drawn.append(rng.random() < rate)
        return drawn[cycle]

    return pattern


def pack(values: Iterable[int], bits: int) -> int:
    """Lane ``i`` of ``values`` at bits ``[i·bits, (i+1)·bits)``, negatives in two's complement."""
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (i * bits) for i, v in enumerate(values))


def unpack(word: int, bits: int, count: int, *, signed: bool = False) -> list[int]:
    """Inverse of :func:`pack`: ``count`` lanes of ``bits`` bits."""
    mask = (1 << bits) - 1
    lanes = [(word >> (i * bits)) & mask for i in range(count)]
    if signed:
        lanes = [v - (1 << bits) if v >> (bits - 1) else v for v in lanes]
    return lanes


def simulate(dut: Any, *testbenches: Callable, cycles: int) -> None:
    """Run ``testbenches`` together against ``dut``, clocked, until all of them return.

    They start at the same instant, so they count cycles alike.  A testbench
    still waiting after ``cycles`` edges (a stream that never moves, say)
    fails the run instead of hanging it.
    """
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    for testbench in testbenches:
        sim.add_testbench(testbench)

    async def watchdog(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"testbenches did not finish within {cycles} cycles")

    sim.add_testbench(watchdog, background=True)
    sim.run()


async def stream_put(ctx, stream: Any, payloads: Iterable[int], *, valid: Pattern = always,
                     cycle: int = 0) -> list[int]:
    """Send ``payloads`` in order; return the edge at which each was accepted.

    At each edge ``c`` (counted from ``cycle``, the edge ahead when called)
    a payload is offered if ``valid(c)``; like the cycle model's source, an
    offer not taken may be withdrawn.  Returns right after the last transfer,
    with ``valid`` low, so a next call continues at ``cycle = result[-1] + 1``.
    """
    accepted = []
    for payload in payloads:
        ctx.set(stream.payload, payload)
        while True:
            offer = bool(valid(cycle))
            ctx.set(stream.valid, offer)
            _, _, ready = await ctx.tick().sample(stream.ready)
            cycle += 1
            if offer and ready:
                accepted.append(cycle - 1)
                break
    ctx.set(stream.valid, 0)
    return accepted


async def stream_get(ctx, stream: Any, count: int, *, ready: Pattern = always,
                     cycle: int = 0) -> list[Transfer]:
    """Take ``count`` payloads, ready at edge ``c`` iff ``ready(c)``; return them with their edges.

    It also checks the stream rule: once ``valid`` is high, it and the
    payload hold until the transfer.
    """
    got: list[Transfer] = []
    held = None                      # a payload offered and not yet taken
    while len(got) < count:
        take = bool(ready(cycle))
        ctx.set(stream.ready, take)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if held is not None:
            assert valid and payload == held, (
                f"cycle {cycle}: an offered payload {held:#x} was withdrawn or changed before "
                f"it was taken (valid={valid}, payload={payload:#x})")
        held = payload if valid and not take else None
        if valid and take:
            got.append(Transfer(cycle, payload))
        cycle += 1
    ctx.set(stream.ready, 0)
    return got


def check_reset_mid_stream(dut: Any, source: Any, sink: Any, old: Sequence[int],
                           fresh: Sequence[int], count: int, *, stop: int, reset: int,
                           quiet: int, cycles: int, valid: Pattern = always,
                           ready: Pattern = always, stalled: bool = False,
                           all_old: bool = False) -> tuple[list[int], list[Transfer]]:
    """Reset ``dut`` in mid-stream, then stream ``fresh`` through it; return what it did after.

    ``dut``, whose ``source`` stream goes in and ``sink`` stream comes out, is simulated
    inside a module that gives it its ``sync`` domain, and so a reset to pulse.  Until edge
    ``reset``, the source offers the ``old`` payloads in order at every edge while any are
    left, and the sink takes outputs at the edges before ``stop``, then refuses them.  Just
    before the reset it checks that an output waits at the sink, with ``stalled`` that the
    source is refused, and with ``all_old`` that every old payload was taken.  Reset is high
    at edge ``reset``; from edge ``reset + 1`` :func:`stream_put` sends ``fresh`` under
    ``valid`` and :func:`stream_get` takes ``count`` outputs under ``ready``; then for
    ``quiet`` edges the sink is ready and nothing more may come out.  A run longer than
    ``cycles`` edges fails (see :func:`simulate`).

    Returns the edges at which the fresh payloads were accepted and the outputs after the
    reset taken, counted like :func:`simulate`'s: a contract given the same patterns starts
    at ``reset + 1``.
    """
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.dut = dut
    sent: list[int] = []
    got: list[Transfer] = []

    async def producer(ctx):
        taken = 0
        ctx.set(source.payload, old[0])
        for _ in range(reset):
            offer = taken < len(old)
            ctx.set(source.valid, offer)
            _, _, accepted = await ctx.tick().sample(source.ready)
            if offer and accepted:
                taken += 1
                ctx.set(source.payload, old[min(taken, len(old) - 1)])
        assert ctx.get(sink.valid), "the reset should meet a waiting output"
        if stalled:
            assert not ctx.get(source.ready), "the reset should meet a refused input"
        if all_old:
            assert taken == len(old), "every old payload should be in before the reset"
        ctx.set(source.valid, 0)
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        sent.extend(await stream_put(ctx, source, fresh, valid=valid, cycle=reset + 1))

    async def consumer(ctx):
        for cycle in range(reset + 1):
            ctx.set(sink.ready, cycle < stop)
            await ctx.tick()
        got.extend(await stream_get(ctx, sink, count, ready=ready, cycle=reset + 1))
        for _ in range(quiet):
            ctx.set(sink.ready, 1)
            _, _, extra = await ctx.tick().sample(sink.valid)
            assert not extra, f"an output beyond the {count} expected after the reset"

    simulate(m, producer, consumer, cycles=cycles)
    return sent, got


async def check_pipeline(ctx, en: Value, signals: Sequence[Value],
                         inputs: Sequence[Sequence[int]], output: Value, expected: Sequence[int],
                         depth: int, *, enable: Pattern = always) -> int:
    """Drive an enable-gated pipeline and check its output at every cycle.

    Input ``i`` (one value per signal of ``signals``) is applied at cycle
    ``i`` with ``en = enable(i)``.  The model of the pipeline: after the ``k``-th enabled edge,
    ``output`` shows ``expected[j]`` of the input applied at the
    ``(k − depth + 1)``-th enabled edge, and it holds while ``en`` is low.
    After the last input, ``en`` stays high until every enabled input has
    come out.  Returns the number of distinct inputs checked at the output.
    """
    taken: list[int | None] = []     # the input applied at each enabled edge; None: flushing
    seen = set()
    for i in range(len(inputs) + depth - 1):
        if i < len(inputs):
            for signal, value in zip(signals, inputs[i], strict=True):
                ctx.set(signal, value)
            on = bool(enable(i))
        else:
            on = True
        ctx.set(en, on)
        await ctx.tick()
        if on:
            taken.append(i if i < len(inputs) else None)
        if len(taken) >= depth and taken[-depth] is not None:
            j = taken[-depth]
            got = ctx.get(output)
            assert got == expected[j], (
                f"cycle {i}: output {got} != expected {expected[j]} for input {j} "
                f"({depth} enabled edges before)")
            seen.add(j)
    return len(seen)
