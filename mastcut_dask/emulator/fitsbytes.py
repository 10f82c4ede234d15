"""The emulator's one FITS writer: card images, headers, HDUs with CHECKSUM/DATASUM, blocks.

The TESS target pixel files (:mod:`._tess_fits`) and the ZCut/HAPCut image cutouts
(:func:`fits_file`) are written from card images by hand: astropy's HDU machinery costs more
than the whole pixel model of a small cutout, and the server must not be the bottleneck.
Everything about the layout lives here: 80-character cards, the END card, 2880-byte blocks,
the mandatory keywords of a primary HDU and of an IMAGE extension, and the CHECKSUM/DATASUM
convention (32-bit ones' complement sums, encoded as 16 ASCII characters).

Card values are formatted in one of two ways, and each product keeps its own so that files
stay byte-identical from release to release:

* :func:`card` (image cutouts) lets astropy format the value: a long string continues on
  CONTINUE cards, and a float too long for 20 columns loses its last digits;
* :func:`fixed_card` (TESS files, whose OBJECT comes from the request) formats by hand and
  always gives exactly one card: strings are made printable ASCII and cut, a float too long
  for 20 columns is rounded to 14 significant digits, :data:`UNDEF` leaves the value blank.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

BLOCK = 2880
UNDEF = object()  # a card with an undefined value (astropy reads it as None)

Card = tuple[str, Any, str]  # (keyword, value, comment), formatted later

_END_CARD = "END".ljust(80)
_COMMENTARY = ("HISTORY", "COMMENT", "")

# Characters the checksum encoding must avoid (punctuation between digits and letters).
_CHECKSUM_EXCLUDE = frozenset(range(0x3A, 0x41)) | frozenset(range(0x5B, 0x61))
_CHECKSUM_VALUE_AT = b"CHECKSUM= '"


def padding(nbytes: int, fill: bytes = b"\0") -> bytes:
    """Fill that completes ``nbytes`` to a whole number of FITS blocks."""
    return fill * (-nbytes % BLOCK)


def ones_sum(data) -> int:
    """32-bit ones' complement sum of big-endian words; a short tail counts as zero-padded."""
    buf = np.frombuffer(data, dtype=np.uint8)
    whole = len(buf) // 4 * 4
    total = int(buf[:whole].view(">u4").sum(dtype=np.uint64))
    if whole < len(buf):
        total += int.from_bytes(bytes(buf[whole:]).ljust(4, b"\0"), "big")
    return _fold(total)


def _fold(total: int) -> int:
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def encode_checksum(total: int) -> str:
    """The 16-character CHECKSUM value that makes an HDU whose sum is ``total`` sum to -0."""
    value = ~total & 0xFFFFFFFF
    chars = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quad = [byte // 4 + 0x30] * 4
        quad[0] += byte % 4
        changed = True
        while changed:  # keep clear of punctuation, preserving each pair's sum
            changed = False
            for j in (0, 2):
                if quad[j] in _CHECKSUM_EXCLUDE or quad[j + 1] in _CHECKSUM_EXCLUDE:
                    quad[j] += 1
                    quad[j + 1] -= 1
                    changed = True
        for j in range(4):
            chars[4 * j + i] = quad[j]
    # The value starts one byte past a word boundary in its card: rotate right by one.
    return "".join(chr(chars[(k - 1) % 16]) for k in range(16))


def fill_checksum(header: bytes, datasum: int) -> bytes:
    """``header`` (whole blocks, with a ``CHECKSUM = '0000000000000000'`` card) with its value set.

    ``datasum`` is :func:`ones_sum` of the HDU's data unit (zero padding does not change it).
    """
    at = header.index(_CHECKSUM_VALUE_AT) + len(_CHECKSUM_VALUE_AT)
    total = _fold(ones_sum(header) + datasum)
    return header[:at] + encode_checksum(total).encode("ascii") + header[at + 16:]


# ------------------------------------------------------------------ cards
def _commentary(key: str, value) -> str:
    # Commentary cards are plain text from column 9; cut at 72 characters so the text never
    # spills into a second card (and formatted by hand: they are most of some headers).
    text = str(value or "")[:72]
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"commentary card text must be printable ASCII: {text!r}")
    return f"{key:8s}{text}".ljust(80)


def card(key: str, value=None, comment: str = "") -> str:
    """A card image with the value formatted by astropy (image cutouts).

    Usually 80 characters; a string value too long for one card continues on CONTINUE cards.
    A comment that does not fit is cut, as real files do (astropy would warn doing the same).
    """
    if key in _COMMENTARY:
        return _commentary(key, value)
    from astropy.io import fits  # only image cutouts need it: TESS files never pay the import

    if comment and len(key) + len(repr(value)) + len(comment) > 66:
        plain = fits.Card(key, value).image
        if len(plain) > 80:   # a long string already spans CONTINUE cards: no room left
            return plain
        plain = plain.rstrip()
        room = 80 - len(plain) - 3
        return (plain + (" / " + comment[:room] if room > 0 else "")).ljust(80)
    return fits.Card(key, value, comment).image


