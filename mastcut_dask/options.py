"""Frozen dataclasses of plain values: the only configuration that crosses to Dask workers.

Workers never read module globals or environment variables; whatever they need travels
inside these objects.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

from .exceptions import InvalidQueryError

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


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real)


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
    request_timeout : float
        Seconds one try may take in all, body included (default 600, astroquery's
        ``conf.timeout``). ``read_timeout`` alone lets a server that drips a byte now and then
        hold a request, and its throttle lease, for ever; past this deadline the try is cut and
        retried as a timeout.
    max_retries : int
        Retries after the first try for 429/503/504, connection errors, timeouts and
        truncated or garbled bodies.
    backoff_base, backoff_cap : float
        Exponential backoff: ``min(cap, base * 2**attempt)`` seconds, with full jitter;
        a ``Retry-After`` header wins when it asks for longer, even beyond the cap.
    max_retry_after : float
        Longest ``Retry-After`` honoured (default 120 s). A server asking for longer is not
        retried: the request fails with `~mastcut_dask.exceptions.ServiceUnavailableError`
        at once rather than sleeping for hours or coming back before it was asked to.
    max_archive_bytes, max_archive_members, max_compression_ratio
        Bounds on what an archive from the server may unpack to.
    """

    base_url: str = DEFAULT_BASE_URL
    resolver_url: str = DEFAULT_RESOLVER_URL
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    request_timeout: float = 600.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 120.0
    max_archive_bytes: int = 4 * 1024**3
    max_archive_members: int = 10_000
    max_compression_ratio: float = 1000.0

    def __post_init__(self) -> None:
        # Checked here, on the client, so that a bad value fails before any task is built.
        if isinstance(self.request_timeout, bool) or not (_is_number(self.request_timeout)
                                                          and math.isfinite(self.request_timeout)
                                                          and self.request_timeout > 0):
            raise InvalidQueryError(f"request_timeout must be a positive number of seconds, got "
                                    f"{self.request_timeout!r}.")
        if isinstance(self.max_retry_after, bool) or not (_is_number(self.max_retry_after)
                                                          and math.isfinite(self.max_retry_after)
                                                          and self.max_retry_after >= 0):
            raise InvalidQueryError(f"max_retry_after must be a number of seconds >= 0, got "
                                    f"{self.max_retry_after!r}.")

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
        How long the scheduler waits for the leases of a holder that is gone (a worker that
        died or was removed) before giving them to others; meanwhile requests wait behind
        them. A live holder refreshes its leases every ``lease_timeout / 5`` seconds, so this
        does not bound a request's length: it need only exceed the longest stall of a
        worker's event loop. Default 60 s (distributed's own default is 30 s).
    release_delay : float
        Seconds a request's place stays taken after its reply's last byte is read. 0 by
        default: a server stops counting a request when it has sent the reply (the emulator
        just before its last byte), and the next request needs a network trip to get there.
        Set it (e.g. 0.01) for a service seen to answer 503 at exactly ``max_concurrency``
        requests because it counts a finished request a moment longer.
    """

    max_concurrency: int = 10
    max_rate: float = 5.0
    name: str = "mastcut-throttle"
    lease_timeout: float = 60.0
    release_delay: float = 0.0
