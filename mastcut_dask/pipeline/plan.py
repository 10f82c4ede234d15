"""Planning a run on the client, before anything is sent: the target list read and checked
against the service, and the output location checked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..exceptions import InvalidQueryError
from ..services import check_size
from ..store import ManifestRow, resolve_out
from ..targets import read_targets

__all__ = ["Plan", "plan_targets", "wants_lightcurve", "normalise_out"]


@dataclass(frozen=True)
class Plan:
    """What a run will work on: the targets that passed every check, and the ``invalid`` manifest
    rows of those that did not (each with its reason)."""

    targets: tuple
    invalid: tuple


def plan_targets(targets: Any, *, service: str, size: Any, sector: int | None, survey: str | None,
                 storage_options: Mapping[str, Any] | None) -> Plan:
    """Read the target list and refuse, as ``invalid`` rows, what this service cannot serve
    (sizes over its limit, moving targets off TESSCut, a sector or survey it does not have)."""
    listing = read_targets(targets, storage_options=storage_options)
    listing = listing.with_defaults(size=size, sector=sector, survey=survey)
    invalid = [ManifestRow(bad.target_id, service, "", "invalid", error=bad.reason) for bad in listing.invalid]
    good = []
    for target in listing.targets:
        # Rows that are fine as rows but wrong for this service: refused here, before any request.
        try:
            check_size(service, target.size)
        except InvalidQueryError as err:
            invalid.append(ManifestRow(target.target_id, service, "", "invalid", error=f"size: {err}"))
            continue
        if target.moving and service != "tesscut":
            reason = f"moving target {target.name!r}: only TESSCut serves moving targets"
        elif target.sector is not None and service != "tesscut":
            reason = f"sector {target.sector} given, but {service} has no sectors"
        elif target.survey is not None and service != "zcut":
            reason = f"survey {target.survey!r} given, but {service} has no surveys"
        else:
            good.append(target)
            continue
        invalid.append(ManifestRow(target.target_id, service, "", "invalid", error=reason))
    return Plan(tuple(good), tuple(invalid))


def wants_lightcurve(lightcurve: Any) -> bool:
    """Whether ``fetch_cutouts(lightcurve=...)`` asks for light curves."""
    # Not ``bool(lightcurve)``: an aperture may be a numpy mask, which has no truth value.
    return lightcurve is not None and lightcurve is not False


def normalise_out(out: str) -> str:
    """OUT as workers get it, refused now if it cannot be written.

    Workers may run elsewhere: a relative local path is made absolute on the client (file://
    URLs become plain paths).
    """
    path = resolve_out(out)
    if "://" in path or "::" in path:
        return path.rstrip("/")
    # A local OUT that cannot be a folder would otherwise only fail at the first manifest row,
    # deep inside the run: refuse it here, before anything is sent.
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InvalidQueryError(f"out={out!r}: {parent} is not a folder; choose another output location.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidQueryError(f"out={out!r}: the folder {parent} is not writable; choose another output location.")
    return path
