"""ROM images in the formats hardware tools load: ``hex``, ``coe``, ``mif`` and ``bin``.

A ROM is ``depth`` words of ``width`` bits.  Widths run from 1 to thousands of
bits, so words are plain Python ints (never numpy ints).

Bit order (the same in every format)
------------------------------------
Word bit *k* is bit *k* of the integer: ``(word >> k) & 1``; bit 0 is the least
significant.  In the text formats (hex, coe, mif) the most significant digit is
written first, exactly like a Verilog literal ``width'h...``: for width 16 the
word ``0x1234`` is written ``1234``; when the width is not a multiple of 4 the
first hex digit holds only the top ``width % 4`` bits (width 10, word ``0x3ff``
is ``3ff``).  In ``bin`` each word takes ``ceil(width / 8)`` bytes, least
significant byte first (byte 0 holds bits 7:0, byte 1 bits 15:8, ...), the
unused high bits of the last byte are zero, and words follow in address order.

Formats
-------
``hex``
    What Verilog's ``$readmemh`` loads: one word per line, exactly
    ``ceil(width / 4)`` lowercase hex digits, no addresses, no comments, a
    newline after every word.  The parser takes upper or lower case, skips blank
    lines and ``//`` comments, and rejects ``@address`` lines.
``coe``
    Xilinx: ``memory_initialization_radix=16;``, ``memory_initialization_vector=``,
    then the words, comma-separated, one per line, the last ending with ``;``.
    The parser takes radix 2 or 16 (``width`` or ``ceil(width / 4)`` digits per
    word exactly), keywords in any case, and comment lines whose first
    non-blank character is ``;``.
``mif``
    Intel/Altera: ``WIDTH``, ``DEPTH``, ``ADDRESS_RADIX=UNS``, ``DATA_RADIX=HEX``,
    ``CONTENT BEGIN``, lines ``addr : data;``, ``END;``.  The parser requires
    all four header fields, takes DATA_RADIX HEX/BIN/UNS and ADDRESS_RADIX
    UNS/DEC/HEX/BIN/OCT, address ranges ``[a..b] : data;``, several values at
    consecutive addresses ``a : d0 d1 d2;`` and ``--`` comments, and demands
    that every address ``0 .. DEPTH-1`` is given exactly once.
``bin``
    Raw bytes as described above; depth is ``size / ceil(width / 8)``.

The parsers are strict: any problem raises :class:`~bchw.errors.BchwError`
naming the file and the field (usually ``line N``), in one line.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bchw.errors import BchwError, atomic_write_bytes

__all__ = [
    "FORMATS",
    "MAX_MIF_DEPTH",
    "SUFFIXES",
    "bytes_per_word",
    "format_for_path",
    "format_rom",
    "hex_digits",
    "parse_rom",
    "read_rom",
    "write_rom",
]

FORMATS = ("hex", "coe", "mif", "bin")
"""The supported format names."""

SUFFIXES = {".hex": "hex", ".mem": "hex", ".coe": "coe", ".mif": "mif", ".bin": "bin"}
"""File suffixes (compared case-insensitively) and the format each implies."""

MAX_MIF_DEPTH = 1 << 24
"""Largest DEPTH a .mif may declare (a one-line range could otherwise ask for gigawords)."""

_BLANK = " \t\r\f\v"
_WS = re.compile(r"[ \t\r\f\v]*")
_DIGITS = {
    2: frozenset("01"),
    8: frozenset("01234567"),
    10: frozenset("0123456789"),
    16: frozenset("0123456789abcdefABCDEF"),
}
_RADIX_NAME = {2: "binary", 8: "octal", 10: "decimal", 16: "hex"}


def hex_digits(width: int) -> int:
    """Hex digits per word: ``ceil(width / 4)``."""
    return (width + 3) // 4


def bytes_per_word(width: int) -> int:
    """Bytes per word in ``bin``: ``ceil(width / 8)``."""
    return (width + 7) // 8


# ----------------------------------------------------------------------------- checks


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown ROM format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _check_words(words: Sequence[int], width: int) -> list[int]:
    out: list[int] = []
    for i, w in enumerate(words):
        try:
            v = operator.index(w)
        except TypeError:
            raise TypeError(f"word {i} is not an integer: {w!r}") from None
        if v < 0:
            raise ValueError(f"word {i} is negative ({v})")
        if v >> width:
            raise ValueError(f"word {i} needs {v.bit_length()} bits, more than width {width}")
        out.append(v)
    if not out:
        raise ValueError("a ROM needs at least one word")
    return out


def format_for_path(path: str | os.PathLike, fmt: str | None = None) -> str:
    """Return ``fmt`` if given (checked), else the format implied by the suffix of ``path``.

    An unknown suffix is the user's doing, so it raises :class:`BchwError`.
    """
    if fmt is not None:
        _check_fmt(fmt)
        return fmt
    suffix = Path(path).suffix.lower()
    try:
        return SUFFIXES[suffix]
    except KeyError:
        known = ", ".join(SUFFIXES)
        raise BchwError(f"cannot tell the ROM format from suffix {suffix!r} (known: {known})",
                        path=path, field="suffix") from None


# ----------------------------------------------------------------------------- writing


def format_rom(words: Sequence[int], width: int, fmt: str) -> bytes:
    """Return the bytes of a ROM image of ``words`` (each ``0 <= w < 2**width``) in ``fmt``.

    Raises ValueError/TypeError for a bad width, format or word (programming errors).
    """
    _check_width(width)
    _check_fmt(fmt)
    ws = _check_words(words, width)
    nd = hex_digits(width)
    if fmt == "hex":
        return "".join(f"{w:0{nd}x}\n" for w in ws).encode("ascii")
    if fmt == "coe":
        body = ",\n".join(f"{w:0{nd}x}" for w in ws)
        text = f"memory_initialization_radix=16;\nmemory_initialization_vector=\n{body};\n"
        return text.encode("ascii")
    if fmt == "mif":
        lines = [
            f"WIDTH={width};",
            f"DEPTH={len(ws)};",
            "",
            "ADDRESS_RADIX=UNS;",
            "DATA_RADIX=HEX;",
            "",
            "CONTENT BEGIN",
        ]
        lines += [f"\t{addr} : {w:0{nd}x};" for addr, w in enumerate(ws)]
        lines.append("END;")
        return ("\n".join(lines) + "\n").encode("ascii")
    nb = bytes_per_word(width)
    return b"".join(w.to_bytes(nb, "little") for w in ws)


def write_rom(path: str | os.PathLike, words: Sequence[int], width: int,
              fmt: str | None = None) -> None:
    """Write ``words`` to ``path`` atomically; ``fmt`` defaults to the one the suffix implies.

    The image is built (and every word checked) before anything touches the
    disk, so a failed write leaves no file and an existing file untouched.
    """
    fmt = format_for_path(path, fmt)
    data = format_rom(words, width, fmt)
    atomic_write_bytes(path, data)


# ----------------------------------------------------------------------------- reading


def _show(text: str, limit: int = 24) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _decimal_to_int(digits: str) -> int:
    # int() refuses decimal strings over ~4300 digits; convert in chunks instead.
    value = 0
    for i in range(0, len(digits), 1000):
        chunk = digits[i:i + 1000]
        value = value * 10 ** len(chunk) + int(chunk)
    return value


def _max_decimal_digits(width: int) -> int:
    """Decimal digits of the largest ``width``-bit value, ``2**width - 1``."""
    return math.floor(width * math.log10(2)) + 1


def _parse_word(text: str, radix: int, width: int, exact: int | None,
                fail: Callable[[str], NoReturn]) -> int:
    """Digits -> word, checking the characters, the digit count (if ``exact``) and the width."""
    name = _RADIX_NAME[radix]
    if not text:
        fail("empty word")
    allowed = _DIGITS[radix]
    for ch in text:
        if ch not in allowed:
            fail(f"non-{name} character {ch!r} in word {_show(text)}")
    if exact is not None and len(text) != exact:
        fail(f"word has {len(text)} {name} digits, expected {exact} for width {width}")
    significant = text.lstrip("0")
    if radix == 10 and len(significant) > _max_decimal_digits(width):
        # Too many decimal digits to fit; don't convert a huge decimal string.
        fail(f"value {_show(text)} has {len(significant)} decimal digits, too wide for "
             f"width {width}")
    if not significant:
        return 0
    value = _decimal_to_int(significant) if radix == 10 else int(significant, radix)
    if value >> width:
        fail(f"value {_show(text)} needs {value.bit_length()} bits, more than width {width}")
    return value


def _parse_uint(text: str, radix: int, fail: Callable[[str], NoReturn],
                limit: int = 10**12) -> int:
    """A small unsigned number (address, WIDTH, DEPTH) in ``radix``; at most ``limit``."""
    name = _RADIX_NAME[radix]
    allowed = _DIGITS[radix]
    if not text or any(ch not in allowed for ch in text):
        fail(f"expected a {name} number, found {_show(text)}")
    significant = text.lstrip("0")
    if len(significant) > 48:
        fail(f"number {_show(text)} is too large")
    value = int(significant or "0", radix)
    if value > limit:
        fail(f"number {_show(text)} is too large")
    return value


def _decode(data: bytes, path: str) -> list[str]:
    """ASCII text -> lines (``\\r`` stays in, as blank); empty or non-ASCII data is an error."""
    if not data:
        raise BchwError("empty file", path=path, field="content")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BchwError(f"byte 0x{data[e.start]:02x} at offset {e.start} is not ASCII text",
                        path=path, field=f"line {line}") from None
    return text.split("\n")


@dataclass(frozen=True)
class _Tok:
    text: str
    line: int

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum() or self.text[0] == "_"


def _tokenize(lines: list[str], pattern: re.Pattern[str], strip_comment: Callable[[str], str],
              path: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for n, raw in enumerate(lines, 1):
        line = strip_comment(raw)
        pos = 0
        while True:
            pos = _WS.match(line, pos).end()
            if pos >= len(line):
                break
            m = pattern.match(line, pos)
            if m is None:
                raise BchwError(f"unexpected character {line[pos]!r}", path=path,
                                field=f"line {n}")
            toks.append(_Tok(m.group(), n))
            pos = m.end()
    return toks


class _Cursor:
    """Walks a token list; every error names the line it happened on."""

    def __init__(self, toks: list[_Tok], path: str, last_line: int):
        self.toks = toks
        self.i = 0
        self.path = path
        self.last_line = last_line

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def fail(self, tok: _Tok | None, message: str) -> NoReturn:
        line = self.last_line if tok is None else tok.line
        raise BchwError(message, path=self.path, field=f"line {line}")

    def take(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            self.fail(None, f"unexpected end of file, expected {what}")
        self.i += 1
        return tok

    def take_word(self, what: str) -> _Tok:
        tok = self.take(what)
        if not tok.is_word:
            self.fail(tok, f"expected {what}, found {tok.text!r}")
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.take(repr(text))
        if tok.text.upper() != text.upper():
            self.fail(tok, f"expected {text!r}, found {_show(tok.text)}")
        return tok

    def failer(self, tok: _Tok) -> Callable[[str], NoReturn]:
        return lambda message: self.fail(tok, message)


def _last_line(lines: list[str]) -> int:
    n = len(lines)
    while n > 1 and not lines[n - 1].strip(_BLANK):
        n -= 1
    return n


def _parse_hex(data: bytes, width: int, path: str) -> list[int]:
    lines = _decode(data, path)
    nd = hex_digits(width)
    words: list[int] = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("//", 1)[0].strip(_BLANK)
        if not line:
            continue
        field = f"line {n}"

        def fail(message: str, field: str = field) -> NoReturn:
            raise BchwError(message, path=path, field=field)

        if line.startswith("@"):
            fail(f"address {_show(line.split()[0])} unsupported: write every word in order, "
                 "without @addresses")
        if any(ch in _BLANK for ch in line):
            fail("more than one word on the line; expected one word per line")
        words.append(_parse_word(line, 16, width, nd, fail))
    if not words:
        raise BchwError("file holds no words", path=path, field="content")
    return words


_COE_TOKEN = re.compile(r"[A-Za-z0-9_]+|[=,;]")
_COE_RADIX = "memory_initialization_radix"
_COE_VECTOR = "memory_initialization_vector"


def _coe_comment(line: str) -> str:
    return "" if line.lstrip(_BLANK).startswith(";") else line


def _parse_coe(data: bytes, width: int, path: str) -> list[int]:
    lines = _decode(data, path)
    toks = _tokenize(lines, _COE_TOKEN, _coe_comment, path)
    if not toks:
        raise BchwError("file holds no words", path=path, field="content")
    cur = _Cursor(toks, path, _last_line(lines))
    radix: int | None = None
    while True:
        if cur.peek() is None:
            raise BchwError(f"missing {_COE_VECTOR}", path=path, field=_COE_VECTOR)
        key = cur.take_word("a keyword")
        name = key.text.lower()
        if name == _COE_RADIX:
            if radix is not None:
                cur.fail(key, f"{_COE_RADIX} given twice")
            cur.expect("=")
            val = cur.take_word("a radix")
            if val.text not in ("2", "16"):
                raise BchwError(f"unsupported radix {_show(val.text)} on line {val.line} "
                                "(supported: 2, 16)", path=path, field=_COE_RADIX)
            radix = int(val.text)
            cur.expect(";")
        elif name == _COE_VECTOR:
            if radix is None:
                raise BchwError(f"missing {_COE_RADIX} before {_COE_VECTOR} "
                                f"(line {key.line})", path=path, field=_COE_RADIX)
            exact = width if radix == 2 else hex_digits(width)
            cur.expect("=")
            words: list[int] = []
            while True:
                tok = cur.take_word("a word")
                words.append(_parse_word(tok.text, radix, width, exact, cur.failer(tok)))
                sep = cur.take("',' or ';'")
                if sep.text == ";":
                    break
                if sep.text != ",":
                    cur.fail(sep, f"expected ',' or ';' after a word, found {_show(sep.text)}")
            extra = cur.peek()
            if extra is not None:
                cur.fail(extra, f"unexpected {_show(extra.text)} after the closing ';' of "
                         f"{_COE_VECTOR}")
            return words
        else:
            cur.fail(key, f"unknown keyword {_show(key.text)} "
                     f"(expected {_COE_RADIX} or {_COE_VECTOR})")


_MIF_TOKEN = re.compile(r"[A-Za-z0-9_]+|\.\.|[=;:\[\]]")
_MIF_HEADER = ("WIDTH", "DEPTH", "ADDRESS_RADIX", "DATA_RADIX")
_MIF_ADDRESS_RADIX = {"UNS": 10, "DEC": 10, "HEX": 16, "BIN": 2, "OCT": 8}
_MIF_DATA_RADIX = {"HEX": 16, "BIN": 2, "UNS": 10}


def _mif_comment(line: str) -> str:
    i = line.find("--")
    return line if i < 0 else line[:i]


def _parse_mif(data: bytes, width: int, depth: int | None, path: str) -> list[int]:
    lines = _decode(data, path)
    toks = _tokenize(lines, _MIF_TOKEN, _mif_comment, path)
    if not toks:
        raise BchwError("file holds no words", path=path, field="content")
    cur = _Cursor(toks, path, _last_line(lines))

    def header_error(key: str, message: str) -> NoReturn:
        raise BchwError(message, path=path, field=key)

    header: dict[str, _Tok] = {}
    while True:
        tok = cur.take_word("a header field or CONTENT")
        key = tok.text.upper()
        if key == "CONTENT":
            cur.expect("BEGIN")
            break
        if key not in _MIF_HEADER:
            cur.fail(tok, f"unknown header field {_show(tok.text)} "
                     f"(expected {', '.join(_MIF_HEADER)} or CONTENT BEGIN)")
        if key in header:
            header_error(key, f"given twice (lines {header[key].line} and {tok.line})")
        cur.expect("=")
        header[key] = cur.take_word(f"a value for {key}")
        cur.expect(";")
    for key in _MIF_HEADER:
        if key not in header:
            header_error(key, "missing from the header")

    def header_uint(key: str) -> int:
        tok = header[key]
        value = _parse_uint(tok.text, 10,
                            lambda m: header_error(key, f"{m} (line {tok.line})"))
        if value < 1:
            header_error(key, f"must be positive, found {tok.text} (line {tok.line})")
        return value

    file_width = header_uint("WIDTH")
    if file_width != width:
        header_error("WIDTH", f"file has WIDTH={file_width} (line {header['WIDTH'].line}), "
                     f"expected width {width}")
    file_depth = header_uint("DEPTH")
    if file_depth > MAX_MIF_DEPTH:
        header_error("DEPTH", f"DEPTH={file_depth} exceeds the supported maximum "
                     f"{MAX_MIF_DEPTH}")
    if depth is not None and file_depth != depth:
        header_error("DEPTH", f"file has DEPTH={file_depth} (line {header['DEPTH'].line}), "
                     f"expected depth {depth}")

    def radix(key: str, table: dict[str, int]) -> int:
        tok = header[key]
        try:
            return table[tok.text.upper()]
        except KeyError:
            header_error(key, f"unsupported radix {_show(tok.text)} on line {tok.line} "
                         f"(supported: {', '.join(table)})")

    addr_radix = radix("ADDRESS_RADIX", _MIF_ADDRESS_RADIX)
    data_radix = radix("DATA_RADIX", _MIF_DATA_RADIX)

    def address(tok: _Tok) -> int:
        if not tok.is_word:
            cur.fail(tok, f"expected an address, found {tok.text!r}")
        return _parse_uint(tok.text, addr_radix, cur.failer(tok))

    # (first address, last address, values, line); values has one entry per
    # address, or a single entry repeated over a range.
    spans: list[tuple[int, int, list[int], int]] = []
    while True:
        tok = cur.take("an address or END")
        if tok.text.upper() == "END":
            cur.expect(";")
            break
        ranged = tok.text == "["
        if ranged:
            first = address(cur.take("an address"))
            cur.expect("..")
            last = address(cur.take("an address"))
            cur.expect("]")
            if first > last:
                cur.fail(tok, f"address range [{first}..{last}] runs backwards")
        else:
            first = last = address(tok)
        cur.expect(":")
        values: list[int] = []
        while True:
            val = cur.take("a data value or ';'")
            if val.text == ";":
                break
            if not val.is_word:
                cur.fail(val, f"expected a data value or ';', found {val.text!r}")
            values.append(_parse_word(val.text, data_radix, width, None, cur.failer(val)))
        if not values:
            cur.fail(tok, f"no data for address {first}")
        if ranged and len(values) != 1:
            cur.fail(tok, f"address range [{first}..{last}] takes exactly one value, "
                     f"found {len(values)}")
        if not ranged:
            last = first + len(values) - 1
        if last >= file_depth:
            cur.fail(tok, f"address {max(first, file_depth)} out of range for "
                     f"DEPTH={file_depth}")
        spans.append((first, last, values, tok.line))
    extra = cur.peek()
    if extra is not None:
        cur.fail(extra, f"unexpected {_show(extra.text)} after END;")

    spans.sort(key=lambda s: (s[0], s[3]))
    words: list[int] = []
    prev_line = 0
    for first, last, values, line in spans:
        if first < len(words):
            raise BchwError(f"address {first} given twice (lines {min(line, prev_line)} and "
                            f"{max(line, prev_line)})", path=path,
                            field=f"line {max(line, prev_line)}")
        if first > len(words):
            raise BchwError(f"address {len(words)} has no data", path=path, field="CONTENT")
        if len(values) == 1:
            words.extend(values * (last - first + 1))
        else:
            words.extend(values)
        prev_line = line
    if len(words) < file_depth:
        raise BchwError(f"address {len(words)} has no data", path=path, field="CONTENT")
    return words


def _parse_bin(data: bytes, width: int, path: str) -> list[int]:
    if not data:
        raise BchwError("empty file", path=path, field="content")
    nb = bytes_per_word(width)
    if len(data) % nb:
        raise BchwError(f"size {len(data)} bytes is not a multiple of {nb} bytes per word "
                        f"for width {width} (truncated?)", path=path, field="size")
    words: list[int] = []
    for start in range(0, len(data), nb):
        value = int.from_bytes(data[start:start + nb], "little")
        if value >> width:
            raise BchwError(f"value needs {value.bit_length()} bits, more than width {width} "
                            f"(bytes {start}..{start + nb - 1})", path=path,
                            field=f"word {start // nb}")
        words.append(value)
    return words


def parse_rom(data: bytes, width: int, depth: int | None, fmt: str,
              path: str = "<bytes>") -> list[int]:
    """Parse a ROM image strictly and return its words in address order.

    ``depth`` (if not None) is the number of words the image must hold.  Any
    problem with ``data`` raises :class:`BchwError` naming ``path`` and the field
    (``line N``, ``word N``, a header field, ``size``, ``depth`` or ``content``).
    A bad ``width``, ``depth`` or ``fmt`` argument is a programming error
    (ValueError).
    """
    _check_width(width)
    _check_fmt(fmt)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 1):
        raise ValueError(f"depth must be None or a positive int, got {depth!r}")
    data = bytes(data)
    if fmt == "hex":
        words = _parse_hex(data, width, path)
    elif fmt == "coe":
        words = _parse_coe(data, width, path)
    elif fmt == "mif":
        words = _parse_mif(data, width, depth, path)
    else:
        words = _parse_bin(data, width, path)
    if depth is not None and len(words) != depth:
        raise BchwError(f"file holds {len(words)} words, expected depth {depth}",
                        path=path, field="depth")
    return words


def read_rom(path: str | os.PathLike, width: int, depth: int | None = None,
             fmt: str | None = None) -> list[int]:
    """Read and strictly parse the ROM image at ``path`` (see :func:`parse_rom`).

    ``fmt`` defaults to the one the suffix implies; a missing or unreadable
    file raises :class:`BchwError`.
    """
    fmt = format_for_path(path, fmt)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BchwError("no such file", path=path) from None
    except OSError as e:
        raise BchwError(f"cannot read: {e.strerror or e}", path=path) from None
    return parse_rom(data, width, depth, fmt, path=str(path))
