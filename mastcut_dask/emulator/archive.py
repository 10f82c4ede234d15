"""Zip archives as the emulator sends them: the honest ones, and the hostile ones faults ask for.

MAST wraps every cutout reply in a zip: FITS members deflated (the 2018 TESSCut archive is),
images stored. The emulator stores FITS members too unless asked to deflate (see
:func:`build_zip`). The hostile variants exist so that clients can prove they refuse them:

* :func:`corrupt_zip` -- bytes that start like a zip but are not one;
* :func:`zipslip_zip` -- members named ``../evil.fits`` and ``/abs/evil.fits``;
* :func:`zipbomb_zip` -- a small archive whose members inflate to more than 1 GiB.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

__all__ = ["ZIP_COMPRESSIONS", "ZIPBOMB_DECLARED_BYTES", "build_zip", "corrupt_zip", "zipslip_zip",
           "zipbomb_zip"]

# Fixed member timestamp: archives must depend on the request only, never on the clock.
_EPOCH = (2020, 1, 1, 0, 0, 0)
ZIPBOMB_DECLARED_BYTES = 3 * 1024**3 // 2  # 1.5 GiB per member once inflated


ZIP_COMPRESSIONS = ("stored", "deflate")


def build_zip(files: list[tuple[str, bytes]], compression: str = "stored") -> bytes:
    """Pack ``(name, bytes)`` pairs into a zip.

    Parameters
    ----------
    files : list of (str, bytes)
        Member names (flat, as the service names them) and contents.
    compression : {"stored", "deflate"}
        How FITS members are packed. MAST deflates them; the emulator stores them by default
        because deflating noisy float pixels costs more CPU than building them (about 55 ms
        for a 10x10 TPF of 3,500 cadences), and bytes are free on loopback. Images are always
        stored, as MAST does.

    Returns
    -------
    bytes
        The archive.
    """
    if compression not in ZIP_COMPRESSIONS:
        raise ValueError(f"compression must be one of {ZIP_COMPRESSIONS}, not {compression!r}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            is_image = name.lower().endswith((".jpg", ".jpeg", ".png"))
            if compression == "stored" or is_image:
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, data)
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                # Level 1: the ratio hardly matters on loopback, the CPU does.
                zf.writestr(info, data, compresslevel=1)
    return buf.getvalue()


def corrupt_zip(honest: bytes) -> bytes:
    """A damaged copy of ``honest``: local header intact, central directory gone, body scrambled."""
    if len(honest) < 64:
        return b"PK\x03\x04" + b"\x00" * 60
    cut = len(honest) * 2 // 3
    head = bytearray(honest[:cut])
    # Flip bytes after the first local header so even a streaming reader fails its CRC.
    for i in range(64, len(head), 97):
        head[i] ^= 0xFF
    return bytes(head)


def zipslip_zip(files: list[tuple[str, bytes]]) -> bytes:
    """An archive whose members try to escape the extraction folder."""
    data = files[0][1] if files else b"SIMPLE  =                    T" + b" " * 50
    evil = [("../evil.fits", data), ("/abs/evil.fits", data), ("sub/../../evil2.fits", data)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in evil:
            # ZipInfo would keep these names as given; that is the point.
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, payload, compresslevel=1)
    return buf.getvalue()


def zipbomb_zip(n_members: int = 2, member_bytes: int = ZIPBOMB_DECLARED_BYTES) -> bytes:
    """A tiny archive whose members each inflate to ``member_bytes`` zeros.

    Deflate cannot beat about 1:1000, so the archive is about 1.5 MiB per member; it is built
    once per size (a few hundred milliseconds, mostly the CRC) and cached.
    """
    stream, crc = _zero_deflate(member_bytes)
    out = io.BytesIO()
    central = io.BytesIO()
    for i in range(n_members):
        name = f"bomb_{i}.fits".encode()
        offset = out.tell()
        dos_time, dos_date = _dos_datetime()
        comp_size = len(stream)
        # ZIP64 is needed for sizes >= 4 GiB; keep members below that and use plain headers.
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, dos_time, dos_date, crc,
                              comp_size, member_bytes & 0xFFFFFFFF, len(name), 0))
        out.write(name)
        out.write(stream)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, dos_time,
                                  dos_date, crc, comp_size, member_bytes & 0xFFFFFFFF, len(name),
                                  0, 0, 0, 0, 0o644 << 16, offset))
        central.write(name)
    cd = central.getvalue()
    cd_offset = out.tell()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n_members, n_members, len(cd),
                          cd_offset, 0))
    return out.getvalue()


_ZERO_CACHE: dict[int, tuple[bytes, int]] = {}


def _zero_deflate(size: int) -> tuple[bytes, int]:
    if size >= 1 << 32:
        raise ValueError("zip bomb members must stay below 4 GiB (no ZIP64 here)")
    cached = _ZERO_CACHE.get(size)
    if cached is not None:
        return cached
    # After a full flush deflate forgets its history, so every further MiB of zeros compresses
    # to the same bytes: compress one block and repeat it instead of compressing gigabytes.
    block = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    n_blocks, tail = divmod(size, len(block))
    parts = [unit] * n_blocks
    parts.append(comp.compress(block[:tail]) + comp.flush(zlib.Z_FINISH))
    crc = 0
    for _ in range(n_blocks):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(block[:tail], crc)
    result = (b"".join(parts), crc & 0xFFFFFFFF)
    _ZERO_CACHE[size] = result
    return result


def _dos_datetime() -> tuple[int, int]:
    y, mo, d, h, mi, s = _EPOCH
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d
