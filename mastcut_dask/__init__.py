"""mastcut_dask: survey-scale MAST cutouts (TESSCut, ZCut, HAPCut) on Dask.

Public names are listed in ``__all__``. They are imported on first use, so that
``import mastcut_dask`` stays cheap and a worker that only decodes never imports the
HTTP stack.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("mastcut_dask")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# public name -> module that defines it
_LAZY = {
    "TesscutClass": "clients",
    "ZcutClass": "clients",
    "HapcutClass": "clients",
    "Tesscut": "clients",
    "Zcut": "clients",
    "Hapcut": "clients",
    "tpf_to_xarray": "decode",
    "image_to_xarray": "decode",
    "aperture_photometry": "photometry",
    "stitch": "photometry",
    "read_targets": "targets",
    "fetch_cutouts": "graph",
    "local_cluster": "graph",
    "open_cutouts": "store",
}

__all__ = [
    "__version__",
    *_LAZY,
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
