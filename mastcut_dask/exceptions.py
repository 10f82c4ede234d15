"""The one error family of mastcut_dask, and its warnings.

Every exception pickles (Dask workers send them back to the client) and carries the
target and URL it concerns where there is one. This module imports nothing from the package.
"""

from __future__ import annotations

__all__ = [
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


class MastcutError(Exception):
    """Base of every error raised by mastcut_dask.

    Parameters
    ----------
    message : str
        What went wrong and, where possible, what to change.
    target : str, optional
        The target (name, ID or position) the error concerns.
    url : str, optional
        The URL the error concerns.
    """

    def __init__(self, message: str = "", *, target: str | None = None, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.target = target
        self.url = url

    def __reduce__(self):
        # Keyword-only attributes are lost by the default Exception pickling.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls, message, state):
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class InvalidQueryError(MastcutError, ValueError):
    """Bad input: target, size, sector, survey or option. Raised before any request."""


class ResolverError(MastcutError, LookupError):
    """An object name the resolver cannot place on the sky."""


class ServiceError(MastcutError):
    """The service failed after all retries.

    Attributes
    ----------
    status : int or None
        The last HTTP status seen (None for connection errors and timeouts).
    attempts : int
        How many tries were made.
    """

    def __init__(self, message: str = "", *, target: str | None = None, url: str | None = None,
                 status: int | None = None, attempts: int = 1):
        super().__init__(message, target=target, url=url)
        self.status = status
        self.attempts = attempts


class ServiceUnavailableError(ServiceError):
    """503/504/429 answers, connection errors or timeouts, still there after the last retry."""


class UnexpectedResponseError(ServiceError):
    """A body that is neither a zip archive nor one of the known JSON shapes."""


class UnsafeArchiveError(MastcutError):
    """An archive refused: path traversal, links, too large, too many members."""


class DecodeError(MastcutError):
    """A FITS file missing what its kind needs (not a TPF, not a cutout)."""


class NoResultsWarning(UserWarning):
    """Nothing found: no sector, no survey, or the service's "no data" message (as astroquery)."""


class InputWarning(UserWarning):
    """Input accepted with a change, e.g. a size with more than two elements."""
