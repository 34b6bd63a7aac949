"""Tests for bchw.romfmt: exact texts, round trips, strict-parser errors, fuzzing."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bchw.errors import BchwError
from bchw.romfmt import (
    FORMATS,
    MAX_MIF_DEPTH,
    format_rom,
    parse_rom,
    read_rom,
    write_rom,
)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def roms(draw, max_width: int = 300, max_depth: int = 64):
    width = draw(st.integers(1, max_width))
    word = st.one_of(st.integers(0, 2**width - 1), st.sampled_from([0, 2**width - 1]))
    words = draw(st.lists(word, min_size=1, max_size=max_depth))
    return width, words


# ----------------------------------------------------------------------------- exact texts

# width 10: not a multiple of 4 or 8, so the padding of the top digit/byte is pinned.
W10 = [0x001, 0x2A5, 0x3FF]

EXACT_W10 = {
    "hex": b"001\n2a5\n3ff\n",
    "coe": (b"memory_initialization_radix=16;\n"
            b"memory_initialization_vector=\n"
            b"001,\n2a5,\n3ff;\n"),
    "mif": (b"WIDTH=10;\nDEPTH=3;\n\nADDRESS_RADIX=UNS;\nDATA_RADIX=HEX;\n\n"
            b"CONTENT BEGIN\n\t0 : 001;\n\t1 : 2a5;\n\t2 : 3ff;\nEND;\n"),
    "bin": b"\x01\x00\xa5\x02\xff\x03",
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_exact_text_width_10(fmt):
    assert format_rom(W10, 10, fmt) == EXACT_W10[fmt]
    assert parse_rom(EXACT_W10[fmt], 10, 3, fmt) == W10


def test_exact_bit_order_width_16_and_1():
    assert format_rom([0x1234, 1 << 15], 16, "hex") == b"1234\n8000\n"
    assert format_rom([0x1234, 1 << 15], 16, "bin") == b"\x34\x12\x00\x80"
    assert parse_rom(b"\x01\x00", 16, None, "bin") == [1]      # byte 0 = bits 7:0
    assert parse_rom(b"0001\n", 16, None, "hex") == [1]        # last digit = bits 3:0
    assert format_rom([1, 0, 1], 1, "hex") == b"1\n0\n1\n"
    assert format_rom([1, 0, 1], 1, "bin") == b"\x01\x00\x01"
    assert format_rom([1, 0], 1, "coe").endswith(b"=\n1,\n0;\n")
    big = 1 << 299
    assert format_rom([big], 300, "hex") == b"8" + b"0" * 74 + b"\n"
    assert format_rom([big], 300, "bin") == b"\x00" * 37 + b"\x08"


# ----------------------------------------------------------------------------- round trips


@FUZZ
@given(roms(), st.sampled_from(FORMATS), st.booleans())
def test_round_trip(rom, fmt, give_depth):
    width, words = rom
    data = format_rom(words, width, fmt)
    depth = len(words) if give_depth else None
    assert parse_rom(data, width, depth, fmt) == words


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_read_round_trip_by_suffix(tmp_path, fmt):
    words = [0, 1, 2**37 - 1, 0x123456789]
    path = tmp_path / "sub" / f"rom.{fmt}"
    write_rom(path, words, 37)
    assert path.read_bytes() == format_rom(words, 37, fmt)
    assert read_rom(path, 37) == words
    assert read_rom(str(path), 37, depth=4, fmt=fmt) == words
    assert sorted(os.listdir(path.parent)) == [f"rom.{fmt}"]


def test_wide_words_round_trip():
    width = 5000
    words = [2**width - 1, 12345, 1 << 4999]
    for fmt in FORMATS:
        assert parse_rom(format_rom(words, width, fmt), width, 3, fmt) == words
    mif = (b"WIDTH=5000;DEPTH=1;ADDRESS_RADIX=UNS;DATA_RADIX=UNS;CONTENT BEGIN 0 : "
           + str(2**width - 1).encode() + b"; END;")
    assert parse_rom(mif, width, 1, "mif") == [2**width - 1]


# ----------------------------------------------------------------------------- lenient bits


def test_hex_parser_accepts_case_blank_lines_comments_crlf():
    data = b"// header\r\n\r\nABCD\r\n  00ff  // tail\n\n\t1234\n"
    assert parse_rom(data, 16, 3, "hex") == [0xABCD, 0x00FF, 0x1234]


def test_coe_parser_accepts_radix_2_comments_and_spacing():
    data = (b"; a comment\n  ; another\n"
            b"MEMORY_INITIALIZATION_RADIX = 2 ;\n"
            b"memory_initialization_vector =\n 101 , 010,\n111 ;\n")
    assert parse_rom(data, 3, 3, "coe") == [5, 2, 7]


def test_mif_parser_accepts_ranges_radices_comments_and_any_order():
    data = b"""-- Quartus style
