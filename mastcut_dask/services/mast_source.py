"""MAST's cutout services (TESSCut, ZCut, HAPCut over HTTP) as a `Source` for the pipeline."""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator

from ..exceptions import InvalidQueryError, UnsafeArchiveError
from ..options import ServiceOptions
from ..targets import Target, check_name
from .archive import NoData
from .products import is_tess_product, product_from_sector_name, product_name, tess_product_from_header
from .queries import download_cutout_archive, query_sectors, query_surveys
from .request import CutoutRequest
from .source import DeliveredFile, Delivery, Product
from .throttle import Throttle

__all__ = ["MastServiceSource"]

_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit")


@dataclass(frozen=True)
class MastServiceSource:
    """One of MAST's cutout services, reached at ``options.base_url`` (MAST or an emulator).

    Attributes
    ----------
    service : {"tesscut", "zcut", "hapcut"}
    options : ServiceOptions
    """

    service: str
    options: ServiceOptions = ServiceOptions()

    def needs_discovery(self, target: Target) -> bool:
        """TESSCut without a named sector and ZCut without a named survey ask first; HAPCut never."""
        if self.service == "tesscut":
            return target.sector is None
        if self.service == "zcut":
            return target.survey is None
        return False

    def discover(self, target: Target, throttle: Throttle) -> tuple[Product, ...]:
        """TESSCut: ``(sector, "s0008-1-1")`` per sector/camera/CCD; ZCut: ``(survey, survey)``."""
        if self.service == "tesscut":
            if target.moving:
                rows = query_sectors(self.options, obj_id=target.name, obj_type=target.mt_type, throttle=throttle)
            else:
                rows = query_sectors(self.options, ra=target.ra, dec=target.dec, throttle=throttle)
            return tuple((int(r["sector"]), product_from_sector_name(r["sectorName"])) for r in rows)
        if self.service == "zcut":
            surveys = query_surveys(self.options, ra=target.ra, dec=target.dec, throttle=throttle)
            return tuple((str(s), str(s)) for s in surveys)
        raise InvalidQueryError(f"{self.service} has no discovery step")

    @contextlib.contextmanager
    def fetch(self, target: Target, *, sector: int | None = None, survey: str | None = None,
              throttle: Throttle) -> Iterator[Delivery]:
        """Download one cutout archive (verified before anything is read) into a private
        temporary folder, removed when the block ends; yields its FITS members."""
        wire = dataclasses.replace(CutoutRequest.for_target(self.service, target), sector=sector, survey=survey,
                                   cutout_format="fits" if self.service == "zcut" else None)
        with tempfile.TemporaryDirectory(prefix="mastcut-") as tmp:
            got = download_cutout_archive(self.options, wire, tmp, throttle=throttle)
            if isinstance(got, NoData):
                yield Delivery(no_data=got.message or "no data")
                return
            with zipfile.ZipFile(got.path) as zf:
                files = self._members(zf, got.members, got.url)
                yield Delivery(files=files) if files else Delivery(no_data="the archive held no FITS file")

    def _members(self, zf: zipfile.ZipFile, members: Any, url: str) -> tuple[DeliveredFile, ...]:
        files = []
        seen = set()
        for member in members:
            filename = posixpath.basename(member)
            if not filename.lower().endswith(_FITS_SUFFIXES):
                continue
            check_name(filename, "file name from the server", error=UnsafeArchiveError)
            if filename in seen:
                raise UnsafeArchiveError(f"archive from {url} holds {filename!r} twice", url=url)
            seen.add(filename)
            product = product_name(self.service, filename)
            if self.service == "tesscut" and not is_tess_product(product):
                # A moving target's TPF is named after the object; its header names the CCD.
                with zf.open(member) as fh:
                    product = tess_product_from_header(fh) or product
            files.append(DeliveredFile(filename, product, lambda member=member: zf.open(member)))
        return tuple(files)
