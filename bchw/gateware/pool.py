"""Max pooling of a stream of pixels, with a minimum for the channels that ask for it."""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out


class MaxPool(wiring.Component):
    """``pool``×``pool`` pooling, stride ``pool``, of images of ``height``×``width`` pixels of
    ``channels`` unsigned ``bits``-bit values.

    A channel takes the maximum of its window, or the minimum where
    ``minimum[c]`` is true: :func:`bchw.golden.pool_codes` with ``minimum``
    the channels whose requantization multiplier is negative.  Pixels come in
    raster order, images back to back with no marker; out come the pooled
    pixels, ``height/pool × width/pool`` an image, in raster order.

    Timing contract (what :mod:`bchw.perf` models).  A pixel is taken in
    every cycle in which ``s.valid & s.ready``.  ``s.ready`` is low only for
    the pixel that completes a window (``y % pool == pool − 1`` and
    ``x % pool == pool − 1``) while ``m.valid`` is high; it looks at the
    output register's own state, not at ``m.ready``, so no combinational path
    runs from the consumer's ready through this unit.  The completing pixel's
    result is loaded into the output register at the edge that takes it
    (``m.valid`` high from the next cycle) and held until taken.

    Storage: a register for the window being swept along the current row, and
    one :class:`~amaranth.lib.memory.Memory` word per window of the row
    (``width/pool`` words of ``channels · bits``) for the rows above, read
    synchronously (block or distributed RAM): the word of the pixel about to
    come is read at the edge that takes the pixel before it, through a
    transparent port (with one window a row that edge also writes the word).
    ``pool`` 1 stores nothing.  A window's first pixel starts it afresh, so
    nothing is cleared, between images or at reset.

    Members
    -------
    s : In(stream.Signature(channels · bits))
        A pixel, channel ``c`` at bits ``[c·bits, (c+1)·bits)``.
    m : Out(stream.Signature(channels · bits))
        A pooled pixel, likewise.
    """

    def __init__(self, channels: int, height: int, width: int, pool: int, bits: int,
                 minimum: Sequence[bool]):
        for name, value in (("channels", channels), ("height", height), ("width", width),
                            ("pool", pool), ("bits", bits)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if height % pool or width % pool:
            raise ValueError(f"pool {pool} must divide the height {height} and the width "
                             f"{width}")
        if len(minimum) != channels:
            raise ValueError(f"minimum must have one entry per channel ({channels}), "
                             f"not {len(minimum)}")
        self.channels, self.height, self.width = channels, height, width
        self.pool, self.bits = pool, bits
        self.minimum = [bool(v) for v in minimum]
        super().__init__({
            "s": In(stream.Signature(channels * bits)),
            "m": Out(stream.Signature(channels * bits))})

    def elaborate(self, platform):
        m = Module()
        pool = self.pool
        windows = self.width // pool

        # the pixel's place: within its window (fx, fy) and the window's column (wx); an
        # image ends where a row of windows does, so the image's row needs no counter
        fx = Signal(range(pool))
        fy = Signal(range(pool))
        wx = Signal(range(windows))
        # fx == pool − 1 and fy == pool − 1 as registers, loaded with the counters' next
        # values: the output register's load enable is then one gate from registers
        last_x = Signal(init=pool == 1)
        last_y = Signal(init=pool == 1)
        row_end = wx == windows - 1     # the row's last window
        completes = last_x & last_y
        m.d.comb += self.s.ready.eq(~(completes & self.m.valid))
        take = self.s.valid & self.s.ready
        with m.If(take):
            m.d.sync += fx.eq(Mux(last_x, 0, fx + 1))
            if pool > 1:
                m.d.sync += last_x.eq(~last_x & (fx == pool - 2))
            with m.If(last_x):
                m.d.sync += wx.eq(Mux(row_end, 0, wx + 1))
                with m.If(row_end):
                    m.d.sync += fy.eq(Mux(last_y, 0, fy + 1))
                    if pool > 1:
                        m.d.sync += last_y.eq(~last_y & (fy == pool - 2))

        value = (self.s.payload if pool == 1
                 else self._combine(m, take, fx, fy, wx, last_x, row_end))
        with m.If(take & completes):
            m.d.sync += [self.m.valid.eq(1), self.m.payload.eq(value)]
        with m.Elif(self.m.ready):
            m.d.sync += self.m.valid.eq(0)
        return m

    def _combine(self, m: Module, take: Value, fx: Value, fy: Value, wx: Value,
                 last_x: Value, row_end: Value) -> Value:
        """The pixel combined with what it joins: nothing (a window's first pixel), the
        window's rows above (the first pixel of a later row), or the pixels before it in the
        row; registered in ``run`` and, at the window's last column, in the row buffer."""
        bits = self.bits
        run = Signal(self.channels * bits, reset_less=True)
        m.submodules.rows = rows = memory.Memory(shape=self.channels * bits,
                                                 depth=self.width // self.pool, init=[])
        write = rows.write_port()
        # with one window a row, a row's last write and the next row's read meet
        read = rows.read_port(transparent_for=[write])
        m.d.comb += [read.en.eq(take), read.addr.eq(Mux(last_x, Mux(row_end, 0, wx + 1), wx))]
        # a signal, not an expression: each channel's slice of an expression would make
        # Amaranth emit the whole expression again (generation quadratic in the channels)
        partial = Signal(self.channels * bits)
        m.d.comb += partial.eq(Mux(fx == 0, read.data, run))
        fresh = (fx == 0) & (fy == 0)
        result = []
        for c in range(self.channels):
            a = self.s.payload[c * bits:(c + 1) * bits]
            b = partial[c * bits:(c + 1) * bits]
            keep = (b < a) if self.minimum[c] else (b > a)
            result.append(Mux(fresh | ~keep, a, b))
        value = Cat(*result)
        with m.If(take):
            m.d.sync += run.eq(value)
        m.d.comb += [write.en.eq(take & last_x), write.addr.eq(wx), write.data.eq(value)]
        return value
