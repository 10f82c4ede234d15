"""A run's store under ``OUT``: the FITS files as delivered, one zarr group per (target, product),
and the manifest that records every outcome (see `layout` for the tree)."""

from .fits_files import file_digest, file_size, write_fits
from .groups import is_complete_group, read_commit_marker, write_dataset
from .layout import MANIFEST_COLUMNS, STATUSES, ZARR_NAME, clean_staging, fits_path, resolve_out, store_url, zarr_group
from .manifest import Manifest, ManifestRow, rows_table
from .tree import open_cutouts

__all__ = ["write_fits", "file_digest", "file_size", "write_dataset", "is_complete_group", "read_commit_marker",
           "MANIFEST_COLUMNS", "STATUSES", "ZARR_NAME", "clean_staging", "fits_path", "resolve_out", "store_url",
           "zarr_group", "Manifest", "ManifestRow", "rows_table", "open_cutouts"]
