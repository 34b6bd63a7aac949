"""The input assembler: AXI4-Stream beats of pixels in, one whole image vector out."""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.gateware.wide import output_valid_copies, wide_signal
from bchw.perf import enable_parts


class InputAssembler(wiring.Component):
    """Collects ``ceil(n_in / lanes)`` beats of ``lanes`` pixels into one vector.

    Pixel ``k`` of an image travels in beat ``k // lanes``, lane ``k % lanes``;
    the unused lanes of the last beat are dropped.  Beats are counted; ``tlast``
    is accepted for AXI4-Stream compatibility and not needed.  Beats shift
    straight into the output register, so the image is held once: while a
    whole vector waits there, a beat is taken only in a cycle in which the
    vector is taken too (``tready`` is ``m.ready`` then), and starts the next
    image.

    Members
    -------
    tdata : In(lanes · pixel_bits)
    tvalid : In(1)
    tready : Out(1)
    tlast : In(1)
    m : Out(stream.Signature(n_in · pixel_bits))
        The image, pixel ``k`` at bits ``[k·pixel_bits, (k+1)·pixel_bits)``.
    """

    def __init__(self, n_in: int, lanes: int, pixel_bits: int = 8):
        self.n_in, self.lanes, self.pixel_bits = n_in, lanes, pixel_bits
        self.beats = math.ceil(n_in / lanes)
        super().__init__({"tdata": In(lanes * pixel_bits), "tvalid": In(1), "tready": Out(1),
                          "tlast": In(1), "m": Out(stream.Signature(n_in * pixel_bits))})

    def elaborate(self, platform):
        m = Module()
        beat_bits = self.lanes * self.pixel_bits
        count = Signal(range(self.beats))
        last_beat = count == self.beats - 1
        m.d.comb += self.tready.eq(~self.m.valid | self.m.ready)
        take = self.tvalid & self.tready
        # beat b of an image ends at bits [b·beat_bits, (b+1)·beat_bits) after the last one
        vector = wide_signal(self.beats * beat_bits, "vector")
        m.d.comb += self.m.payload.eq(vector[:self.n_in * self.pixel_bits])
        with m.If(take):
            m.d.sync += count.eq(Mux(last_beat, 0, count + 1))
        # the image shifts in part by part, each part under its own copy of ``take`` made
        # from a copy of m.valid (see bchw.perf.enable_parts)
        shifted = Cat(vector[beat_bits:], self.tdata)
        parts = enable_parts(len(vector))
        fulls = output_valid_copies(m, self.m, take & last_beat, len(parts))
        for (lo, hi), full in zip(parts, fulls, strict=True):
            with m.If(self.tvalid & (~full | self.m.ready)):
                m.d.sync += vector[lo:hi].eq(shifted[lo:hi])
        return m
