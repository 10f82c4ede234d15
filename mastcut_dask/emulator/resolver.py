"""The emulator's name resolver, shaped like MAST's SANTA service (``/Santa-war/query``).

Answers ``{"resolvedCoordinate": [...], "status": ""}`` where each entry carries ``searchString``
(the name as asked, lower-cased), ``resolver``, ``cached``, ``resolverTime``, ``searchRadius``,
``canonicalName``, ``ra`` and ``decl`` (degrees), and sometimes ``objectType`` and sizes.

Where names come from, first match wins:

1. the real SANTA reply recorded by astroquery (``data/santa_resolver.json``: TIC 307210830,
   Barnard's Star, M1, M101, M103, M8, M10), entries unchanged;
2. a few pinned well-known objects (:data:`PINNED`, e.g. M104, the HAPCut/ZCut example fields);
3. ``TIC <n>``: the procedural sky's position for that TIC ID
   (:func:`mastcut_dask.emulator.tess.tic_position`), resolver ``TIC``.

Anything else (including moving targets such as "Eleonora" or "Ceres") gives no entry, which
clients turn into "Could not resolve ... to a sky position".

Parameters, as astroquery sends them: repeated ``name``, ``outputFormat=json``,
``resolveAll=True|False`` and optionally ``resolver`` (repeatable). With ``resolveAll`` false
and no ``resolver`` only the first entry per name is returned; with ``resolver`` only entries
from those resolvers.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources

from .errors import BadRequest

__all__ = ["PINNED", "resolve_names", "santa_reply"]

# name (lower case) -> entries. Positions are the catalogue J2000 positions of these objects.
PINNED: dict[str, list[dict]] = {
    "m104": [
        {"resolver": "SIMBAD", "canonicalName": "M 104", "ra": 189.99763391666665,
         "decl": -11.623054444444446, "objectType": "Seyfert1"},
        {"resolver": "NED", "canonicalName": "MESSIER 104", "ra": 189.99763, "decl": -11.62305,
         "objectType": "G"},
    ],
    "ngc 4594": [
        {"resolver": "SIMBAD", "canonicalName": "M 104", "ra": 189.99763391666665,
         "decl": -11.623054444444446, "objectType": "Seyfert1"},
    ],
}

_TIC_RE = re.compile(r"^\s*tic\s*(\d{1,12})\s*$", re.IGNORECASE)
_MAX_NAMES = 1000


@functools.lru_cache(maxsize=1)
def _recorded() -> tuple[dict, ...]:
    text = resources.files("mastcut_dask").joinpath("data/santa_resolver.json").read_text("utf-8")
    return tuple(json.loads(text)["resolvedCoordinate"])


def _entries_for(name: str, seed: int) -> list[dict]:
    key = name.strip().lower()
    found = [dict(e) for e in _recorded() if e.get("searchString") == key]
    if found:
        return found
    if key in PINNED:
        return [{"searchString": key, "cached": True, "resolverTime": 1, "searchRadius": -1.0,
                 **e} for e in PINNED[key]]
    match = _TIC_RE.match(key)
    if match:
        from . import tess  # the sky owns the TIC -> position mapping

        tic_id = int(match.group(1))
        pos = tess.tic_position(tic_id, seed=seed)
        if pos is not None:
            ra, dec = pos
            return [{"searchString": key, "resolver": "TIC", "cached": False, "resolverTime": 1,
                     "searchRadius": 0.000333, "canonicalName": f"TIC {tic_id}",
                     "ra": float(ra), "decl": float(dec)}]
    return []


def resolve_names(names: list[str], *, resolve_all: bool = False,
                  resolvers: list[str] | None = None, seed: int = 0) -> list[dict]:
    """Resolve object names to SANTA entries.

    Parameters
    ----------
    names : list of str
        Object names, e.g. ``"M104"`` or ``"TIC 32449963"``.
    resolve_all : bool
        Return the entries of every resolver, not only the first.
    resolvers : list of str, optional
        Keep only entries from these resolvers (upper-case names such as NED, SIMBAD, TIC).
    seed : int
        Seed of the procedural sky (for TIC IDs).

    Returns
    -------
    list of dict
        The entries, in the order of ``names``.
    """
    if len(names) > _MAX_NAMES:
        raise BadRequest(f"Too many names: at most {_MAX_NAMES} per request.")
    wanted = {r.strip().upper() for r in resolvers or [] if r.strip()}
    out: list[dict] = []
    for name in names:
        entries = _entries_for(name, seed)
        if wanted:
            entries = [e for e in entries if str(e.get("resolver", "")).upper() in wanted]
        elif not resolve_all:
            entries = entries[:1]
        out.extend(entries)
    return out


def santa_reply(params, seed: int = 0) -> dict:
    """The JSON reply for one resolver request.

    Parameters
    ----------
    params : mastcut_dask.emulator.params.RequestParams
        The parsed request.
    seed : int
        Seed of the procedural sky.
    """
    names = [n for n in params.get_all("name") if n.strip()]
    if not names:
        raise BadRequest("Missing required parameter: name")
    fmt = (params.get("outputFormat") or "json").lower()
    if fmt != "json":
        raise BadRequest(f"Unsupported outputFormat {fmt!r}: only json is served.")
    resolvers = [r for v in params.get_all("resolver")
                 for r in v.strip("[]").replace("'", "").split(",")]
    return {"resolvedCoordinate": resolve_names(names, resolve_all=params.flag("resolveAll"),
                                                resolvers=resolvers, seed=seed),
            "status": ""}
