"""Apertures and light curves on decoded target pixel files, with plain xarray.

Everything here takes the :class:`xarray.Dataset` of :func:`~mastcut_dask.tpf_to_xarray`
(numpy- or dask-backed) and returns labelled results; with dask, only the small per-cadence
results and (for ``"threshold"``) the median image are ever computed.

The conventions follow lightkurve 2.6.0 so that its results can serve as an oracle:
simple aperture photometry is a NaN-skipping sum over the mask (NaN when every masked pixel
is NaN, or when the whole frame is exactly zero), errors add in quadrature, centroids are
flux-weighted pixel indices plus the CCD column/row of pixel ``[0, 0]`` when the file gives it,
and quality bitmasks drop the flagged cadences (and NaN times).
"""

from __future__ import annotations

import logging
import warnings
from collections import deque

import numpy as np
import xarray as xr

from ..exceptions import InvalidQueryError

__all__ = [
    "QUALITY_BITMASKS",
    "aperture_mask",
    "aperture_photometry",
    "quality_mask",
    "stitch",
    "threshold_mask",
]

log = logging.getLogger(__name__)

#: lightkurve's TESS quality bitmasks (the bits of TESS's QUALITY column, as lightkurve groups them).
QUALITY_BITMASKS = {"none": 0, "default": 17087, "hard": 24319, "hardest": 65535}
# robust sigma from the median absolute deviation of a Gaussian
_MAD_TO_SIGMA = 1.4826
_LC_ATTRS = ("sector", "camera", "ccd", "ra_obj", "dec_obj", "object", "service", "source_file", "moving")


def _bitmask_value(quality_bitmask: str | int) -> int:
    if isinstance(quality_bitmask, (bool, np.bool_)):
        raise InvalidQueryError(f"quality_bitmask must be a name or an int, not {quality_bitmask!r}")
    if isinstance(quality_bitmask, (int, np.integer)):
        if quality_bitmask < 0:
            raise InvalidQueryError(f"quality_bitmask must be >= 0, got {quality_bitmask}")
        return int(quality_bitmask)
    if isinstance(quality_bitmask, str) and quality_bitmask.lower() in QUALITY_BITMASKS:
        return QUALITY_BITMASKS[quality_bitmask.lower()]
    raise InvalidQueryError(f"quality_bitmask must be one of {sorted(QUALITY_BITMASKS)} or an int, "
                            f"got {quality_bitmask!r}")


def quality_mask(ds: xr.Dataset, quality_bitmask: str | int = "default") -> np.ndarray:
    """Boolean ``(time,)`` array: True for cadences kept by ``quality_bitmask`` (as lightkurve).

    Parameters
    ----------
    ds : xarray.Dataset
        A decoded TPF (or a light curve) with ``quality`` and ``time`` coordinates.
    quality_bitmask : {"none", "default", "hard", "hardest"} or int
        Cadences whose ``quality & bitmask`` is non-zero are dropped; with any non-zero
        bitmask, cadences whose time is NaN are dropped too.

    Returns
    -------
    numpy.ndarray of bool
    """
    bits = _bitmask_value(quality_bitmask)
    quality = np.asarray(ds["quality"].values, dtype=np.int64)
    keep = (quality & bits) == 0
    if bits:
        keep &= np.isfinite(np.asarray(ds["time"].values, dtype=np.float64))
    return keep


def _median_image(flux: xr.DataArray) -> np.ndarray:
    """Per-pixel NaN-median over time, computed one image row at a time when dask-backed."""
    if flux.chunks is not None:
        # a median needs the whole time axis in one chunk: split the other way instead
        flux = flux.chunk({"time": -1, "y": 1, "x": -1})
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(flux.median("time", skipna=True).values, dtype=np.float64)


