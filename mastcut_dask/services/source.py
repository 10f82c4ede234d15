"""The interface between the pipeline and wherever cutouts come from.

A `Source` answers two questions for one target: which products exist (`Source.discover`),
and what their files are (`Source.fetch`). The pipeline needs nothing else: it plans from
the first answer, writes each `DeliveredFile` of the second under ``OUT/fits`` and decodes it.
The MAST web services are one source (`mastcut_dask.services.mast_source`); reading the TESS
FFI cubes directly is meant to be another, in a file beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, Callable, ContextManager, Protocol

from ..targets import Target
from .throttle import Throttle

__all__ = ["Product", "DeliveredFile", "Delivery", "Source"]

#: One product a source announced for a target: ``(key, product)``, where ``key`` is what
#: `Source.fetch` takes (a TESS sector number, a ZCut survey name) and ``product`` its name in the
#: store (``"s0008-1-1"``, ``"candels_gn_30mas"``). One key may give several products (a
#: cutout that spans two CCDs of one sector).
Product = tuple[Any, str]


@dataclass(frozen=True)
class DeliveredFile:
    """One FITS file a source delivered.

    Attributes
    ----------
    filename : str
        The file's name as the source gave it (checked: one safe path component).
    product : str
        The product (zarr group) it becomes.
    open : callable
        Opens the file's bytes for reading (valid inside the `Source.fetch` block only).
    """

    filename: str
    product: str
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class Delivery:
    """What one fetch brought: the files, or the source's "no data" message."""

    files: tuple[DeliveredFile, ...] = ()
    no_data: str | None = None


class Source(Protocol):
    """Where the cutouts of one service come from. Implementations are plain, picklable values
    (they cross to workers) and do their own input checks before any request."""

    service: str

    def needs_discovery(self, target: Target) -> bool:
        """Whether `discover` must run before `fetch` (False when the target names its product)."""
        ...

    def discover(self, target: Target, throttle: Throttle) -> tuple[Product, ...]:
        """The products covering ``target``; empty when nothing does."""
        ...

    def fetch(self, target: Target, *, sector: int | None = None, survey: str | None = None,
              throttle: Throttle) -> ContextManager[Delivery]:
        """The files of one request: one TESS ``sector`` or ZCut ``survey`` from `discover` (or
        named by the target), None for everything the source has. Files stay readable inside
        the ``with`` block only."""
        ...
