"""What crosses from the client to the workers: frozen dataclasses of plain values only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import ServiceOptions, ThrottleOptions
from ..services import MastServiceSource, Source
from ..targets import Target

__all__ = ["RunSettings", "FetchRequest", "StoredFits", "FetchResult", "request_record"]


@dataclass(frozen=True)
class RunSettings:
    """Everything a worker needs for one run, as plain values.

    Attributes
    ----------
    service : {"tesscut", "zcut", "hapcut"}
    out : str
        The store: local path or fsspec URL.
    storage_options : tuple of (str, value) pairs
        fsspec options for ``out`` (a tuple, so the record stays hashable).
    service_options : ServiceOptions
    throttle_options : ThrottleOptions
    """

    service: str
    out: str
    storage_options: tuple[tuple[str, Any], ...] = ()
    service_options: ServiceOptions = ServiceOptions()
    throttle_options: ThrottleOptions = ThrottleOptions()

    @property
    def storage(self) -> dict[str, Any]:
        """``storage_options`` as a dict."""
        return dict(self.storage_options)

    @property
    def source(self) -> Source:
        """Where this run's cutouts come from."""
        return MastServiceSource(self.service, self.service_options)


@dataclass(frozen=True)
class FetchRequest:
    """One fetch: a target and, where known, the one sector or survey to ask for.

    Attributes
    ----------
    target : Target
        Resolved (a position, or a moving target's name).
    sector : int or None
        TESSCut sector (None: every sector the service has).
    survey : str or None
        ZCut survey (None: every survey).
    products : tuple of str
        Products discovery announced for this request (empty when unknown in advance).
    record : str
        `request_record` of the target as listed (JSON), kept with each stored group.
    """

    target: Any
    sector: int | None = None
    survey: str | None = None
    products: tuple[str, ...] = ()
    record: str = ""


@dataclass(frozen=True)
class StoredFits:
    """A FITS file a fetch task stored under ``OUT/fits``, and what became of its dataset.

    ``zarr_group`` is set once the decoded dataset is stored; ``error`` says why decoding or
    storing failed (the FITS file is kept either way).
    """

    filename: str
    product: str
    fits_path: str
    n_bytes: int
    sha256: str
    zarr_group: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """What a fetch task brings home: the stored files, or the service's "no data" message."""

    files: tuple[StoredFits, ...] = ()
    no_data: str | None = None


def request_record(service: str, target: Target) -> dict[str, Any]:
    """What a stored cutout was made from, beyond its product: size, and position or name.

    Kept with each zarr group, so that rerunning into the same OUT with another size, or with a
    target moved under the same id, fetches again instead of taking the old cutout as done.
    A target listed by name is recorded by its name (as listed, before resolution), so that a
    rerun can tell its cutouts are current without asking the resolver again.
    """
    size = target.size
    record: dict[str, Any] = {"service": service, "size": [size.y, size.x, size.units]}
    if target.moving:
        record.update(object=target.name, object_type=target.mt_type)
    elif target.resolved:
        record.update(ra=float(target.ra), dec=float(target.dec))
    else:
        record.update(name=target.name)
    return record
