"""mastcut_dask: survey-scale MAST cutouts (TESSCut, ZCut, HAPCut) on Dask.

Public names are listed in ``__all__``. Importing the package registers the ``ds.mastcut``
dataset accessor (``mastcut_dask.decode.accessor``); the ``mastcut`` xarray engine is
registered through the package's entry point.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .decode import accessor as _accessor  # noqa: F401  (registers ds.mastcut on every xarray Dataset)
from .exceptions import (
    DecodeError,
    InputWarning,
    InvalidQueryError,
    MastcutError,
    NoResultsWarning,
    ResolverError,
    ServiceError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnsafeArchiveError,
)

if TYPE_CHECKING:
    from .decode import aperture_photometry, image_to_xarray, stitch, tpf_to_xarray
    from .pipeline import CutoutRun, fetch_cutouts, local_cluster
    from .services.clients import Hapcut, HapcutClass, Tesscut, TesscutClass, Zcut, ZcutClass
    from .store import open_cutouts
    from .targets import read_targets

# The rest is imported on first use (PEP 562): the pipeline pulls in distributed and the
# clients the HTTP stack, which a script that only decodes or reads a store never needs.
_LAZY = {
    "TesscutClass": "services.clients", "ZcutClass": "services.clients", "HapcutClass": "services.clients",
    "Tesscut": "services.clients", "Zcut": "services.clients", "Hapcut": "services.clients",
    "tpf_to_xarray": "decode", "image_to_xarray": "decode", "aperture_photometry": "decode", "stitch": "decode",
    "read_targets": "targets",
    "fetch_cutouts": "pipeline", "CutoutRun": "pipeline", "local_cluster": "pipeline",
    "open_cutouts": "store",
}

try:
    __version__ = version("mastcut_dask")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "TesscutClass",
    "ZcutClass",
    "HapcutClass",
    "Tesscut",
    "Zcut",
    "Hapcut",
    "tpf_to_xarray",
    "image_to_xarray",
    "aperture_photometry",
    "stitch",
    "read_targets",
    "fetch_cutouts",
    "CutoutRun",
    "local_cluster",
    "open_cutouts",
    "MastcutError",
    "InvalidQueryError",
    "ResolverError",
    "ServiceError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnsafeArchiveError",
    "DecodeError",
    "NoResultsWarning",
    "InputWarning",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mastcut_dask' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
