"""FITS block arithmetic shared by the emulator's hand-made FITS writers.

The TESS and image-cutout writers format their headers themselves (astropy's HDU machinery
costs more than the whole pixel model of a small cutout, and the server must not be the
bottleneck). What they share lives here: 2880-byte blocks, and the CHECKSUM/DATASUM
convention (32-bit ones' complement sums, encoded as 16 ASCII characters).
"""

from __future__ import annotations

import numpy as np

BLOCK = 2880

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
