"""Object names and catalogue IDs → sky positions, through MAST's SANTA resolver.

One GET per batch of at most 30 names (``outputFormat=json``, ``resolveAll``, optional
``resolver``, repeated ``name``), as astroquery 0.4.11 sends it: ``resolveAll=True`` only
when a ``resolver`` is named and the batch holds a catalogue ID (then without ``resolver``,
so the catalogue's position can be compared with the resolver's), else ``resolveAll=False``
with the ``resolver`` if one was named. Answers are matched to the input by their lower-cased
``searchString``; catalogue IDs ("TIC 307210830", "KIC ...", "EPIC ...") take the entry of
their own catalogue (TIC, KEPLER, K2) where SANTA lists one. Results are cached per process
and per resolver URL.

`resolve_names_detailed` never raises for a single bad name: it returns the failures next
to the positions, so a pipeline can mark one target invalid and go on with the others.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import warnings
from typing import Iterable

from ..exceptions import InputWarning, InvalidQueryError, ResolverError, UnexpectedResponseError
from ..options import ServiceOptions
from .catalog import RESOLVER_BATCH_SIZE
from .http import HttpResult, perform
from .throttle import Throttle

__all__ = ["CATALOG_PREFIXES", "resolve_names", "resolve_names_detailed", "resolve_name",
           "clear_cache"]

log = logging.getLogger(__name__)

#: Name prefix → SANTA resolver name of the catalogue it refers to.
CATALOG_PREFIXES = {"TIC ": "TIC", "KIC ": "KEPLER", "EPIC ": "K2"}
_RESOLVERS = ("NED", "SIMBAD")

_cache: dict[tuple[str, str | None, str], tuple[float, float]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every resolved name (this process only)."""
    with _cache_lock:
        _cache.clear()


def _catalog_of(name: str) -> str | None:
    upper = name.upper()
    for prefix, catalog in CATALOG_PREFIXES.items():
        if upper.startswith(prefix):
            return catalog
    return None


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidQueryError(f"Object names must be strings, got {name!r}; pass positions as coordinates=.")
    if not name.strip():
        raise InvalidQueryError("The object name is empty: give a name such as 'M104' or 'TIC 307210830'.")
    return name


def _check_resolver(resolver: str | None) -> str | None:
    if resolver is None:
        return None
    upper = str(resolver).upper()
    if upper not in _RESOLVERS:
        raise ResolverError('Invalid resolver. Must be "NED" or "SIMBAD".')
    return upper


