"""InputAssembler in Amaranth's simulator: beats of ``lanes`` pixels become whole image
vectors, in order, none lost or duplicated, under input gaps and output back-pressure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth.hdl import Cat

from bchw.gateware.assembler import InputAssembler
from bchw.gateware.simtools import (
    Port,
    always,
    pack,
    random_pattern,
    simulate,
    stream_get,
    stream_put,
)


def beats_of(images: np.ndarray, lanes: int, rng: np.random.Generator) -> list[int]:
    """Beat payloads ``{tlast, tdata}``; unused lanes of a last beat carry junk to be dropped."""
    n_in = images.shape[1]
    beats = math.ceil(n_in / lanes)
    padded = rng.integers(0, 256, size=(len(images), beats * lanes))
    padded[:, :n_in] = images
    words = []
    for img in padded:
        for k in range(beats):
            last = k == beats - 1
            words.append(pack(img[k * lanes:(k + 1) * lanes], 8) | last << (lanes * 8))
    return words


@pytest.mark.parametrize("n_in, lanes", [(1, 1), (7, 3), (13, 13), (10, 4), (20, 6), (17, 5)])
@pytest.mark.parametrize("in_rate, out_rate", [(1.0, 1.0), (0.5, 0.5), (1.0, 0.2), (0.7, 1.0)])
def test_beats_to_vectors(n_in: int, lanes: int, in_rate: float, out_rate: float):
    rng = np.random.default_rng(n_in * 31 + lanes)
    images = rng.integers(0, 256, size=(12, n_in))
    images[0], images[1] = 0, 255
    dut = InputAssembler(n_in, lanes)
    beats = dut.beats
    assert beats == math.ceil(n_in / lanes)
    valid = always if in_rate == 1 else random_pattern(in_rate, seed=lanes)
    ready = always if out_rate == 1 else random_pattern(out_rate, seed=n_in)
    sent, got = [], []

    async def producer(ctx):
        sent.extend(await stream_put(ctx, Port(dut.tvalid, dut.tready, Cat(dut.tdata, dut.tlast)),
                                     beats_of(images, lanes, rng), valid=valid))

    async def consumer(ctx):
        got.extend(await stream_get(ctx, dut.m, len(images), ready=ready))
        for _ in range(2 * beats + 4):     # and nothing more comes out
            ctx.set(dut.m.ready, 1)
            _, _, extra = await ctx.tick().sample(dut.m.valid)
            assert not extra, "an image came out twice"

    simulate(dut, producer, consumer, cycles=12 * beats * 20 + 100)
    assert [t.payload for t in got] == [pack(img, 8) for img in images]
    if in_rate == 1 and out_rate == 1:
        # one beat a cycle; the vector is offered the cycle after its last beat
        assert sent == list(range(len(sent)))
        assert [t.cycle for t in got] == [sent[(i + 1) * beats - 1] + 1 for i in range(len(got))]
