"""The sliding window: a stream of pixels in, the k×k window around each pixel out."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out


class SlidingWindow(wiring.Component):
    """The ``kernel``×``kernel`` windows, stride 1, zero padding ``p = (kernel − 1) // 2``, of
    images of ``height``×``width`` pixels of ``channels`` ``bits``-bit values.

    Pixels come in raster order, images back to back with no marker; out come
    ``height × width`` windows an image, in raster order of their centre,
    equal to :func:`bchw.golden.windows` with padding ``p``.

    Timing contract (what :mod:`bchw.perf` models).  Per image the unit walks
    a grid of ``(H + p)`` rows × ``(W + p)`` columns, one position per
    cycle in which it *advances*.  Position ``(y, x)`` *consumes* an input
    beat iff ``y < H and x < W`` (elsewhere it feeds zeros and consumes
    nothing) and *emits* the window centred at ``(y − p, x − p)`` iff
    ``y ≥ p and x ≥ p``.  In a cycle it advances iff (it does not consume
    or ``s.valid``) and (it does not emit or ``m.valid`` is low), and
    ``s.ready`` = consumes and (does not emit or ``m.valid`` is low).  The
    stall looks at the output register's own ``m.valid``, not at ``m.ready``,
    so no combinational path runs from the consumer's ready through this
    unit; an emit that meets a full output register waits one cycle more
    than it would have to.  An emitted window is loaded into the output
    register at the edge that advances (``m.valid`` high from the next cycle)
    and held until taken.  The last position of an image is followed by
    the next image's ``(0, 0)`` with no idle cycle.

    Consequences, with every input valid and every output ready: the first
    window of an image is offered ``p·(W + p) + p + 1`` cycles after the image's
    first beat is taken, and consecutive windows of a row are two cycles
    apart (each emit but the first of a row meets the previous window in the
    output register), so an image's first beat follows the previous image's
    by ``(H + p)·(W + p) + H·(W − 1)`` cycles when ``p ≥ 1`` and by
    ``2·H·W`` when ``p = 0`` (where all windows of all images run on).

    Storage: the previous ``kernel − 1`` rows in one :class:`~amaranth.lib.memory.Memory`
    of ``width`` words (all ``kernel − 1`` rows of a column in a word, so one
    read and one write port), read synchronously so that it maps to block RAM
    as well as to distributed RAM: the column of the position about to be
    entered is read at the edge that enters it.  The window's ``kernel − 1``
    older columns are registers.  Nothing is cleared, between images or at
    reset: rows above the image are masked by the row counter; rows below it
    and columns right of it are the zeros fed past its edges, and the columns
    left of it are those same zero columns, fed at the end of the grid row
    before (row 0 emits nothing when ``p ≥ 1``, so that row has been walked
    since any reset).

    Members
    -------
    s : In(stream.Signature(channels · bits))
        A pixel, channel ``c`` at bits ``[c·bits, (c+1)·bits)``, unsigned.
    m : Out(stream.Signature(kernel · kernel · channels · bits))
        A window, element ``j = (ky·kernel + kx)·channels + c`` (the input at
        row ``y − p + ky``, column ``x − p + kx``, channel ``c``, or 0
        outside the image) at bits ``[j·bits, (j+1)·bits)``.
    """

    def __init__(self, channels: int, height: int, width: int, kernel: int, bits: int):
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and at least 1, not {kernel}")
        for name, value in (("channels", channels), ("height", height), ("width", width),
                            ("bits", bits)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        self.channels, self.height, self.width = channels, height, width
        self.kernel, self.bits = kernel, bits
        self.padding = (kernel - 1) // 2
        super().__init__({
            "s": In(stream.Signature(channels * bits)),
            "m": Out(stream.Signature(kernel * kernel * channels * bits))})

    def elaborate(self, platform):
        m = Module()
        k, p, h, w = self.kernel, self.padding, self.height, self.width
        pixel_bits = self.channels * self.bits

        # the grid position; the compares are against constants
        y = Signal(range(h + p))
        x = Signal(range(w + p))
        consume = (y < h) & (x < w)
        emit = (y >= p) & (x >= p)
        room = ~emit | ~self.m.valid
        advance = Signal()
        m.d.comb += [advance.eq((~consume | self.s.valid) & room),
                     self.s.ready.eq(consume & room)]
        with m.If(advance):
            with m.If(x == w + p - 1):
                m.d.sync += [x.eq(0), y.eq(Mux(y == h + p - 1, 0, y + 1))]
            with m.Else():
                m.d.sync += x.eq(x + 1)

        # the column entering the window: rows y − k + 1 … y, zeros right of the image
        pixel = Mux(consume, self.s.payload, 0)
        if k > 1:
            m.submodules.lines = lines = memory.Memory(shape=(k - 1) * pixel_bits, depth=w,
                                                       init=[])
            read = lines.read_port()
            write = lines.write_port()
            # prefetch: the column of the position the advance enters (from column W − 1 on,
            # column 0, the next row's first; what is read for columns ≥ W is not used, and
            # only that read can meet a write of its word, when W is 1)
            m.d.comb += [read.en.eq(advance), read.addr.eq(Mux(x < w - 1, x + 1, 0)),
                         write.en.eq(advance & (x < w)), write.addr.eq(x),
                         write.data.eq(Cat(read.data[pixel_bits:], pixel))]
            column = Mux(x < w, Cat(read.data, pixel), 0)
        else:
            column = pixel

        # the window's older columns x − k + 1 … x − 1, oldest first
        older = [Signal(k * pixel_bits, name=f"column{i}", reset_less=True)
                 for i in range(k - 1)]
        columns = [*older, column]
        with m.If(advance):
            m.d.sync += [a.eq(b) for a, b in zip(older, columns[1:])]

        # top padding: rows y − k + 1 + ky < 0. Between images the line buffers hold the
        # previous image's zero-fed rows there, but after a reset anything. The left padding
        # needs no mask: it is the zero columns x ≥ W of the grid row before, which has been
        # walked since any reset, as row 0 emits nothing when p ≥ 1
        elements = []
        for ky in range(k):
            for kx in range(k):
                value = columns[kx][ky * pixel_bits:(ky + 1) * pixel_bits]
                elements.append(Mux(y < k - 1 - ky, 0, value) if ky < k - 1 else value)

        with m.If(advance & emit):
            m.d.sync += [self.m.valid.eq(1), self.m.payload.eq(Cat(*elements))]
        with m.Elif(self.m.ready):
            m.d.sync += self.m.valid.eq(0)
        return m
