"""The ``mastcut`` xarray engine: ``xr.open_dataset("..._astrocut.fits", engine="mastcut")``."""

from __future__ import annotations

import os

from xarray.backends import BackendEntrypoint

from .readers import open_cutout

__all__ = ["MastcutBackendEntrypoint"]


class MastcutBackendEntrypoint(BackendEntrypoint):
    """xarray backend: ``xr.open_dataset("..._astrocut.fits", engine="mastcut")``.

    Target pixel files decode as :func:`tpf_to_xarray`, image cutouts as
    :func:`image_to_xarray`. ``drop_variables`` is honoured; xarray's own ``chunks=``
    argument chunks the result afterwards.
    """

    description = "TESSCut target pixel files and ZCut/HAPCut image cutouts (mastcut_dask)"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj, *, drop_variables=None):
        ds = open_cutout(filename_or_obj)
        if drop_variables:
            ds = ds.drop_vars(list(drop_variables), errors="ignore")
        return ds

    def guess_can_open(self, filename_or_obj) -> bool:
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        name = os.fspath(filename_or_obj).lower()
        return name.endswith("_astrocut.fits") or (
            name.endswith(".fits") and ("hst_cutout" in name or "astrocut" in name))
