"""Product names: which zarr group a file the service delivered becomes.

A product is what one service answers for one target: a TESS sector/camera/CCD
(``s0008-1-1``), a ZCut survey, a HAPCut skycell/detector/filter. Names come from the
delivered file names (hostile input: each is checked) and, for moving-target TPFs, from the
file's own header.
"""

from __future__ import annotations

import re
from typing import IO

from astropy.io import fits

from ..exceptions import UnsafeArchiveError
from ..targets import check_name
from .catalog import check_service

__all__ = ["product_from_sector_name", "product_name", "is_tess_product", "tess_product_from_header"]

_TESS_FILE = re.compile(r"^tess-(s\d{4}-\d-\d)(?:_|\.|$)")
_TESS_SECTOR_NAME = re.compile(r"^tess-(s\d{4}-\d-\d)$")
# "<survey or input stem>_<ra>_<dec>_<size>..." : the prefix is everything before the position.
_ZCUT_FILE = re.compile(r"^(?P<prefix>.+?)_[-+]?\d+(?:\.\d+)?_[-+]?\d+(?:\.\d+)?_")
_HAP_FILE = re.compile(r"^hst_cutout_skycell-(?P<cell>p\d{4}x\d{2}y\d{2})(?:-[a-z0-9]+)*?_(?P<rest>[a-z0-9][a-z0-9_]*?)"
                       r"(?:\.fits(?:\.gz)?)?$", re.IGNORECASE)
_ASTROCUT_TAIL = re.compile(r"(?:_astrocut(?:_\d+)?)?\.(?:fits(?:\.gz)?|jpg|jpeg|png)$", re.IGNORECASE)
_SLUG = re.compile(r"[^a-z0-9._+\-]+")


def product_from_sector_name(sector_name: str) -> str:
    """TESSCut's ``sectorName`` (``"tess-s0008-1-1"``) → the product name ``"s0008-1-1"``.

    Lets a planner know a product's name from discovery, before anything is fetched.

    Raises
    ------
    UnsafeArchiveError
        When the server's value does not have that shape.
    """
    m = _TESS_SECTOR_NAME.match(str(sector_name).strip())
    if not m:
        raise UnsafeArchiveError(f"Unexpected TESS sector name {sector_name!r} (expected e.g. 'tess-s0008-1-1').")
    return m.group(1)


def product_name(service: str, filename: str) -> str:
    """The product (zarr group) name for a file the service delivered.

    ========  =================================================================  ====================
    service   file name                                                          product
    ========  =================================================================  ====================
    tesscut   ``tess-s0008-1-1_135.140800_-5.191500_5x5_astrocut.fits``          ``s0008-1-1``
    tesscut   ``Eleonora_1430.5-1435.1_5-x-5_astrocut.fits`` (moving target)     ``eleonora_1430.5-1435.1_5-x-5``
    zcut      ``candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_...``  ``candels_gn_30mas``
    hapcut    ``hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_...``  ``p2007x09y05_wfc3_ir_f160w_coarse``
    ========  =================================================================  ====================

    HAPCut products keep the skycell: skycells overlap, so one position can get the same
    detector/filter from two skycells, and those must not overwrite each other.

    Parameters
    ----------
    service : {"tesscut", "zcut", "hapcut"}
    filename : str
        The file name as the server gave it (hostile: it is checked first).

    Returns
    -------
    str
        A safe name (see `check_name`).

    Raises
    ------
    UnsafeArchiveError
        The file name is unsafe (path separators, ``..``, hidden, odd characters).
    InvalidQueryError
        Unknown service.
    """
    check_service(service)
    check_name(filename, "file name from the server", error=UnsafeArchiveError)
    product: str | None = None
    if service == "tesscut":
        m = _TESS_FILE.match(filename)
        if m:
            product = m.group(1)
    elif service == "zcut":
        m = _ZCUT_FILE.match(filename)
        if m:
            product = m.group("prefix").lower()
    else:
        m = _HAP_FILE.match(filename)
        if m:
            product = f"{m.group('cell')}_{m.group('rest')}".lower()
    if product is None:
        # Moving-target TPFs and unknown namings: the file stem, lower-cased, minus the
        # "_astrocut.fits" tail — deterministic, and unique per file within one response.
        stem = _ASTROCUT_TAIL.sub("", filename)
        product = _SLUG.sub("_", stem.lower()).strip("._+-")
    return check_name(product, "product name", error=UnsafeArchiveError)


_TESS_PRODUCT = re.compile(r"^s\d{4}-\d-\d$")


def is_tess_product(product: str) -> bool:
    """Whether ``product`` names one TESS sector/camera/CCD (``sNNNN-c-d``)."""
    return bool(_TESS_PRODUCT.match(product))


def tess_product_from_header(fh: IO[bytes]) -> str | None:
    """``sNNNN-c-d`` from a TPF's primary header (SECTOR, CAMERA, CCD), or None.

    Moving-target TPFs are named after the object and its time span; their header says which
    sector/camera/CCD they are, as discovery announced them.
    """
    try:
        header = fits.Header.fromfile(fh)
        sector, camera, ccd = (int(header[k]) for k in ("SECTOR", "CAMERA", "CCD"))
    except (KeyError, ValueError, TypeError, OSError):
        return None
    if not (0 < sector < 10_000 and 0 < camera < 10 and 0 < ccd < 10):
        return None
    return f"s{sector:04d}-{camera}-{ccd}"
