"""FITS cutouts → labelled xarray datasets: target pixel files, image cutouts, light curves.

Importing this package registers the ``ds.mastcut`` accessor; the ``mastcut`` xarray engine
is registered through the package's entry point (`backend`).
"""

from . import accessor  # noqa: F401  (registers ds.mastcut)
from .headers import fits_headers
from .photometry import QUALITY_BITMASKS, aperture_mask, aperture_photometry, quality_mask, stitch, threshold_mask
from .readers import image_to_xarray, open_cutout, tpf_to_xarray

__all__ = ["tpf_to_xarray", "image_to_xarray", "open_cutout", "fits_headers", "aperture_photometry",
           "aperture_mask", "quality_mask", "threshold_mask", "stitch", "QUALITY_BITMASKS"]
