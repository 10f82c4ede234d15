"""The emulator's ZCut and HAPCut skies and products: the functions the HTTP server calls.

This module is the stable entry point; the code lives in :mod:`.zcut` (deep-field surveys),
:mod:`.hapcut` (HST HAP skycells) and :mod:`.imagecut` (shared geometry, rendering, FITS and
JPG/PNG writing). Their docstrings document the sky in full; in short:

* ZCut: four deep fields (GOODS-N, GOODS-S, UDS, COSMOS), 12 surveys. At
  (189.49206, 62.20615) :func:`zcut_surveys_at` gives ``['candels_gn_60mas', 'candels_gn_30mas',
  'goods_north', '3dhst_goods-n']``; a mag-19 star sits exactly there.
* HAPCut: two skycells. At (351.347812, 28.497808) skycell ``p2007x09y05`` has
  WFC3/IR F160W (coarse 0.12" and fine 0.04"), WFC3/UVIS F606W and F814W; (102.7, 70.5) has
  nothing.

Contract (all raise :class:`~mastcut_dask.emulator.errors.BadRequest` for invalid input):

``zcut_surveys_at(ra, dec, radius_deg=0.0, *, seed=0) -> list[str]``
``zcut_survey_names() -> list[str]``
``zcut_cutout_files(ra, dec, x, y, units, *, survey=None, fmt="fits", stretch=None,
minmax_percent=None, minmax_value=None, invert=False, seed=0) -> list[tuple[str, bytes]]``
``hapcut_cutout_files(ra, dec, x, y, units, *, seed=0) -> list[tuple[str, bytes]]``

An empty list means "no coverage" (the server answers with its JSON ``msg``). The JPG/PNG
options may be given as Python values or as their raw wire strings (``"[0.5, 99.5]"``,
``"True"``); :func:`parse_image_params` is the parser, exported for the server's own use.
"""

from __future__ import annotations

from .constants import MAX_CUTOUT_PIXELS
from .hapcut import hapcut_cutout_files
from .imagecut import ImageParams, parse_image_params
from .zcut import zcut_cutout_files, zcut_survey_names, zcut_surveys_at

__all__ = [
    "MAX_CUTOUT_PIXELS",
    "ImageParams",
    "parse_image_params",
    "zcut_surveys_at",
    "zcut_survey_names",
    "zcut_cutout_files",
    "hapcut_cutout_files",
]