def _validate_reply(result: HttpResult) -> None:
    try:
        obj = json.loads((result.content or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UnexpectedResponseError(f"The resolver at {result.url} sent malformed JSON", url=result.url) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("resolvedCoordinate", []), (list, type(None))):
        raise UnexpectedResponseError(f"The resolver at {result.url} sent JSON without resolvedCoordinate",
                                      url=result.url)


def _position(entry: dict) -> tuple[float, float] | None:
    try:
        ra, dec = float(entry["ra"]), float(entry["decl"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        return None
    return ra % 360.0, dec


def _separation_arcsec(a: tuple[float, float], b: tuple[float, float]) -> float:
    ra1, dec1, ra2, dec2 = map(math.radians, (*a, *b))
    # Haversine: stable for the tiny separations compared here.
    h = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0


def _pick(name: str, entries: list[dict], resolver: str | None, url: str) -> tuple[float, float]:
    """The position for ``name`` among SANTA's entries, or a ResolverError."""
    key = name.lower()
    mine = [e for e in entries if isinstance(e, dict) and e.get("searchString") == key]
    catalog = _catalog_of(name)
    if resolver:
        chosen = next((e for e in mine if e.get("resolver") == resolver), None)
        if chosen is None or _position(chosen) is None:
            raise ResolverError(f'Could not resolve "{name}" to a sky position using resolver "{resolver}". '
                                'Please try another resolver or set `resolver=None` to use the first '
                                'compatible resolver.', target=name, url=url)
        pos = _position(chosen)
        cat_entry = next((e for e in mine if catalog and e.get("resolver") == catalog), None)
        if cat_entry is not None and _position(cat_entry) is not None:
            if _separation_arcsec(pos, _position(cat_entry)) > 1.0:
                warnings.warn(f"Resolver {resolver} returned coordinates that differ from MAST {catalog} catalog "
                              "by more than 1 arcsec. ", InputWarning, stacklevel=4)
        return pos
    if catalog:
        # "TIC 123" means the catalogue entry, whatever resolver SANTA happens to list first.
        for entry in mine:
            if entry.get("resolver") == catalog and _position(entry) is not None:
                return _position(entry)
    for entry in mine:
        pos = _position(entry)
        if pos is not None:
            return pos
    raise ResolverError(f'Could not resolve "{name}" to a sky position.', target=name, url=url)


def _query(batch: list[str], resolver: str | None, options: ServiceOptions,
           throttle: Throttle | None) -> tuple[list[dict], str]:
    # As astroquery 0.4.11 asks: every resolver's answer (resolveAll) only when a resolver is named
    # and a catalogue ID is in the batch, so that the resolver's position can be checked against
    # the catalogue's. Without a resolver SANTA's first answer for "TIC n" is the TIC entry itself;
    # asking for all would only make the service query SIMBAD and NED for nothing.
    resolve_all = bool(resolver) and any(_catalog_of(n) for n in batch)
    params: list[tuple[str, str]] = [("outputFormat", "json"), ("resolveAll", str(resolve_all))]
    if resolver and not resolve_all:
        params.append(("resolver", resolver))
    params += [("name", n) for n in batch]
    result = perform("GET", options.resolver_url, options=options, throttle=throttle, params=params,
                     headers={"Accept": "application/json, text/plain"}, validate=_validate_reply,
                     max_body=64 * 1024 * 1024)
    obj = json.loads(result.content.decode("utf-8"))
    return list(obj.get("resolvedCoordinate") or []), result.url


def resolve_names_detailed(names: Iterable[str], options: ServiceOptions, throttle: Throttle | None = None, *,
                           resolver: str | None = None,
                           ) -> tuple[dict[str, tuple[float, float]], dict[str, ResolverError]]:
    """Resolve many names; failures are returned, not raised.

    Parameters
    ----------
    names : iterable of str
        Object names or catalogue IDs. Duplicates are asked once.
    options : ServiceOptions
        ``resolver_url`` and the HTTP options.
    throttle : Throttle, optional
        Budget the resolver requests share.
    resolver : {"NED", "SIMBAD"}, optional
        Use this resolver's answer only.

    Returns
    -------
    positions : dict
        Name (as given) → ``(ra, dec)`` ICRS degrees.
    errors : dict
        Name → `ResolverError` for each name that could not be placed.

    Raises
    ------
    InvalidQueryError
        A name that is not a non-empty string (before any request).
    ResolverError
        An invalid ``resolver``.
    ServiceUnavailableError, UnexpectedResponseError
        The resolver itself failed after retries.
    """
    names = [_check_name(n) for n in names]
    resolver = _check_resolver(resolver)
    positions: dict[str, tuple[float, float]] = {}
    errors: dict[str, ResolverError] = {}
    todo: list[str] = []
    with _cache_lock:
        for name in names:
            hit = _cache.get((options.resolver_url, resolver, name.strip().lower()))
            if hit is not None:
                positions[name] = hit
            elif name not in todo:
                todo.append(name)
    for start in range(0, len(todo), RESOLVER_BATCH_SIZE):
        batch = todo[start:start + RESOLVER_BATCH_SIZE]
        entries, url = _query(batch, resolver, options, throttle)
        for name in batch:
            try:
                pos = _pick(name, entries, resolver, url)
            except ResolverError as err:
                errors[name] = err
                continue
            positions[name] = pos
            with _cache_lock:
                _cache[(options.resolver_url, resolver, name.strip().lower())] = pos
        log.debug("resolved %d of %d names via %s", len(batch) - sum(n in errors for n in batch), len(batch), url)
    return positions, errors


def resolve_names(names: Iterable[str], options: ServiceOptions, throttle: Throttle | None = None, *,
                  resolver: str | None = None, errors: str = "raise") -> dict[str, tuple[float, float]]:
    """Resolve names to ``(ra, dec)``; see `resolve_names_detailed`.

    Parameters
    ----------
    errors : {"raise", "ignore"}
        ``"raise"``: the first unresolvable name raises its `ResolverError` (naming it);
        ``"ignore"``: unresolvable names are left out of the result.
    """
    if errors not in ("raise", "ignore"):
        raise InvalidQueryError(f"errors must be 'raise' or 'ignore', got {errors!r}")
    positions, failures = resolve_names_detailed(names, options, throttle, resolver=resolver)
    if failures and errors == "raise":
        raise next(iter(failures.values()))
    return positions


def resolve_name(name: str, options: ServiceOptions, throttle: Throttle | None = None, *,
                 resolver: str | None = None) -> tuple[float, float]:
    """Resolve one name to ``(ra, dec)``; raises `ResolverError` ("Could not resolve "X" to a sky position.")."""
    return resolve_names([name], options, throttle, resolver=resolver)[name]
