"""The ``ds.mastcut`` accessor: the decoders' and photometry's helpers as dataset methods.

Registered when :mod:`mastcut_dask` is imported (so any dataset made by
:func:`~mastcut_dask.tpf_to_xarray` or read back from zarr has it). The plain functions stay
the primary API; this only saves passing the dataset around::

    ds = tpf_to_xarray("tess-s0001-4-3_..._astrocut.fits")
    lc = ds.mastcut.lightcurve(aperture=2.5, background="local", quality_bitmask="default")
    ds.mastcut.plot_frame(0)          # needs matplotlib (optional)
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..exceptions import DecodeError, InvalidQueryError
from .headers import fits_headers, quiet_wcs
from .photometry import aperture_mask, aperture_photometry

__all__ = ["MastcutAccessor"]


@xr.register_dataset_accessor("mastcut")
class MastcutAccessor:
    """Helpers on decoded cutout datasets (``ds.mastcut.<method>``)."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def lightcurve(self, aperture="threshold", **kwargs) -> xr.Dataset:
        """Aperture photometry; see :func:`mastcut_dask.aperture_photometry` for the arguments."""
        return aperture_photometry(self._ds, aperture, **kwargs)

    def aperture_mask(self, aperture="threshold", **kwargs) -> xr.DataArray:
        """The pixel mask a light curve would use; see :func:`mastcut_dask.decode.photometry.aperture_mask`."""
        return aperture_mask(self._ds, aperture, **kwargs)

    def headers(self) -> list:
        """The source file's FITS headers, rebuilt from ``attrs["fits_headers"]``."""
        return fits_headers(self._ds)

    def wcs(self, hdu: int | None = None):
        """The astropy WCS of the cutout (TPF: the APERTURE HDU; image: HDU ``hdu``, default 1).

        Raises
        ------
        DecodeError
            If the dataset has no valid WCS (``attrs["wcs_valid"]`` is false).
        InvalidQueryError
            If the file had no HDU ``hdu``.
        """
        if not self._ds.attrs.get("wcs_valid"):
            raise DecodeError(f"{self._ds.attrs.get('source_file') or 'dataset'} has no valid WCS")
        headers = self.headers()
        if hdu is None:
            hdu = 2 if self._ds.attrs.get("service") in ("TESSCut", "SPOC") else 1
        if isinstance(hdu, bool) or not isinstance(hdu, int) or not 0 <= hdu < len(headers):
            raise InvalidQueryError(f"hdu={hdu!r}: the file had HDUs 0 to {len(headers) - 1}.")
        return quiet_wcs(headers[hdu])

    def plot_frame(self, index: int = 0, *, variable: str | None = None, ax=None, **imshow_kwargs):
        """Show one cadence (TPF) or band (ZCut) or the image (JPG/PNG, HAPCut ``sci``).

        Rows are drawn with the dataset's stated ``origin`` (``"lower"`` for FITS data).
        matplotlib is optional: an ImportError says so if it is missing.

        Returns
        -------
        matplotlib.image.AxesImage
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as err:  # an optional extra, never a dependency
            raise ImportError("plot_frame needs matplotlib: pip install \"mastcut_dask[plot]\" (or pip install matplotlib)") from err
        ds = self._ds
        name = variable or next(v for v in ("flux", "image", "sci") if v in ds.data_vars)
        data = ds[name]
        for dim in ("time", "band"):
            if dim in data.dims:
                data = data.isel({dim: index})
        if ax is None:
            _, ax = plt.subplots()
        imshow_kwargs.setdefault("origin", ds.attrs.get("origin", "lower") if name == "image" and
                                 "band" not in ds.dims else "lower")
        image = ax.imshow(np.asarray(data.values), **imshow_kwargs)
        ax.set_xlabel("x (column)")
        ax.set_ylabel("y (row)")
        return image
