"""Limits and vocabularies of the emulated MAST cutout services, defined once for every module.

These are wire facts: a value here is what the real services accept or refuse, so the request
parser (:mod:`.params`) and the product modules (:mod:`.tess`, :mod:`.imagecut` for ZCut and
HAPCut) must agree on them.
"""

from __future__ import annotations

__all__ = [
    "MAX_CUTOUT_PIXELS",
    "TESS_ARCSEC_PER_PIXEL",
    "SIZE_UNITS",
    "STRETCHES",
    "IMAGE_FORMATS",
    "DEFAULT_MINMAX_PERCENT",
    "TRUE_WORDS",
    "FALSE_WORDS",
]

#: Largest cutout (rows x columns) any of the services serves; MAST quotes "fewer than 10,000 pixels".
MAX_CUTOUT_PIXELS = 10_000
#: Side of a TESS pixel on the sky.
TESS_ARCSEC_PER_PIXEL = 21.0
#: Units of a cutout size: pixels or degrees.
SIZE_UNITS = ("px", "d")
#: JPG/PNG stretches astrocut knows (the astropy.visualization ones); asinh is the default.
STRETCHES = ("asinh", "sinh", "sqrt", "log", "linear")
#: ZCut output formats.
IMAGE_FORMATS = ("fits", "jpg", "png")
#: Percentile interval of a JPG/PNG when neither minmax_percent nor minmax_value is given.
DEFAULT_MINMAX_PERCENT = (0.5, 99.5)
#: Spellings clients use for a boolean parameter (compared lower-cased); "" counts as false.
TRUE_WORDS = frozenset({"true", "1", "yes", "t", "y", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "f", "n", "off", ""})