def _label_regions(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels (1, 2, ...) of a boolean image; 0 = background."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    ny, nx = mask.shape
    current = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        current += 1
        labels[start] = current
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < ny and 0 <= cc < nx and mask[rr, cc] and not labels[rr, cc]:
                    labels[rr, cc] = current
                    queue.append((rr, cc))
    return labels


def threshold_mask(ds: xr.Dataset, threshold: float = 3.0, *, quality_bitmask: str | int = "none",
                   reference_pixel: str | tuple[float, float] | None = "center") -> xr.DataArray:
    """lightkurve's threshold aperture: bright pixels of the median image, region nearest the centre.

    A pixel is selected when its median over time is at least
    ``median + threshold × 1.4826 × MAD`` of the median image. Of the 4-connected regions
    found, the one holding the selected pixel closest to ``reference_pixel`` is kept.

    Parameters
    ----------
    ds : xarray.Dataset
        A decoded TPF.
    threshold : float
        Number of robust standard deviations above the median.
    quality_bitmask : str or int
        Cadences used for the median image (see :func:`quality_mask`).
    reference_pixel : "center", (col, row) or None
        ``None`` keeps every region.

    Returns
    -------
    xarray.DataArray
        Boolean ``(y, x)`` mask.
    """
    keep = quality_mask(ds, quality_bitmask)
    flux = ds["flux"].isel(time=np.nonzero(keep)[0])
    median_image = _median_image(flux)
    finite = median_image[np.isfinite(median_image)]
    ny, nx = median_image.shape
    if finite.size == 0:
        return xr.DataArray(np.zeros((ny, nx), bool), dims=("y", "x"), name="aperture_mask")
    centre = np.median(finite)
    cut = _MAD_TO_SIGMA * np.median(np.abs(finite - centre)) * threshold + centre
    mask = np.nan_to_num(median_image) >= cut
    if reference_pixel is not None and mask.any():
        ref_col, ref_row = (nx / 2, ny / 2) if reference_pixel == "center" else reference_pixel
        labels = _label_regions(mask)
        pixels = np.argwhere(labels > 0)  # row-major order: ties go to the first, as lightkurve
        nearest = pixels[np.argmin(np.hypot(pixels[:, 0] - ref_row, pixels[:, 1] - ref_col))]
        mask = labels == labels[nearest[0], nearest[1]]
    return xr.DataArray(mask, dims=("y", "x"), name="aperture_mask")


def _target_pixel(ds: xr.Dataset) -> tuple:
    """(x, y) of the target, 0-based: TGT_X/TGT_Y per cadence, else the WCS position, else the centre."""
    if "tgt_x" in ds.coords and "tgt_y" in ds.coords:
        return ds["tgt_x"], ds["tgt_y"]
    if ds.attrs.get("wcs_valid") and "target_x" in ds.attrs:
        return float(ds.attrs["target_x"]), float(ds.attrs["target_y"])
    log.warning("%s: no valid WCS; the disc is centred on the cutout centre", ds.attrs.get("source_file", "dataset"))
    return (ds.sizes["x"] - 1) / 2.0, (ds.sizes["y"] - 1) / 2.0


def aperture_mask(ds: xr.Dataset, aperture="threshold", *, threshold: float = 3.0,
                  quality_bitmask: str | int = "none") -> xr.DataArray:
    """The boolean pixel mask :func:`aperture_photometry` sums over.

    Parameters
    ----------
    ds : xarray.Dataset
        A decoded TPF.
    aperture : "all", "threshold", "aperture", float or array of bool
        ``"all"``: every pixel; ``"threshold"``: :func:`threshold_mask`; ``"aperture"``: the
        file's APERTURE (pixels on the detector); a number: a disc of that radius (pixels)
        around the target (per cadence for moving targets, from TGT_X/TGT_Y); a boolean
        ``(y, x)`` array: that mask.
    threshold : float
        For ``"threshold"``.
    quality_bitmask : str or int
        For ``"threshold"``: the cadences whose median image is thresholded.

    Returns
    -------
    xarray.DataArray
        Boolean, ``(y, x)`` or, for a disc around a moving target, ``(time, y, x)``.
    """
    shape = (ds.sizes["y"], ds.sizes["x"])
    if isinstance(aperture, str):
        kind = aperture.lower()
        if kind == "all":
            return xr.DataArray(np.ones(shape, bool), dims=("y", "x"), name="aperture_mask")
        if kind == "threshold":
            return threshold_mask(ds, threshold, quality_bitmask=quality_bitmask)
        if kind == "aperture":
            return ds["aperture"].astype(bool).rename("aperture_mask").reset_coords(drop=True)
        raise InvalidQueryError(f"aperture must be 'all', 'threshold', 'aperture', a radius or a "
                                f"boolean (y, x) array, got {aperture!r}")
    if isinstance(aperture, (int, float, np.integer, np.floating)) and not isinstance(aperture, (bool, np.bool_)):
        radius = float(aperture)
        if not radius > 0:
            raise InvalidQueryError(f"an aperture radius must be positive, got {aperture!r}")
        tx, ty = _target_pixel(ds)
        yy = xr.DataArray(np.arange(shape[0], dtype=np.float64), dims="y")
        xx = xr.DataArray(np.arange(shape[1], dtype=np.float64), dims="x")
        mask = (xx - tx) ** 2 + (yy - ty) ** 2 <= radius ** 2
        return mask.reset_coords(drop=True).transpose(..., "y", "x").rename("aperture_mask")
    array = aperture.values if isinstance(aperture, xr.DataArray) else np.asarray(aperture)
    if array.dtype != bool or array.shape != shape:
        raise InvalidQueryError(f"an aperture array must be boolean with shape (y, x) = {shape}, "
                                f"got {array.dtype} {array.shape}")
    return xr.DataArray(array, dims=("y", "x"), name="aperture_mask")


def aperture_photometry(ds: xr.Dataset, aperture="threshold", *, threshold: float = 3.0,
                        background: str | None = None, quality_bitmask: str | int = "none") -> xr.Dataset:
    """Simple aperture photometry of a decoded TPF: a light curve on ``time``.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`~mastcut_dask.tpf_to_xarray` (numpy- or dask-backed).
    aperture : "all", "threshold", "aperture", float or array of bool
        Which pixels to sum; see :func:`aperture_mask`. Default ``"threshold"``
        (what lightkurve uses for TESSCut files).
    threshold : float
        Sigma threshold for ``"threshold"`` (default 3, as lightkurve).
    background : {None, "local"}
        ``"local"``: subtract, per cadence, the median of the on-detector pixels outside the
        aperture times the number of aperture pixels (TESSCut's FLUX_BKG is zero: its
        pixels still hold the sky). ``None`` (default): no subtraction, as lightkurve.
    quality_bitmask : {"none", "default", "hard", "hardest"} or int
        Cadences flagged by this mask (and, unless "none", NaN times) are dropped.

    Returns
    -------
    xarray.Dataset
        On ``time``: ``flux``, ``flux_err`` (float32, e-/s), ``centroid_col``,
        ``centroid_row`` (float64, pixels; CCD pixels when the file gives the CCD
        position), and ``background`` when subtracted; the TPF's per-cadence coordinates
        (``quality``, ``cadenceno``, ...). Attrs: the TPF's identity (sector, camera, ...)
        plus ``aperture``, ``n_pixels``, ``quality_bitmask``, ``background``.

    Raises
    ------
    InvalidQueryError
        For an unknown aperture, bitmask or background method.
    """
    bits = _bitmask_value(quality_bitmask)
    if background not in (None, "local"):
        raise InvalidQueryError(f"background must be None or 'local', got {background!r}")
    mask = aperture_mask(ds, aperture, threshold=threshold, quality_bitmask=quality_bitmask)
    keep = quality_mask(ds, bits)
    sub = ds.isel(time=np.nonzero(keep)[0]) if not keep.all() else ds
    if "time" in mask.dims:
        mask = mask.isel(time=np.nonzero(keep)[0]) if not keep.all() else mask
    if not bool(mask.any()):
        log.warning("aperture mask contains zero pixels")

    flux = sub["flux"].astype(np.float64)
    flux_err = sub["flux_err"].astype(np.float64)
    inside = flux.where(mask)
    total = inside.sum(("y", "x"), skipna=True)
    finite_in = np.isfinite(inside).any(("y", "x"))
    all_zero = (sub["flux"] == 0).all(("y", "x"))
    lc_flux = total.where(finite_in & ~all_zero)
    err_in = flux_err.where(mask)
    lc_err = np.sqrt((err_in ** 2).sum(("y", "x"), skipna=True)).where(np.isfinite(err_in).any(("y", "x")))

    col0 = float(sub["column"].values[0, 0]) if "column" in sub.coords else 0.0
    row0 = float(sub["row"].values[0, 0]) if "row" in sub.coords else 0.0
    xx = xr.DataArray(np.arange(sub.sizes["x"], dtype=np.float64) + col0, dims="x")
    yy = xr.DataArray(np.arange(sub.sizes["y"], dtype=np.float64) + row0, dims="y")
    centroid_col = (inside * xx).sum(("y", "x"), skipna=True) / total
    centroid_row = (inside * yy).sum(("y", "x"), skipna=True) / total

    data_vars = {}
    if background == "local":
        outside = ~mask & sub["aperture"].astype(bool).reset_coords(drop=True)
        if not bool(outside.any()):
            raise InvalidQueryError("local background needs on-detector pixels outside the aperture; "
                                    "use a smaller aperture or a larger cutout")
        level = flux.where(outside).median(("y", "x"), skipna=True)
        n_pix = mask.sum(("y", "x"))
        bkg = level * n_pix
        lc_flux = lc_flux - bkg
        # centroids of the background-subtracted image, so the sky does not pull them to the centre
        clean = inside - level
        total_clean = clean.sum(("y", "x"), skipna=True)
        centroid_col = (clean * xx).sum(("y", "x"), skipna=True) / total_clean
        centroid_row = (clean * yy).sum(("y", "x"), skipna=True) / total_clean
        data_vars["background"] = (bkg.astype(np.float32).reset_coords(drop=True)
                                   .assign_attrs(units="electron / s", long_name="background in the aperture"))

    units = sub["flux"].attrs.get("units", "electron / s")
    data_vars["flux"] = lc_flux.astype(np.float32).assign_attrs(units=units, long_name="aperture flux")
    data_vars["flux_err"] = lc_err.astype(np.float32).assign_attrs(units=units, long_name="aperture flux error")
    data_vars["centroid_col"] = centroid_col.assign_attrs(units="pixel")
    data_vars["centroid_row"] = centroid_row.assign_attrs(units="pixel")
    data_vars = {k: v.reset_coords(drop=True) if isinstance(v, xr.DataArray) else v for k, v in data_vars.items()}
    coords = {name: sub[name] for name in sub.coords if sub[name].dims == ("time",)}
    attrs = {key: sub.attrs[key] for key in _LC_ATTRS if key in sub.attrs}
    attrs.update(aperture=aperture if isinstance(aperture, str) else (
        f"disc r={float(aperture)}" if np.isscalar(aperture) else "mask"),
        n_pixels=int(mask.sum()) if "time" not in mask.dims else int(mask.sum(("y", "x")).max()),
        quality_bitmask=bits, background=background or "none")
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def stitch(lightcurves) -> xr.Dataset:
    """Normalise light curves (each divided by its NaN-median flux) and join them along time.

    Parameters
    ----------
    lightcurves : iterable of xarray.Dataset
        Results of :func:`aperture_photometry`, e.g. one per sector.

    Returns
    -------
    xarray.Dataset
        Sorted by ``time``, with ``sector`` as a coordinate on ``time`` (``-1`` where unknown);
        ``flux``/``flux_err`` relative (dimensionless). Attrs kept only where all inputs agree.

    Raises
    ------
    InvalidQueryError
        If no light curve is given.
    """
    parts = []
    for lc in lightcurves:
        flux = lc["flux"]
        if flux.chunks is not None:
            flux = flux.chunk({"time": -1})
        norm = float(flux.median(skipna=True).values)
        if not np.isfinite(norm) or norm == 0:
            log.warning("light curve of sector %s has no finite non-zero median; left unnormalised",
                        lc.attrs.get("sector"))
            norm = 1.0
        out = lc.copy()
        for name in ("flux", "flux_err"):
            out[name] = (lc[name] / np.float32(norm)).astype(np.float32).assign_attrs(
                units="", long_name=f"{name.replace('_', ' ')} / median flux")
        if "background" in out:
            out = out.drop_vars("background")
        sector = int(lc.attrs.get("sector", -1))
        out = out.assign_coords(sector=("time", np.full(lc.sizes["time"], sector, dtype=np.int32)))
        out.attrs["normalisation"] = norm
        parts.append(out)
    if not parts:
        raise InvalidQueryError("stitch needs at least one light curve")
    joined = xr.concat(parts, dim="time", data_vars="all", coords="different", compat="equals",
                       join="outer", combine_attrs="drop_conflicts")
    joined.attrs.pop("normalisation", None)
    return joined.sortby("time")
