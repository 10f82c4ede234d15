"""The services' operations as plain functions: sector and survey discovery, cutout downloads,
and what to do with a downloaded archive.

Arguments are plain and picklable, so the Dask pipeline calls these on workers; the
astroquery-style clients call them too.

* `query_sectors` – TESSCut sector discovery → list of dicts;
* `query_surveys` – ZCut survey discovery → list of str;
* `download_cutout_archive` – one cutout request streamed to a verified zip on disk
  (`CutoutArchive`) or the service's "no data" (`NoData`);
* `fetch_cutout_members` – the in-memory (POST) variant → ``[(name, bytes)]`` or `NoData`;
* `read_cutout_members`, `extract_cutout_archive`, `open_fits_members` – what to do with an archive.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import uuid
import zipfile
from typing import Any, Iterable, Iterator

from astropy.io import fits

from ..exceptions import InvalidQueryError, MastcutError, UnexpectedResponseError
from ..options import ServiceOptions
from .archive import (
    ArchiveLimits,
    CutoutArchive,
    NoData,
    extract_zip,
    no_data_message,
    parse_json,
    read_zip_members,
    sniff_bytes,
    verify_zip,
)
from .catalog import endpoint_url, get_service
from .http import KEEP_TEMPORARY, HttpResult, perform
from .request import CutoutRequest, cutout_endpoint, cutout_params, moving_sector_params, sector_params, survey_params
from .throttle import Throttle

__all__ = [
    "query_sectors",
    "query_surveys",
    "download_cutout_archive",
    "fetch_cutout_members",
    "read_cutout_members",
    "extract_cutout_archive",
    "open_fits_members",
]

log = logging.getLogger(__name__)

#: Largest JSON reply (sector or survey list) read into memory.
_MAX_JSON_REPLY = 64 * 1024 * 1024


@contextlib.contextmanager
def _about(target: str | None) -> Iterator[None]:
    """Label errors with the target they concern (workers send them home to a manifest)."""
    try:
        yield
    except MastcutError as err:
        if err.target is None:
            err.target = target
        raise


def _json_validator(expected: str):
    def validate(result: HttpResult) -> None:
        body = result.content or b""
        sniff_bytes(body[:512], url=result.url)
        kind, obj = parse_json(body, url=result.url)
        # A sector reply may carry a "msg": next to its "results" list (as HAPCut sends them), or
        # alone when MAST has nothing for the position. astroquery reads .get("results", []) and
        # so takes the latter for "no sector"; it is an outcome, not a garbled reply to retry.
        # A survey reply with only a "msg" is read the same way.
        if kind == "nodata" and obj.get(expected) is None:
            return
        if kind != expected and not isinstance(obj.get(expected), list):
            raise UnexpectedResponseError(f"{result.url} sent a {kind!r} reply where {expected!r} was expected",
                                          url=result.url)
    return validate


def query_sectors(options: ServiceOptions, *, ra: float | None = None, dec: float | None = None,
                  radius: float = 0.0, obj_id: str | None = None, obj_type: str | None = None,
                  throttle: Throttle | None = None) -> list[dict]:
    """TESS sectors, cameras and CCDs covering a position (or a moving target's path).

    Parameters
    ----------
    options : ServiceOptions
    ra, dec : float, optional
        ICRS degrees (fixed targets).
    radius : float
        Search radius in degrees.
    obj_id, obj_type : str, optional
        Moving target name and type (instead of ra/dec).
    throttle : Throttle, optional

    Returns
    -------
    list of dict
        ``{"sectorName": str, "sector": int, "camera": int, "ccd": int}`` in the service's order;
        empty when nothing covers the target, including a reply that only carries a ``msg``
        (logged at INFO level; `TesscutClass.get_sectors` turns it into a `NoResultsWarning`).
    """
    if obj_id is not None:
        role, params = "mt_sector", moving_sector_params(obj_id, obj_type)
    else:
        if ra is None or dec is None:
            raise InvalidQueryError("query_sectors needs ra and dec, or obj_id for a moving target.")
        role, params = "sector", sector_params(ra, dec, radius)
    url = endpoint_url(options.base_url, "tesscut", role)
    with _about(obj_id if obj_id is not None else f"({ra}, {dec})"):
        result = perform("POST", url, options=options, throttle=throttle, data=params,
                         headers={"Accept": "application/json"}, validate=_json_validator("results"),
                         max_body=_MAX_JSON_REPLY)
    _, obj = parse_json(result.content or b"", url=result.url)
    entries = obj.get("results")
    if entries is None:
        log.info("No TESS sector for %s: the service says %r", obj_id if obj_id is not None else f"({ra}, {dec})",
                 obj.get("msg"))
        return []
    rows = []
    for entry in entries:
        try:
            rows.append({"sectorName": str(entry["sectorName"]), "sector": int(entry["sector"]),
                         "camera": int(entry["camera"]), "ccd": int(entry["ccd"])})
        except (KeyError, TypeError, ValueError):
            raise UnexpectedResponseError(f"Malformed sector entry {entry!r} from {result.url}",
                                          url=result.url, status=result.status) from None
    return rows


def query_surveys(options: ServiceOptions, *, ra: float, dec: float, radius: float = 0.0,
                  throttle: Throttle | None = None) -> list[str]:
    """ZCut deep-field surveys covering a position.

    Returns
    -------
    list of str
        Survey names, in the service's order; empty when none covers the position, including
        a reply that only carries a ``msg`` (logged at INFO level).
    """
    url = endpoint_url(options.base_url, "zcut", "survey")
    with _about(f"({ra}, {dec})"):
        result = perform("POST", url, options=options, throttle=throttle, data=survey_params(ra, dec, radius),
                         headers={"Accept": "application/json"}, validate=_json_validator("surveys"),
                         max_body=_MAX_JSON_REPLY)
    _, obj = parse_json(result.content or b"", url=result.url)
    surveys = obj.get("surveys")
    if surveys is None:
        log.info("No ZCut survey at (%s, %s): the service says %r", ra, dec, obj.get("msg"))
        return []
    if not isinstance(surveys, list) or not all(isinstance(s, str) for s in surveys):
        raise UnexpectedResponseError(f"Non-string survey names from {result.url}", url=result.url)
    return list(surveys)


def _archive_validator(limits: ArchiveLimits):
    def validate(result: HttpResult) -> None:
        kind = sniff_bytes(result.head(), url=result.url)
        source = result.path if result.path is not None else io.BytesIO(result.content or b"")
        if kind == "zip":
            verify_zip(source, limits, url=result.url)
        else:
            no_data_message(result.path if result.path is not None else (result.content or b""), url=result.url)
    return validate


def download_cutout_archive(options: ServiceOptions, request: CutoutRequest, dest_dir: str, *,
                            throttle: Throttle | None = None,
                            final_name: str | None = None) -> CutoutArchive | NoData:
    """GET one cutout and keep the verified zip in ``dest_dir``.

    The body streams to a temporary file and is renamed into place only after it has been
    recognised (zip or "no data" JSON) and, for a zip, fully verified (`~mastcut_dask.services.archive.verify_zip`);
    corrupt, truncated or HTML bodies are retried by the HTTP layer.

    Parameters
    ----------
    options : ServiceOptions
    request : CutoutRequest
    dest_dir : str
        Folder for the zip (created if missing).
    throttle : Throttle, optional
    final_name : str, optional
        Name of the zip in ``dest_dir``; default ``<service>_<random>.zip`` (never from the clock).

    Returns
    -------
    CutoutArchive or NoData

    Raises
    ------
    UnsafeArchiveError
        Traversal, links or bomb: the archive is deleted, nothing is extracted.
    ServiceUnavailableError, UnexpectedResponseError
        After the last try.
    """
    spec = get_service(request.service)
    url = endpoint_url(options.base_url, spec.name, cutout_endpoint(request))
    params = cutout_params(request, download=True)
    limits = ArchiveLimits.from_options(options)
    name = final_name or f"{spec.zip_prefix}{uuid.uuid4().hex}.zip"
    if os.path.basename(name) != name or name in (".", ".."):
        raise InvalidQueryError(f"final_name must be a plain file name, got {final_name!r}")
    os.makedirs(dest_dir, exist_ok=True)
    log.info("Downloading %s %s", spec.name, request.describe())
    with _about(request.describe()):
        result = perform("GET", url, options=options, throttle=throttle, params=params, dest_dir=dest_dir,
                         final_name=KEEP_TEMPORARY, tmp_prefix=spec.zip_prefix,
                         validate=_archive_validator(limits))
    part = result.path
    try:
        if sniff_bytes(result.head(), url=result.url) == "json":
            # A "no data" reply never takes the archive's name, not even for a moment.
            return no_data_message(part, url=result.url)
        members = _names(part)  # verified by the validator
        final = os.path.join(dest_dir, name)
        os.replace(part, final)
        part = None
    finally:
        if part is not None:
            os.unlink(part)
    return CutoutArchive(path=final, members=members, url=result.url, n_bytes=result.n_bytes)


def _names(path: str) -> tuple[str, ...]:
    with zipfile.ZipFile(path) as zf:
        return tuple(i.filename for i in zf.infolist() if not i.is_dir())


def fetch_cutout_members(options: ServiceOptions, request: CutoutRequest, *,
                         throttle: Throttle | None = None) -> list[tuple[str, bytes]] | NoData:
    """POST one cutout request (as astroquery's ``get_cutouts``) and return its members in memory.

    Returns
    -------
    list of (str, bytes) or NoData
        Member names and contents in archive order, or the "no data" reply.
    """
    spec = get_service(request.service)
    url = endpoint_url(options.base_url, spec.name, cutout_endpoint(request))
    params = cutout_params(request, download=False)
    limits = ArchiveLimits.from_options(options)
    body: dict[str, Any] = {"json_body": params} if isinstance(params, dict) else {"data": params}
    got: dict[str, Any] = {}

    def validate(result: HttpResult) -> None:
        # Read the members while validating: one decompression, and a corrupt body is still retried.
        content = result.content or b""
        if sniff_bytes(content[:512], url=result.url) == "json":
            got["value"] = no_data_message(content, url=result.url)
        else:
            got["value"] = read_zip_members(io.BytesIO(content), limits, url=result.url)

    with _about(request.describe()):
        perform("POST", url, options=options, throttle=throttle, headers={"Accept": "application/json"},
                validate=validate, **body)
    return got["value"]


def read_cutout_members(archive: CutoutArchive, options: ServiceOptions | None = None) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every member of a downloaded archive (verified again, bounded)."""
    limits = ArchiveLimits.from_options(options or ServiceOptions())
    return read_zip_members(archive.path, limits, url=archive.url)


def extract_cutout_archive(archive: CutoutArchive, dest_dir: str, options: ServiceOptions | None = None, *,
                           remove_zip: bool = True) -> list[str]:
    """Extract a downloaded archive's members into ``dest_dir`` (temp name then rename).

    Returns
    -------
    list of str
        The path of each member as written under ``dest_dir``.
    """
    limits = ArchiveLimits.from_options(options or ServiceOptions())
    paths = extract_zip(archive.path, dest_dir, archive.members, limits, url=archive.url)
    if remove_zip:
        os.unlink(archive.path)
    return paths


def open_fits_members(members: Iterable[tuple[str, bytes]]) -> list:
    """Open ``(name, bytes)`` pairs as `~astropy.io.fits.HDUList` objects, ``.filename`` set to the name
    (as astroquery does)."""
    out = []
    for name, data in members:
        hdul = fits.open(io.BytesIO(data))
        hdul.filename = name  # astroquery keeps the member name here
        out.append(hdul)
    return out