def _fixed_value(v: Any) -> str:
    if v is UNDEF:
        return " " * 20
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return f"{'T' if v else 'F':>20}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):>20d}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            raise ValueError("FITS header values must be finite")
        s = repr(v).upper()  # shortest string that round-trips
        if len(s) > 20:
            s = f"{v:.13E}"
        if "." not in s:
            s = s.replace("E", ".0E") if "E" in s else s + ".0"
        return f"{s:>20}"
    if isinstance(v, str):
        # header text must be printable ASCII and fit one card (values may come from a request)
        v = "".join(ch if " " <= ch <= "~" else "?" for ch in v)
        body = v.replace("'", "''")
        while len(body) > 68:
            v = v[:-1]
            body = v.replace("'", "''")
        s = "'" + body.ljust(8) + "'"
        return f"{s:<20}"
    raise TypeError(f"unsupported header value {v!r}")


@functools.lru_cache(maxsize=8192, typed=True)  # most cards repeat from file to file
def fixed_card(key: str, value: Any = UNDEF, comment: str = "") -> str:
    """Exactly one 80-character card image with the value formatted by hand (TESS files)."""
    if key in _COMMENTARY:
        return _commentary(key, "" if value is UNDEF else value)
    text = f"{key:<8}= {_fixed_value(value)}"
    if comment:
        text += f" / {comment}"
    return text[:80].ljust(80)


def primary_keywords() -> list[Card]:
    """The mandatory keywords of a primary HDU without data."""
    return [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 0, "number of array dimensions"),
        ("EXTEND", True, ""),
    ]


def image_keywords(bitpix: int, ny: int, nx: int) -> list[Card]:
    """The mandatory keywords of an IMAGE extension of ``ny`` rows and ``nx`` columns."""
    return [
        ("XTENSION", "IMAGE", "Image extension"),
        ("BITPIX", bitpix, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", nx, ""),
        ("NAXIS2", ny, ""),
        ("PCOUNT", 0, "number of parameters"),
        ("GCOUNT", 1, "number of groups"),
    ]


# ------------------------------------------------------------------ headers and HDUs
def header_bytes(cards: Iterable[str]) -> bytes:
    """A header from card images: the cards, END, and blank fill to a whole block."""
    raw = ("".join(cards) + _END_CARD).encode("ascii")
    return raw + padding(len(raw), b" ")


def hdu_parts(cards: Sequence[str], data=None, *, checksum: bool = True) -> list:
    """Header, data and zero fill of one HDU, as bytes-like parts to join.

    ``data`` is any C-contiguous bytes-like object (a numpy array works): it is not copied.
    With ``checksum`` the header ends with CHECKSUM and DATASUM, filled in as astrocut does.
    """
    nbytes = 0 if data is None else memoryview(data).nbytes
    if checksum:
        datasum = ones_sum(data) if nbytes else 0  # zero fill does not change the sum
        cards = [*cards, fixed_card("CHECKSUM", "0" * 16, "HDU checksum"),
                 fixed_card("DATASUM", str(datasum), "data unit checksum")]
        head = fill_checksum(header_bytes(cards), datasum)
    else:
        head = header_bytes(cards)
    return [head, data, padding(nbytes)] if nbytes else [head]


def primary_cards() -> list[str]:
    """The mandatory cards of an image-cutout file's primary HDU (no data)."""
    return [card(*k) for k in primary_keywords()]


def image_cards(data: np.ndarray) -> list[str]:
    """The mandatory cards of a float32 IMAGE extension holding ``data`` (shape (ny, nx))."""
    return [card(*k) for k in image_keywords(-32, *data.shape)]


def fits_file(primary: Sequence[str], extensions: Sequence[tuple[Sequence[str], np.ndarray]],
              *, checksum: bool = False) -> bytes:
    """An image-cutout file: a primary HDU without data, then float32 image extensions.

    ``primary`` is the list of primary card images *after* the mandatory ones; each extension is
    ``(cards after the mandatory ones, 2-D array)``. Data are written big-endian float32. With
    ``checksum`` every HDU ends its header with CHECKSUM and DATASUM, as astrocut writes them.
    """
    parts = hdu_parts([*primary_cards(), *primary], checksum=checksum)
    for cards, data in extensions:
        arr = np.ascontiguousarray(data, dtype=">f4")
        parts += hdu_parts([*image_cards(arr), *cards], arr.view(np.uint8).reshape(-1),
                           checksum=checksum)
    return b"".join(parts)
