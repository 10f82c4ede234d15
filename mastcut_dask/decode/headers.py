"""FITS headers kept as card text, typed header values, and attrs that survive zarr unchanged.

Both decoders use these, so TPFs and image cutouts speak the same dialect: attrs are plain
``str``/``int``/``float``/``bool`` and lists of ``str`` only (no ``None``, no numpy scalars),
and every header of the source file is kept as FITS card text in ``attrs["fits_headers"]`` so
`fits_headers` can rebuild them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from .opened import OpenedSource

__all__ = ["header_text", "hdulist_header_texts", "fits_headers", "plain", "header_value", "header_int",
           "header_float", "header_str", "quiet_wcs"]

log = logging.getLogger(__name__)


def header_text(header: fits.Header) -> str:
    """A header as its 80-character cards joined by newlines (no END, no padding)."""
    return header.tostring(sep="\n", endcard=False, padding=False)


def hdulist_header_texts(hdul: fits.HDUList, opened: OpenedSource | None = None) -> list[str]:
    """Every header of ``hdul`` as card text, exactly as the file wrote it where possible.

    For files and bytes the cards are cut from the raw header blocks (fast, and faithful even
    for cards astropy refuses to print, e.g. a broken CONTINUE). An ``HDUList`` given by the
    caller may have been edited in memory, so it is printed by astropy, card by card when a
    malformed card stops the whole-header print.
    """
    texts = []
    raw_ok = opened is not None and (opened.fits_bytes is not None or
                                     (opened.location is not None and opened.location.is_local))
    for index, hdu in enumerate(hdul):
        if raw_ok:
            text = _raw_header_text(hdu, opened)
            if text is not None:
                texts.append(text)
                continue
        try:
            texts.append(header_text(hdu.header))
        except Exception as err:  # astropy's VerifyError and friends, on hostile headers
            log.info("HDU %d header not printable by astropy (%s); keeping raw cards", index, err)
            texts.append("\n".join(_card_text(card) for card in hdu.header.cards))
    return texts


def _raw_header_text(hdu, opened: OpenedSource) -> str | None:
    try:
        info = hdu.fileinfo()
    except Exception:  # astropy may re-verify the header here
        return None
    if not info:
        return None
    start, stop = int(info["hdrLoc"]), int(info["datLoc"])
    if opened.fits_bytes is not None:
        raw = opened.fits_bytes[start:stop]
    else:
        with open(opened.location.local_path, "rb") as fh:
            fh.seek(start)
            raw = fh.read(stop - start)
    if len(raw) != stop - start or len(raw) % 80:
        return None
    text = raw.decode("ascii", "replace")
    cards = [text[i:i + 80] for i in range(0, len(text), 80)]
    for i, card in enumerate(cards):
        if card.rstrip() == "END":
            return "\n".join(cards[:i])
    return None


def _card_text(card: fits.Card) -> str:
    try:
        return str(card)
    except Exception:  # astropy keeps the 80 characters it read in ``_image``
        raw = getattr(card, "_image", None)
        return raw if isinstance(raw, str) else f"{card.keyword:8.8}= 'unparsable card'".ljust(80)


def fits_headers(ds) -> list[fits.Header]:
    """Rebuild the FITS headers of the file a dataset was decoded from.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset made by :func:`tpf_to_xarray` or :func:`image_to_xarray` (or read back
        from zarr).

    Returns
    -------
    list of astropy.io.fits.Header
        One header per HDU, in file order (an empty list for JPG/PNG cutouts).
    """
    return [fits.Header.fromstring(text, sep="\n") for text in ds.attrs.get("fits_headers", [])]


def plain(value: Any) -> str | int | float | bool | None:
    """A header value as a JSON-safe Python scalar; ``None`` for undefined values.

    FITS ``Undefined``, ``None`` and non-finite floats become ``None`` (callers then omit the
    attribute or use ``""``, never store ``None``); numpy scalars become Python ones.
    """
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        return value.strip()
    return str(value)


def header_value(header: fits.Header, key: str):
    """``header.get(key)``, but ``None`` for a card astropy cannot parse (hostile headers)."""
    try:
        return header.get(key)
    except Exception as err:  # VerifyError and ValueError from malformed cards
        log.info("keyword %s unparsable: %s", key, err)
        return None


def header_int(header: fits.Header, key: str) -> int | None:
    """An integer keyword, or ``None`` when absent, undefined, empty or not integral."""
    value = plain(header_value(header, key))
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return value


def header_float(header: fits.Header, key: str) -> float | None:
    """A numeric keyword as float, or ``None`` when absent, undefined or not a number."""
    value = plain(header_value(header, key))
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
        return value if np.isfinite(value) else None
    return float(value)


def header_str(header: fits.Header, key: str) -> str:
    """A keyword as a stripped string; ``""`` when absent or undefined."""
    value = plain(header_value(header, key))
    return "" if value is None else str(value)


def quiet_wcs(header: fits.Header | str, **kwargs):
    """``astropy.wcs.WCS(header)`` with its warnings about non-standard keywords silenced.

    ``header`` may be a Header or the header's 80-character cards as one string.

    Returns ``None`` when astropy cannot build a WCS at all.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return WCS(header, **kwargs)
        except Exception as err:  # astropy/WCSLIB raise many kinds for bad headers
            log.debug("WCS not usable: %s", err)
            return None
