"""Frozen dataclasses of plain values: the only configuration that crosses to Dask workers.

Workers never read module globals or environment variables; whatever they need travels
inside these objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_RESOLVER_URL",
    "ServiceOptions",
    "ThrottleOptions",
    "resolve_base_url",
    "resolve_resolver_url",
]

DEFAULT_BASE_URL = "https://mast.stsci.edu"
DEFAULT_RESOLVER_URL = "http://mastresolver.stsci.edu/Santa-war/query"


def resolve_base_url(base_url: str | None = None) -> str:
    """The MAST base URL: the argument, else ``$MASTCUT_MAST_URL``, else the public service."""
    return (base_url or os.environ.get("MASTCUT_MAST_URL") or DEFAULT_BASE_URL).rstrip("/")


def resolve_resolver_url(resolver_url: str | None = None) -> str:
    """The SANTA resolver URL: the argument, else ``$MASTCUT_RESOLVER_URL``, else the public one."""
    return resolver_url or os.environ.get("MASTCUT_RESOLVER_URL") or DEFAULT_RESOLVER_URL


@dataclass(frozen=True)
class ServiceOptions:
    """How to talk to MAST: where, how long to wait, how often to retry.

    Attributes
    ----------
    base_url : str
        Root of the services, e.g. ``https://mast.stsci.edu`` or an emulator's ``.url``.
    resolver_url : str
        The SANTA name resolver's query URL.
    connect_timeout, read_timeout : float
        Seconds to wait for a connection, and between bytes of a response.
    max_retries : int
        Retries after the first try for 429/503/504, connection errors, timeouts and
        truncated or garbled bodies.
    backoff_base, backoff_cap : float
        Exponential backoff: ``min(cap, base * 2**attempt)`` seconds, with full jitter;
        a ``Retry-After`` header wins when it asks for longer.
    max_archive_bytes, max_archive_members, max_compression_ratio
        Bounds on what an archive from the server may unpack to.
    """

    base_url: str = DEFAULT_BASE_URL
    resolver_url: str = DEFAULT_RESOLVER_URL
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_archive_bytes: int = 4 * 1024**3
    max_archive_members: int = 10_000
    max_compression_ratio: float = 1000.0

    @classmethod
    def from_user(cls, base_url: str | None = None, resolver_url: str | None = None, **kwargs) -> "ServiceOptions":
        """Options with the environment defaults applied to the URLs."""
        return cls(base_url=resolve_base_url(base_url), resolver_url=resolve_resolver_url(resolver_url), **kwargs)


@dataclass(frozen=True)
class ThrottleOptions:
    """The request budget shared by every worker of a run.

    Attributes
    ----------
    max_concurrency : int
        Requests in flight at once, cluster-wide (MAST allows 10 per user).
    max_rate : float
        Request starts per second, cluster-wide; 0 switches the rate limit off.
    name : str
        Name of the distributed primitives, so every worker finds the same ones.
    lease_timeout : float
        Seconds after which the scheduler reclaims a lease from a dead worker; must
        exceed the longest request.
    """

    max_concurrency: int = 10
    max_rate: float = 5.0
    name: str = "mastcut-throttle"
    lease_timeout: float = 900.0