WIDTH = 8 ; DEPTH = 10;
address_radix = hex;   -- lowercase keywords
DATA_RADIX = BIN;
CONTENT
BEGIN
    [3..6] : 1111;
    0 : 1 10 11;     -- addresses 0, 1, 2
    9 : 11111111;
    [7..8] : 0;
END;
-- trailing comment
"""
    assert parse_rom(data, 8, 10, "mif") == [1, 2, 3, 15, 15, 15, 15, 0, 0, 255]
    uns = (b"WIDTH=8;DEPTH=2;ADDRESS_RADIX=UNS;DATA_RADIX=UNS;"
           b"CONTENT BEGIN 0:255;1:007;END;")
    assert parse_rom(uns, 8, None, "mif") == [255, 7]


# ----------------------------------------------------------------------------- bad inputs

MIF_HEAD = b"WIDTH=8;\nDEPTH=2;\nADDRESS_RADIX=UNS;\nDATA_RADIX=HEX;\nCONTENT BEGIN\n"
COE_HEAD = b"memory_initialization_radix=16;\nmemory_initialization_vector=\n"

# (fmt, width, depth, data, field, fragment of the message)
BAD = [
    # hex
    ("hex", 16, None, b"0000\n12345\n", "line 2", "5 hex digits, expected 4 for width 16"),
    ("hex", 16, None, b"123\n", "line 1", "3 hex digits, expected 4"),
    ("hex", 6, None, b"3f\n40\n", "line 2", "needs 7 bits, more than width 6"),
    ("hex", 8, None, b"0g\n", "line 1", "non-hex character 'g'"),
    ("hex", 8, None, b"0x\n", "line 1", "non-hex character 'x'"),
    ("hex", 8, None, b"00\n@10\n01\n", "line 2", "unsupported"),
    ("hex", 8, None, b"00 01\n", "line 1", "one word per line"),
    ("hex", 8, 3, b"00\n01\n", "depth", "holds 2 words, expected depth 3"),
    ("hex", 8, None, b"", "content", "empty file"),
    ("hex", 8, None, b"\n// nothing\n\n", "content", "no words"),
    ("hex", 8, None, b"00\n\xff\xfe\n", "line 2", "not ASCII"),
    # coe
    ("coe", 8, None, COE_HEAD + b"00,\n100;\n", "line 4", "3 hex digits, expected 2"),
    ("coe", 6, None, COE_HEAD + b"00,\n7f;\n", "line 4", "needs 7 bits"),
    ("coe", 8, None, COE_HEAD + b"00,\nzz;\n", "line 4", "non-hex character 'z'"),
    ("coe", 4, None, b"memory_initialization_radix=2;\nmemory_initialization_vector=\n102;\n",
     "line 3", "non-binary character '2'"),
    ("coe", 4, None, b"memory_initialization_radix=2;\nmemory_initialization_vector=\n10;\n",
     "line 3", "2 binary digits, expected 4"),
    ("coe", 8, None, b"memory_initialization_radix=10;\nmemory_initialization_vector=\n1;\n",
     "memory_initialization_radix", "unsupported radix '10'"),
    ("coe", 8, None, b"memory_initialization_vector=\n00;\n", "memory_initialization_radix",
     "missing"),
    ("coe", 8, None, b"memory_initialization_radix=16;\n", "memory_initialization_vector",
     "missing"),
    ("coe", 8, None, COE_HEAD + b"00,\n01\n", "line 4", "unexpected end of file"),
    ("coe", 8, None, COE_HEAD + b"00,\n,01;\n", "line 4", "expected a word"),
    ("coe", 8, None, COE_HEAD + b"00;\n01;\n", "line 4", "after the closing ';'"),
    ("coe", 8, None, b"radix=16;\n", "line 1", "unknown keyword"),
    ("coe", 8, 3, COE_HEAD + b"00,\n01;\n", "depth", "holds 2 words, expected depth 3"),
    ("coe", 8, None, b"; only a comment\n", "content", "no words"),
    ("coe", 8, None, b"", "content", "empty file"),
    ("coe", 8, None, COE_HEAD + b"0\xe9;\n", "line 3", "not ASCII"),
    # mif
    ("mif", 16, None, MIF_HEAD + b"0 : 00;\n1 : 01;\nEND;\n", "WIDTH",
     "WIDTH=8 (line 1), expected width 16"),
    ("mif", 8, 4, MIF_HEAD + b"0 : 00;\n1 : 01;\nEND;\n", "DEPTH",
     "DEPTH=2 (line 2), expected depth 4"),
    ("mif", 8, None, b"DEPTH=2;ADDRESS_RADIX=UNS;DATA_RADIX=HEX;CONTENT BEGIN 0:0;1:0;END;",
     "WIDTH", "missing"),
    ("mif", 8, None, b"WIDTH=8;ADDRESS_RADIX=UNS;DATA_RADIX=HEX;CONTENT BEGIN 0:0;END;",
     "DEPTH", "missing"),
    ("mif", 8, None, MIF_HEAD.replace(b"DATA_RADIX=HEX", b"DATA_RADIX=OCT")
     + b"0:0;1:0;END;", "DATA_RADIX", "unsupported radix 'OCT'"),
    ("mif", 8, None, MIF_HEAD.replace(b"ADDRESS_RADIX=UNS", b"ADDRESS_RADIX=XYZ")
     + b"0:0;1:0;END;", "ADDRESS_RADIX", "unsupported radix"),
    ("mif", 8, None, b"WIDTH=8;WIDTH=8;DEPTH=1;", "WIDTH", "given twice"),
    ("mif", 8, None, MIF_HEAD.replace(b"DEPTH=2", b"DEPTH=99999999999")
     + b"0:0;END;", "DEPTH", "exceeds"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\nEND;\n", "CONTENT", "address 1 has no data"),
    ("mif", 8, None, MIF_HEAD + b"1 : 00;\nEND;\n", "CONTENT", "address 0 has no data"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\n1 : 01;\n0 : 02;\nEND;\n", "line 8",
     "address 0 given twice (lines 6 and 8)"),
    ("mif", 8, None, MIF_HEAD + b"[0..1] : 00;\n1 : 01;\nEND;\n", "line 7",
     "address 1 given twice"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\n2 : 01;\nEND;\n", "line 7",
     "address 2 out of range for DEPTH=2"),
    ("mif", 8, None, MIF_HEAD + b"[0..5] : 00;\nEND;\n", "line 6", "out of range"),
    ("mif", 8, None, MIF_HEAD + b"[1..0] : 00;\nEND;\n", "line 6", "backwards"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\n1 : 100;\nEND;\n", "line 7",
     "needs 9 bits, more than width 8"),
    ("mif", 8, None, MIF_HEAD + b"0 : 0g;\n1 : 00;\nEND;\n", "line 6",
     "non-hex character 'g'"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\n1 : 00;\n", "line 7", "unexpected end of file"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\n1 : 00;\nEND;\n2 : 00;\n", "line 9", "after END"),
    ("mif", 8, None, MIF_HEAD + b"0 : 00;\n1 % 00;\nEND;\n", "line 7", "unexpected character"),
    ("mif", 8, None, MIF_HEAD + b"0 : ;\n1 : 00;\nEND;\n", "line 6", "no data for address 0"),
    ("mif", 8, None, MIF_HEAD.replace(b"DATA_RADIX=HEX", b"DATA_RADIX=UNS")
     + b"0 : 255;\n1 : 256;\nEND;\n", "line 7", "needs 9 bits, more than width 8"),
    ("mif", 8, None, MIF_HEAD.replace(b"DATA_RADIX=HEX", b"DATA_RADIX=UNS")
     + b"0 : " + b"9" * 6000 + b";\n1 : 0;\nEND;\n", "line 6", "6000 decimal digits"),
    ("mif", 8, None, b"-- nothing\n", "content", "no words"),
    ("mif", 8, None, b"", "content", "empty file"),
    ("mif", 8, None, b"WIDTH=8;\n\x80", "line 2", "not ASCII"),
    # bin
    ("bin", 16, None, b"\x00\x00\x01", "size", "3 bytes is not a multiple of 2"),
    ("bin", 12, None, b"\x00\x00\xff\x1f", "word 1", "needs 13 bits, more than width 12"),
    ("bin", 8, 3, b"\x00\x01", "depth", "holds 2 words, expected depth 3"),
    ("bin", 8, None, b"", "content", "empty file"),
]


@pytest.mark.parametrize("fmt,width,depth,data,field,fragment", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_file_and_field(fmt, width, depth, data, field, fragment):
    name = f"rom.{fmt}"
    with pytest.raises(BchwError) as info:
        parse_rom(data, width, depth, fmt, path=name)
    msg = str(info.value)
    assert msg.startswith(f"{name}: field '{field}': "), msg
    assert fragment in msg, msg
    assert "\n" not in msg
    assert info.value.path == name and info.value.field == field


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_rom_reports_file_errors(tmp_path, fmt):
    missing = tmp_path / f"missing.{fmt}"
    with pytest.raises(BchwError, match=r"missing\.\w+: no such file"):
        read_rom(missing, 8)
    bad = tmp_path / f"bad.{fmt}"
    bad.write_bytes(b"\x00\x00\x00" if fmt == "bin" else b"zz\n")
    with pytest.raises(BchwError) as info:
        read_rom(bad, 16)
    assert str(bad) in str(info.value) and "field '" in str(info.value)


def test_read_rom_directory_and_unknown_suffix(tmp_path):
    with pytest.raises(BchwError, match="cannot read"):
        read_rom(tmp_path, 8, fmt="hex")
    (tmp_path / "rom.txt").write_bytes(b"00\n")
    with pytest.raises(BchwError, match=r"rom\.txt: field 'suffix'"):
        read_rom(tmp_path / "rom.txt", 8)
    assert read_rom(tmp_path / "rom.txt", 8, fmt="hex") == [0]


def test_programming_errors_are_value_errors():
    with pytest.raises(ValueError):
        format_rom([1], 0, "hex")
    with pytest.raises(ValueError):
        format_rom([1], 8, "vhdl")
    with pytest.raises(ValueError):
        format_rom([], 8, "hex")
    with pytest.raises(ValueError):
        format_rom([-1], 8, "hex")
    with pytest.raises(ValueError):
        format_rom([256], 8, "hex")
    with pytest.raises(ValueError):
        parse_rom(b"00\n", 8, 0, "hex")
    with pytest.raises(TypeError):
        format_rom([1.5], 8, "hex")


# ----------------------------------------------------------------------------- failed writes


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_leaves_nothing_behind(tmp_path, fmt):
    path = tmp_path / f"rom.{fmt}"
    with pytest.raises(ValueError):
        write_rom(path, [1, 2, 256], 8)
    assert list(tmp_path.iterdir()) == []

    write_rom(path, [1, 2], 8)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_rom(path, [3, 1 << 8], 8)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [f"rom.{fmt}"]

    with pytest.raises(BchwError):
        write_rom(tmp_path / "rom.txt", [1], 8)
    assert [p.name for p in tmp_path.iterdir()] == [f"rom.{fmt}"]


# ----------------------------------------------------------------------------- fuzzing

WIDTHS = st.integers(1, 70)
DEPTHS = st.one_of(st.none(), st.integers(1, 8))

TOKENS = st.sampled_from([
    "0", "1", "00", "ff", "FF", "3", "10", "101", "deadbeef", "g", "@0", "//", "--", ";",
    ",", "=", ":", "[", "]", "..", "\n", "\r\n", " ", "\t", "%",
    "WIDTH", "DEPTH", "ADDRESS_RADIX", "DATA_RADIX", "UNS", "HEX", "BIN", "DEC", "OCT",
    "CONTENT", "BEGIN", "END", "memory_initialization_radix", "memory_initialization_vector",
    "2", "16", "8", "99999999999999999999999999", "0" * 60, "\x00", "\xff",
])


def _parse_only_bchw_errors(data, width, depth, fmt):
    try:
        words = parse_rom(data, width, depth, fmt, path="fuzz")
    except BchwError as e:
        assert e.path == "fuzz" and "\n" not in str(e)
        return
    assert words and all(0 <= w < 2**width for w in words)
    if depth is not None:
        assert len(words) == depth


@FUZZ
@given(st.binary(max_size=200), WIDTHS, DEPTHS, st.sampled_from(FORMATS))
def test_fuzz_arbitrary_bytes(data, width, depth, fmt):
    _parse_only_bchw_errors(data, width, depth, fmt)


@FUZZ
@given(st.lists(TOKENS, max_size=40), WIDTHS, DEPTHS, st.sampled_from(FORMATS))
def test_fuzz_token_soup(tokens, width, depth, fmt):
    _parse_only_bchw_errors("".join(tokens).encode("latin-1"), width, depth, fmt)


@FUZZ
@given(roms(max_width=40, max_depth=8), st.sampled_from(FORMATS), WIDTHS, DEPTHS,
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.data())
def test_fuzz_mutated_valid_images(rom, fmt, width2, depth, edits, data):
    width, words = rom
    image = bytearray(format_rom(words, width, fmt))
    for pos, byte in edits:
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        i = pos % (len(image) + 1)
        if op == "insert":
            image.insert(i, byte)
        elif image and i < len(image):
            if op == "set":
                image[i] = byte
            else:
                del image[i]
    use_width = data.draw(st.sampled_from([width, width2]))
    _parse_only_bchw_errors(bytes(image), use_width, depth, fmt)


def test_mif_depth_cap_is_a_bchw_error():
    data = (b"WIDTH=1;DEPTH=" + str(MAX_MIF_DEPTH + 1).encode()
            + b";ADDRESS_RADIX=UNS;DATA_RADIX=HEX;CONTENT BEGIN [0..1]:0; END;")
    with pytest.raises(BchwError, match="field 'DEPTH'"):
        parse_rom(data, 1, None, "mif")
