"""The bit layout of ``bchw_top``'s AXI4-Stream beats, in one place.

Input: an image of ``n_in`` u8 pixels travels as ``in_beats = ceil(n_in / in_lanes)``
beats; pixel ``k`` sits in beat ``k // in_lanes`` at bits
``[8*(k % in_lanes) + 7 : 8*(k % in_lanes)]``; unused lanes of the last beat are 0.

Output: one beat per image; bits ``[class_bits-1:0]`` hold the predicted class
(unsigned), score ``i`` (two's complement, ``score_bits`` wide) sits at bits
``[class_bits + (i+1)*score_bits - 1 : class_bits + i*score_bits]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bchw.errors import BchwError

IO_FIELDS = ("n_in", "in_lanes", "in_beats", "class_bits", "score_bits", "num_classes")


def check_io(io: Mapping[str, int]) -> dict[str, int]:
    """Return ``io`` as plain ints, or raise naming the field that is missing or wrong."""
    out = {}
    for name in IO_FIELDS:
        if name not in io:
            raise BchwError(f"io dict lacks '{name}' (needs {', '.join(IO_FIELDS)})", field=name)
        value = int(io[name])
        if value < 1:
            raise BchwError(f"must be a positive integer, got {io[name]!r}", field=name)
        out[name] = value
    want = -(-out["n_in"] // out["in_lanes"])
    if out["in_beats"] != want:
        raise BchwError(f"is {out['in_beats']}, but ceil(n_in / in_lanes) = "
                        f"ceil({out['n_in']} / {out['in_lanes']}) = {want}", field="in_beats")
    if out["num_classes"] > 1 << out["class_bits"]:
        raise BchwError(f"{out['class_bits']} bits cannot hold {out['num_classes']} classes",
                        field="class_bits")
    return out


def output_width(io: Mapping[str, int]) -> int:
    """Width of ``m_axis_tdata``."""
    return io["class_bits"] + io["num_classes"] * io["score_bits"]


def pack_image(image: np.ndarray, in_lanes: int) -> list[int]:
    """The ``s_axis_tdata`` words of one image, first beat first."""
    pixels = np.asarray(image, dtype=np.uint8).ravel()
    beats = -(-pixels.size // in_lanes)
    padded = np.zeros(beats * in_lanes, dtype=np.uint8)
    padded[:pixels.size] = pixels
    # Little-endian bytes of a beat are exactly lane 0 in the low bits.
    return [int.from_bytes(row.tobytes(), "little") for row in padded.reshape(beats, in_lanes)]


def unpack_fields(word: int, count: int, bits: int, signed: bool) -> list[int]:
    """``count`` fields of ``bits`` bits, field 0 lowest; two's complement if ``signed``."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    fields = []
    for _ in range(count):
        raw = word & mask
        fields.append(raw - (1 << bits) if signed and raw & sign else raw)
        word >>= bits
    return fields


def unpack_output(word: int, io: Mapping[str, int]) -> tuple[int, list[int]]:
    """Split an ``m_axis_tdata`` word into (class, signed scores)."""
    class_bits = io["class_bits"]
    cls = word & ((1 << class_bits) - 1)
    return cls, unpack_fields(word >> class_bits, io["num_classes"], io["score_bits"], True)


def pack_output(cls: int, scores: list[int], io: Mapping[str, int]) -> int:
    """Inverse of :func:`unpack_output` (scores are wrapped to ``score_bits``)."""
    class_bits, score_bits = io["class_bits"], io["score_bits"]
    word = 0
    for score in reversed(scores):
        word = (word << score_bits) | (int(score) & ((1 << score_bits) - 1))
    return (word << class_bits) | (int(cls) & ((1 << class_bits) - 1))
