"""TESSCut, ZCut and HAPCut clients with astroquery 0.4.11's API, and the stage functions under them.

``from mastcut_dask import Tesscut, Zcut, Hapcut`` replaces ``from astroquery.mast import ...``:
same keyword arguments, return types, table columns, warnings and error texts, but every
request has timeouts, bounded retries and a per-process concurrency limit, downloads are
atomic and uniquely named, and archives are checked before anything is written.

The operations themselves are plain functions in `mastcut_dask.services.queries`.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Sequence
from urllib.parse import urlsplit

from astropy.table import Table
from astropy.utils.exceptions import AstropyDeprecationWarning

from ..exceptions import InputWarning, InvalidQueryError, NoResultsWarning, UnexpectedResponseError
from ..options import ServiceOptions, resolve_base_url, resolve_resolver_url
from ..targets import CutoutSize, check_survey_name, parse_coordinates, parse_radius, parse_size
from .archive import CutoutArchive, NoData
from .catalog import check_zcut_options, get_service
from .queries import (
    download_cutout_archive,
    extract_cutout_archive,
    fetch_cutout_members,
    open_fits_members,
    query_sectors,
    query_surveys,
)
from .request import CutoutRequest
from .resolver import resolve_name
from .throttle import LocalThrottle, Throttle

__all__ = ["TesscutClass", "ZcutClass", "HapcutClass", "Tesscut", "Zcut", "Hapcut", "shared_throttle"]

log = logging.getLogger(__name__)

NO_SECTOR_MSG = "Coordinates are not in any TESS sector."
NO_SURVEY_MSG = "Coordinates are not in an available deep field survey."
_PRODUCT_DEPRECATION = ("Tesscut no longer supports operations on TESS Image Calibrator (TICA) products. "
                        "The `product` argument is deprecated and will be removed in a future version.")
#: Seconds a client's freed request slot rests before reuse: the server counts a request as
#: finished slightly after the client has read its last byte (see `LocalThrottle`).
SLOT_SETTLE = 0.02
#: Requests one call sends at once when it needs several (a moving target's sectors).
MAX_PARALLEL_REQUESTS = 4


# ---- one budget per server and process ------------------------------------------------------
_throttles: dict[tuple[str, int, float], LocalThrottle] = {}
_throttles_lock = threading.Lock()


def shared_throttle(base_url: str, max_concurrency: int = 10, max_rate: float = 0.0) -> LocalThrottle:
    """This process's `LocalThrottle` for the server of ``base_url`` with these limits.

    Every client instance (and thread) talking to the same server with the same limits shares
    it, so creating a second ``TesscutClass`` does not double the requests in flight.
    """
    key = (urlsplit(base_url).netloc.lower(), int(max_concurrency), float(max_rate))
    with _throttles_lock:
        throttle = _throttles.get(key)
        if throttle is None:
            throttle = _throttles[key] = LocalThrottle(max_concurrency, max_rate, settle=SLOT_SETTLE)
        return throttle


# ---- the astroquery-style classes ------------------------------------------------------------
class _CutoutClient:
    """Shared plumbing: options, throttle, input checks."""

    _service = ""

    def __init__(self, *, base_url: str | None = None, resolver_url: str | None = None,
                 timeout: float | tuple[float, float] | None = None, max_retries: int | None = None,
                 max_concurrency: int = 10, max_rate: float = 0.0, throttle: Throttle | None = None,
                 options: ServiceOptions | None = None, **option_overrides: Any):
        self._base_url = base_url
        self._resolver_url = resolver_url
        overrides = dict(option_overrides)
        if timeout is not None:
            if isinstance(timeout, (tuple, list)):
                connect, read = timeout
            else:
                connect, read = min(float(timeout), 10.0), float(timeout)
            if not (connect > 0 and read > 0):
                raise InvalidQueryError(f"timeout must be positive, got {timeout!r}")
            overrides.update(connect_timeout=float(connect), read_timeout=float(read))
        if max_retries is not None:
            if int(max_retries) < 0:
                raise InvalidQueryError(f"max_retries must be >= 0, got {max_retries!r}")
            overrides["max_retries"] = int(max_retries)
        unknown = set(overrides) - set(ServiceOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        self._base_options = options
        self._overrides = overrides
        if throttle is None:
            LocalThrottle(max_concurrency, max_rate)  # validates the limits now, not at the first call
        self._throttle = throttle
        self._limits = (int(max_concurrency), float(max_rate))
        self.options  # validate now: a bad option fails at construction  # noqa: B018

    @property
    def options(self) -> ServiceOptions:
        """The `ServiceOptions` in force (environment defaults are read on each call)."""
        base = self._base_options or ServiceOptions()
        options = replace(base, base_url=resolve_base_url(self._base_url or (self._base_options.base_url
                                                                         if self._base_options else None)),
                       resolver_url=resolve_resolver_url(self._resolver_url or (
                           self._base_options.resolver_url if self._base_options else None)),
                       **self._overrides)
        for name in ("base_url", "resolver_url"):
            parts = urlsplit(getattr(options, name))
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidQueryError(f"{name} {getattr(options, name)!r} must be an http(s) URL.")
        return options

    @property
    def throttle(self) -> Throttle:
        """The request budget: the one given, else this process's `LocalThrottle` for the server
        (shared by every client instance with the same server and limits)."""
        if self._throttle is not None:
            return self._throttle
        return shared_throttle(self.options.base_url, *self._limits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.options.base_url!r})"

    # -- input checks (all before any request) ----------------------------------------------
    def _size(self, size: Any, units: str | None = None) -> CutoutSize:
        return parse_size(size, units=units, pixel_arcsec=get_service(self._service).pixel_arcsec,
                          max_pixels=get_service(self._service).max_pixels)

    def _position(self, coordinates: Any) -> tuple[float, float]:
        if coordinates is None:
            raise InvalidQueryError("coordinates are required: give a SkyCoord, an 'ra dec' string or (ra, dec).")
        return parse_coordinates(coordinates)

    def _each(self, fn, requests_: Sequence[CutoutRequest]) -> list:
        """``fn(request)`` for every request, in order; several at once when there are several
        (a moving target's sectors), each still under the throttle."""
        if len(requests_) <= 1:
            return [fn(r) for r in requests_]

        with ThreadPoolExecutor(min(len(requests_), MAX_PARALLEL_REQUESTS)) as pool:
            return list(pool.map(fn, requests_))

    def _cutouts_in_memory(self, requests_: Sequence[CutoutRequest], *, hapcut: bool = False) -> list:
        options = self.options
        out: list = []
        # Warnings are issued here, in the caller's thread, in request order.
        for got in self._each(lambda r: fetch_cutout_members(options, r, throttle=self.throttle), requests_):
            if isinstance(got, NoData):
                if hapcut and not got.results_empty:
                    raise UnexpectedResponseError(f"HAPCut answered with an error: {got.message}", url=got.url)
                warnings.warn(got.message, NoResultsWarning, stacklevel=3)
                continue
            out += open_fits_members(got)
        return out

    def _download(self, requests_: Sequence[CutoutRequest], path: str, inflate: bool):
        os.makedirs(path, exist_ok=True)
        options = self.options
        paths: list[str] = []
        archives: list[CutoutArchive] = []   # list.append is atomic: safe from the pool's threads

        def fetch(request: CutoutRequest) -> CutoutArchive | NoData:
            got = download_cutout_archive(options, request, path, throttle=self.throttle)
            if isinstance(got, CutoutArchive):
                archives.append(got)
            return got

        try:
            fetched = self._each(fetch, requests_)
            for got in fetched:
                if isinstance(got, NoData):
                    warnings.warn(got.message, NoResultsWarning, stacklevel=3)
                    continue
                if not inflate:
                    paths.append(got.path)
                    continue
                paths += extract_cutout_archive(got, path, options)
        except BaseException:
            # One sector failed: the zips its siblings already wrote would stay in the user's
            # folder unreported (extracted ones are gone already).
            for archive in archives:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(archive.path)
            raise
        table = Table(names=["Local Path"], dtype=[str])
        if paths:
            table["Local Path"] = paths
        return table


def _check_sector(sector: Any) -> Any:
    """None/0 (all), a positive int, or a list of them (repeated keys)."""
    def one(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InvalidQueryError(f"sector must be a positive integer such as sector=8 (or None for all), "
                                    f"got {value!r}.")
        if int(value) < 0:
            raise InvalidQueryError(f"sector must be a positive integer, got {value!r}.")
        return int(value)

    if sector is None:
        return None
    if isinstance(sector, (list, tuple)):
        if not sector:
            raise InvalidQueryError("sector is an empty list: give sector numbers or None for all sectors.")
        return [one(s) for s in sector]
    return one(sector)


def _objectname(objectname: str | None, object_name: str | None) -> str | None:
    if objectname is not None and object_name is not None and objectname != object_name:
        raise InvalidQueryError("Give either objectname= or object_name= (the newer spelling), not both.")
    name = object_name if object_name is not None else objectname
    if name is not None:
        if not isinstance(name, str):
            raise InvalidQueryError(f"objectname must be a string, got {name!r}; pass positions as coordinates=.")
        if not name.strip():
            raise InvalidQueryError("objectname is empty: give a name such as 'M104' or 'TIC 307210830'.")
    return name


class TesscutClass(_CutoutClient):
    """TESS full-frame image cutouts (MAST TESSCut), with astroquery 0.4.11's API.

    Parameters
    ----------
    base_url : str, optional
        Root of the services (default ``$MASTCUT_MAST_URL`` or ``https://mast.stsci.edu``).
    resolver_url : str, optional
        SANTA resolver URL (default ``$MASTCUT_RESOLVER_URL`` or MAST's).
    timeout : float or (float, float), optional
        Read timeout in seconds (connect timeout ``min(timeout, 10)``), or ``(connect, read)``.
    max_retries : int, optional
        Retries after the first try (default 5).
    max_concurrency : int
        Requests in flight at once to this server from this process, across all threads and
        all client instances with the same limits (default 10; see `shared_throttle`).
    max_rate : float
        Request starts per second to this server from this process (0 = no limit).
    throttle : Throttle, optional
        Use this throttle instead (e.g. a cluster-wide one).
    options : ServiceOptions, optional
        Base options; other keyword arguments (``backoff_base=``, ``backoff_cap=``,
        ``connect_timeout=``, ``read_timeout=``, ``request_timeout=`` (a try's total time,
        default 600 s), ``max_retry_after=``, archive bounds) override its fields.
    """

    _service = "tesscut"

    def _check_product(self, product: str | None) -> None:
        if product is None:
            return

        warnings.warn(_PRODUCT_DEPRECATION, AstropyDeprecationWarning, stacklevel=3)
        if str(product).upper() != "SPOC":
            raise InvalidQueryError("Input product must be SPOC.")

    def _target(self, coordinates, objectname, moving_target, resolver) -> tuple[float, float] | None:
        """Validate the target; resolve a fixed one. None for a moving target."""
        if moving_target:
            if coordinates is not None:
                raise InvalidQueryError("Only one of moving_target and coordinates may be specified. "
                                        "Please remove coordinates if using moving_target and objectname.")
            if not objectname:
                raise InvalidQueryError("Please specify the object name or ID (as understood by the "
                                        "`JPL ephemerides service <https://ssd.jpl.nasa.gov/horizons/app.html>`__) "
                                        "of a moving target such as an asteroid or comet.")
            return None
        if coordinates is not None and objectname:
            raise InvalidQueryError("Only one of objectname and coordinates may be specified. "
                                    "Please remove objectname if using coordinates.")
        if coordinates is None and not objectname:
            raise InvalidQueryError("One of objectname and coordinates must be specified.")
        if objectname:
            return resolve_name(objectname, self.options, self.throttle, resolver=resolver)
        if resolver:
            warnings.warn("Resolver is only used when resolving object names and will be ignored.", InputWarning,
                          stacklevel=3)
        return self._position(coordinates)

    def _requests(self, position, objectname, mt_type, size, sector, moving_target) -> list[CutoutRequest]:
        if not moving_target:
            return [CutoutRequest("tesscut", size=size, ra=position[0], dec=position[1], sector=sector)]
        if sector:
            return [CutoutRequest("tesscut", size=size, obj_id=objectname, obj_type=mt_type, sector=sector)]
        # One request per sector, as astroquery main does, to spare the service's memory.
        rows = query_sectors(self.options, obj_id=objectname, obj_type=mt_type, throttle=self.throttle)
        sectors = list(dict.fromkeys(r["sector"] for r in rows))
        if not sectors:
            warnings.warn(NO_SECTOR_MSG, NoResultsWarning, stacklevel=4)
        return [CutoutRequest("tesscut", size=size, obj_id=objectname, obj_type=mt_type, sector=s)
                for s in sectors]

    def get_sectors(self, *, coordinates: Any = None, radius: Any = 0.0, product: str | None = None,
                    objectname: str | None = None, moving_target: bool = False, mt_type: str | None = None,
                    resolver: str | None = None, object_name: str | None = None):
        """TESS sectors whose footprints meet the search area.

        Parameters
        ----------
        coordinates : SkyCoord, str or (ra, dec), optional
            The position (not with ``objectname`` or ``moving_target``).
        radius : float, str or Quantity
            Search radius; plain numbers are degrees (default 0).
        product : str, optional
            Deprecated; only "SPOC".
        objectname, object_name : str, optional
            Object name or TIC ID; with ``moving_target`` the Horizons name or ID.
        moving_target : bool
            Search along a moving target's path.
        mt_type : str, optional
            ``majorbody`` or ``smallbody`` (moving targets).
        resolver : {"SIMBAD", "NED"}, optional
            Resolver for ``objectname``.

        Returns
        -------
        astropy.table.Table
            Columns ``sectorName`` (str), ``sector``, ``camera``, ``ccd`` (int); empty with a
            `NoResultsWarning` when nothing covers the target.
        """
        self._check_product(product)
        objectname = _objectname(objectname, object_name)
        radius_deg = parse_radius(radius)
        position = self._target(coordinates, objectname, moving_target, resolver)
        if moving_target:
            rows = query_sectors(self.options, obj_id=objectname, obj_type=mt_type, throttle=self.throttle)
        else:
            rows = query_sectors(self.options, ra=position[0], dec=position[1], radius=radius_deg,
                                 throttle=self.throttle)
        if not rows:
            warnings.warn(NO_SECTOR_MSG, NoResultsWarning, stacklevel=2)
        return Table(rows=[(r["sectorName"], r["sector"], r["camera"], r["ccd"]) for r in rows],
                     names=["sectorName", "sector", "camera", "ccd"])

    def get_cutouts(self, *, coordinates: Any = None, size: Any = 5, product: str | None = None,
                    sector: Any = None, objectname: str | None = None, moving_target: bool = False,
                    mt_type: str | None = None, resolver: str | None = None, object_name: str | None = None,
                    units: str | None = None) -> list:
        """Cutout target pixel files as in-memory `~astropy.io.fits.HDUList` objects.

        Parameters
        ----------
        coordinates, objectname, object_name, moving_target, mt_type, resolver, product
            As in `get_sectors`.
        size : int, array-like or Quantity
            Scalar (square) or ``(ny, nx)``; pixels or angles (default 5 pixels).
        sector : int, optional
            One sector (default: all; moving targets then get one request per sector).
        units : str, optional
            Unit of plain-number sizes (``"px"`` default, or an angular unit).

        Returns
        -------
        list of HDUList
            One per sector/camera/CCD; ``.filename`` is the archive member name. Empty with
            a `NoResultsWarning` carrying the service's message when there is no data.
        """
        self._check_product(product)
        objectname = _objectname(objectname, object_name)
        parsed = self._size(size, units)
        sector = _check_sector(sector)
        position = self._target(coordinates, objectname, moving_target, resolver)
        return self._cutouts_in_memory(self._requests(position, objectname, mt_type, parsed, sector, moving_target))

    def download_cutouts(self, *, coordinates: Any = None, size: Any = 5, sector: Any = None,
                         product: str | None = None, path: str = ".", inflate: bool = True,
                         objectname: str | None = None, moving_target: bool = False, mt_type: str | None = None,
                         resolver: str | None = None, verbose: bool = False, object_name: str | None = None,
                         units: str | None = None):
        """Download cutout target pixel files into ``path`` (created if missing).

        Parameters
        ----------
        path : str
            Destination folder (default the current one).
        inflate : bool
            Extract the zip (default) or keep it under a unique name.
        verbose : bool
            Log "Inflating..." at INFO level.
        others
            As in `get_cutouts`.

        Returns
        -------
        astropy.table.Table
            One str column ``Local Path``: the files written (or the zip when ``inflate=False``).
        """
        self._check_product(product)
        objectname = _objectname(objectname, object_name)
        parsed = self._size(size, units)
        sector = _check_sector(sector)
        position = self._target(coordinates, objectname, moving_target, resolver)
        if verbose:
            log.info("Inflating...")
        return self._download(self._requests(position, objectname, mt_type, parsed, sector, moving_target),
                              path, inflate)


class ZcutClass(_CutoutClient):
    """Deep-field survey cutouts (MAST ZCut), with astroquery 0.4.11's API.

    Takes the same constructor arguments as `TesscutClass`.
    """

    _service = "zcut"

    def _survey(self, survey: Any) -> str | None:
        if survey is None:
            return None
        if not check_survey_name(survey):
            raise InvalidQueryError(f"Unknown survey {survey!r}: give a survey name from Zcut.get_surveys(), "
                                    "e.g. 'candels_gn_30mas', or None for all.")
        return survey

    def get_surveys(self, coordinates: Any = None, *, radius: Any = "0d") -> list[str]:
        """Deep-field surveys available at a position.

        Parameters
        ----------
        coordinates : SkyCoord, str or (ra, dec)
        radius : float, str or Quantity
            Search radius; plain numbers are degrees (default 0).

        Returns
        -------
        list of str
            Empty with a `NoResultsWarning` when no survey covers the position.
        """
        ra, dec = self._position(coordinates)
        radius_deg = parse_radius(radius)
        surveys = query_surveys(self.options, ra=ra, dec=dec, radius=radius_deg, throttle=self.throttle)
        if not surveys:
            warnings.warn(NO_SURVEY_MSG, NoResultsWarning, stacklevel=2)
        return surveys

    def get_cutouts(self, coordinates: Any = None, *, size: Any = 5, survey: str | None = None,
                    units: str | None = None) -> list:
        """FITS cutouts as in-memory `~astropy.io.fits.HDUList` objects (one per survey).

        Parameters
        ----------
        coordinates : SkyCoord, str or (ra, dec)
        size : int, array-like or Quantity
            Scalar or ``(ny, nx)``; pixels or angles (default 5 pixels).
        survey : str, optional
            Restrict to one survey (default: all covering the position).
        units : str, optional
            Unit of plain-number sizes (``"px"`` default).

        Returns
        -------
        list of HDUList
        """
        parsed = self._size(size, units)
        survey = self._survey(survey)
        ra, dec = self._position(coordinates)
        return self._cutouts_in_memory([CutoutRequest("zcut", size=parsed, ra=ra, dec=dec, survey=survey)])

    def download_cutouts(self, coordinates: Any = None, *, size: Any = 5, survey: str | None = None,
                         cutout_format: str = "fits", path: str = ".", inflate: bool = True, verbose: bool = False,
                         units: str | None = None, **img_params: Any):
        """Download FITS, JPEG or PNG cutouts into ``path``.

        Parameters
        ----------
        coordinates, size, survey, units
            As in `get_cutouts`.
        cutout_format : {"fits", "jpg", "png"}
            Sent as ``cutout_format=`` (the current service parameter).
        path : str
            Destination folder (created if missing).
        inflate : bool
            Extract the zip (default) or keep it under a unique name.
        **img_params
            ``stretch``, ``minmax_percent``, ``minmax_value``, ``invert`` (image formats).

        Returns
        -------
        astropy.table.Table
            One str column ``Local Path``.
        """
        parsed = self._size(size, units)
        survey = self._survey(survey)
        check_zcut_options(cutout_format, tuple(img_params.items()))
        ra, dec = self._position(coordinates)
        request = CutoutRequest("zcut", size=parsed, ra=ra, dec=dec, survey=survey, cutout_format=cutout_format,
                                img_params=tuple(img_params.items()))
        if verbose:
            log.info("Inflating...")
        return self._download([request], path, inflate)


class HapcutClass(_CutoutClient):
    """Hubble Advanced Products cutouts (MAST HAPCut), with astroquery 0.4.11's API.

    Takes the same constructor arguments as `TesscutClass`.
    """

    _service = "hapcut"

    def get_cutouts(self, coordinates: Any = None, *, size: Any = 5, units: str | None = None) -> list:
        """HAP cutouts (PRIMARY, SCI, WHT) as in-memory `~astropy.io.fits.HDUList` objects.

        Parameters
        ----------
        coordinates : SkyCoord, str or (ra, dec)
        size : int, array-like or Quantity
            Scalar or ``(ny, nx)``; pixels or angles (default 5 pixels).
        units : str, optional
            Unit of plain-number sizes (``"px"`` default).

        Returns
        -------
        list of HDUList
        """
        parsed = self._size(size, units)
        ra, dec = self._position(coordinates)
        return self._cutouts_in_memory([CutoutRequest("hapcut", size=parsed, ra=ra, dec=dec)], hapcut=True)

    def download_cutouts(self, coordinates: Any = None, *, size: Any = 5, path: str = ".", inflate: bool = True,
                         verbose: bool = False, units: str | None = None):
        """Download HAP cutouts (one FITS file per overlapping HAP product) into ``path``.

        Parameters
        ----------
        coordinates : SkyCoord, str or (ra, dec)
        size : int, array-like or Quantity
            Scalar or ``(ny, nx)``; pixels or angles (default 5 pixels).
        path : str
            Destination folder (created if missing).
        inflate : bool
            Extract the zip (default) or keep it under a unique name.
        verbose : bool
            Log "Inflating..." at INFO level.
        units : str, optional
            Unit of plain-number sizes (``"px"`` default).

        Returns
        -------
        astropy.table.Table
            One str column ``Local Path``.
        """
        parsed = self._size(size, units)
        ra, dec = self._position(coordinates)
        if verbose:
            log.info("Inflating...")
        return self._download([CutoutRequest("hapcut", size=parsed, ra=ra, dec=dec)], path, inflate)


#: Ready instances; created without touching the network (URLs are read from the environment on each call).
Tesscut = TesscutClass()
Zcut = ZcutClass()
Hapcut = HapcutClass()
