"""The public decoders: cutout files → labelled :class:`xarray.Dataset`.

These know which decoder a file needs; the file layouts themselves live in
`mastcut_dask.decode.tpf` (TESSCut target pixel files) and `mastcut_dask.decode.image`
(ZCut/HAPCut FITS, JPG/PNG). The datasets have named dims, units in attrs, sky coordinates
where the file has a trustworthy WCS, and attrs that survive ``to_zarr``/``open_zarr``
unchanged (docs/formats.md describes them).
"""

from __future__ import annotations

import contextlib
import os

from astropy.io import fits

from ..exceptions import DecodeError, InvalidQueryError, MastcutError
from .image import build_image_dataset
from .opened import Source, open_source
from .tpf import build_tpf_dataset, find_pixels_hdu

__all__ = ["tpf_to_xarray", "image_to_xarray", "open_cutout"]


def _name_of(src: Source) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.path.basename(os.fspath(src))
    return ""


@contextlib.contextmanager
def _unreadable_as_decode_error(name: str):
    """Truncated or corrupt files make astropy/numpy/Pillow raise many kinds; report one."""
    try:
        yield
    except MastcutError:  # already one of ours (DecodeError, InvalidQueryError, ...)
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError,
            fits.VerifyError) as err:  # OverflowError: header sizes beyond a C ssize_t
        raise DecodeError(f"{name or 'input'}: unreadable or truncated file ({type(err).__name__}: {err})") from err


# ---- the public decoders ------------------------------------------------------------------
def tpf_to_xarray(src: Source, *, chunks: int | str | dict | None = None,
                  storage_options: dict | None = None):
    """Decode a TESSCut target pixel file into an :class:`xarray.Dataset`.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        An open ``HDUList``, the file's bytes, a local path or an fsspec URL.
    chunks : int, "auto" or dict, optional
        If given, the pixel variables are dask arrays read lazily from the file, chunked
        along ``time`` (an int is a number of cadences; a dict may give ``{"time": n}``).
        Headers and the small per-cadence columns are read at once; pixels only on compute.
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``: ``flux``, ``flux_err``, ``flux_bkg``, ``flux_bkg_err``
        (float32, e-/s), ``aperture`` (bool, ``(y, x)``); coords ``time`` (BTJD),
        ``timecorr``, ``cadenceno``, ``quality``, ``ffi_file`` (and ``tgt_x``, ``tgt_y``,
        ``tgt_ra``, ``tgt_dec`` for moving targets), ``ra``/``dec`` where the WCS is valid,
        ``row``/``column`` where the file gives the CCD position. ``attrs["quirks"]`` names
        every real-file quirk that was decoded (e.g. ``"sector_empty"``).

    Raises
    ------
    DecodeError
        If the file is not a target pixel file (the message says what is missing).
    """
    with _unreadable_as_decode_error(_name_of(src)):
        opened = open_source(src, lazy=chunks is not None, storage_options=storage_options)
    try:
        if opened.hdul is None:
            raise DecodeError(f"{opened.name or 'input'} is an image (JPEG/PNG), not a target pixel file")
        with _unreadable_as_decode_error(opened.name):
            return build_tpf_dataset(opened, chunks=chunks)
    finally:
        if not isinstance(src, fits.HDUList):
            opened.close()


def image_to_xarray(src: Source, *, origin: str | None = None, storage_options: dict | None = None):
    """Decode a ZCut or HAPCut image cutout (FITS, JPG or PNG) into an :class:`xarray.Dataset`.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        An open ``HDUList``, the file's bytes, a local path or an fsspec URL.
    origin : {"upper", "lower"}, optional
        JPG/PNG only: override the row order found from the embedded metadata (files
        without metadata, i.e. astrocut < 1.4, are taken as ``"lower"``: row 0 = FITS row 0).
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    xarray.Dataset
        ZCut FITS: ``image`` on ``(band, y, x)`` with band labels from FILTER/ORIG_FLE and
        ``ra``/``dec`` coords (``(y, x)`` when all bands share a WCS, else
        ``(band, y, x)``). HAPCut FITS: ``sci``, ``wht`` and ``valid`` (WHT > 0) on
        ``(y, x)`` with ``ra``/``dec``. JPG/PNG: ``image`` on ``(y, x)`` (uint8, or
        ``(y, x, channel)`` for colour) with ``attrs["origin"]`` stating the row order.

    Raises
    ------
    DecodeError
        If the file holds no image cutout (the message says what is missing).
    InvalidQueryError
        If ``origin`` is neither ``"upper"`` nor ``"lower"``.
    """
    if origin not in (None, "upper", "lower"):
        # the caller's mistake, refused up front (inside the decode it would read as a corrupt file)
        raise InvalidQueryError(f"origin must be 'upper' or 'lower', got {origin!r}")
    with _unreadable_as_decode_error(_name_of(src)):
        opened = open_source(src, storage_options=storage_options)
    try:
        with _unreadable_as_decode_error(opened.name):
            return build_image_dataset(opened, origin=origin)
    finally:
        if not isinstance(src, fits.HDUList):
            opened.close()


def open_cutout(src: Source, *, chunks=None, storage_options: dict | None = None):
    """Decode any cutout file: a target pixel file, else an image cutout.

    Parameters
    ----------
    src : HDUList, bytes, str or os.PathLike
        As for :func:`tpf_to_xarray`.
    chunks : optional
        As for :func:`tpf_to_xarray` (ignored for image cutouts).
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    xarray.Dataset
    """
    with _unreadable_as_decode_error(_name_of(src)):
        opened = open_source(src, lazy=chunks is not None, storage_options=storage_options)
    try:
        if opened.hdul is not None:
            with _unreadable_as_decode_error(opened.name):
                if find_pixels_hdu(opened.hdul) is not None:
                    return build_tpf_dataset(opened, chunks=chunks)
        with _unreadable_as_decode_error(opened.name):
            return build_image_dataset(opened)
    finally:
        if not isinstance(src, fits.HDUList):
            opened.close()
