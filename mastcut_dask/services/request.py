"""One cutout request as it goes on the wire, and the query parameters of each endpoint.

The parameter builders put keys in the order astroquery 0.4.11 sends them and write values
with ``str()`` as it does; a list becomes repeated keys. They return sequences of
``(key, text)`` pairs for `requests` to encode (never hand-built query strings), except
HAPCut's in-memory cutout, whose body is JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..exceptions import InvalidQueryError
from ..targets import CutoutSize, Target
from .catalog import check_zcut_options

__all__ = ["CutoutRequest", "sector_params", "moving_sector_params", "survey_params", "cutout_endpoint",
           "cutout_params"]


@dataclass(frozen=True)
class CutoutRequest:
    """One cutout request as it goes on the wire (see `cutout_params`).

    Attributes
    ----------
    service : str
        ``"tesscut"``, ``"zcut"`` or ``"hapcut"``.
    size : CutoutSize
    ra, dec : float or None
        ICRS degrees; None for moving targets.
    obj_id, obj_type : str or None
        Moving-target name and type (TESSCut only).
    sector : int or None
        TESS sector (None = all).
    survey : str or None
        ZCut survey (None = all).
    cutout_format : str or None
        ZCut ``fits``, ``jpg`` or ``png`` (download only).
    img_params : tuple of (str, value) pairs
        ZCut image options: stretch, minmax_percent, minmax_value, invert.
    target_id : str or None
        The target the request is for (carried into errors and manifests).
    """

    service: str
    size: CutoutSize = CutoutSize(5, 5, "px")
    ra: float | None = None
    dec: float | None = None
    obj_id: str | None = None
    obj_type: str | None = None
    sector: int | None = None
    survey: str | None = None
    cutout_format: str | None = None
    img_params: tuple[tuple[str, Any], ...] = ()
    target_id: str | None = None

    @property
    def moving(self) -> bool:
        """True for a moving-target (``obj_id``) request."""
        return self.obj_id is not None

    def describe(self) -> str:
        """A short human label: the object or the position."""
        if self.obj_id is not None:
            return self.obj_id
        return self.target_id or f"({self.ra}, {self.dec})"

    @classmethod
    def for_target(cls, service: str, target: Target, *, cutout_format: str | None = None,
                   img_params: Mapping[str, Any] | None = None) -> "CutoutRequest":
        """The request for one resolved `Target`."""
        if not target.resolved:
            raise InvalidQueryError(f"Target {target.target_id} has no position yet; resolve its name first.")
        return cls(
            service=service, size=target.size,
            ra=None if target.moving else target.ra, dec=None if target.moving else target.dec,
            obj_id=target.name if target.moving else None, obj_type=target.mt_type if target.moving else None,
            sector=target.sector, survey=target.survey, cutout_format=cutout_format,
            img_params=tuple((img_params or {}).items()), target_id=target.target_id,
        )


def _text(value: Any) -> str:
    """Values as astroquery writes them: ``str()`` of plain Python values."""
    if isinstance(value, str):
        return value
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):
        try:
            value = value.item()  # numpy scalar → Python scalar; str() is then identical
        except (ValueError, AttributeError):
            pass
    return str(value)


def _pairs(key: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, (list, tuple)):
        return [(key, _text(v)) for v in value]
    return [(key, _text(value))]


def sector_params(ra: float, dec: float, radius: float = 0.0) -> list[tuple[str, str]]:
    """TESSCut sector discovery for a fixed position: ``ra, dec, radius`` (degrees)."""
    return [("ra", _text(ra)), ("dec", _text(dec)), ("radius", _text(radius))]


def moving_sector_params(obj_id: str, obj_type: str | None = None) -> list[tuple[str, str]]:
    """TESSCut sector discovery for a moving target: ``obj_id[, obj_type]``."""
    params = [("obj_id", obj_id)]
    if obj_type:
        params.append(("obj_type", obj_type))
    return params


def survey_params(ra: float, dec: float, radius: float = 0.0) -> list[tuple[str, str]]:
    """ZCut survey discovery: ``ra, dec, radius`` (degrees)."""
    return [("ra", _text(ra)), ("dec", _text(dec)), ("radius", _text(radius))]


def cutout_endpoint(request: CutoutRequest) -> str:
    """The endpoint role serving ``request``: ``astrocut`` or ``mt_astrocut``."""
    if request.moving:
        if request.service != "tesscut":
            raise InvalidQueryError("Only TESSCut serves moving targets.")
        return "mt_astrocut"
    return "astrocut"

def cutout_params(request: CutoutRequest, *, download: bool) -> list[tuple[str, str]] | dict[str, Any]:
    """The wire parameters of a cutout request.

    Parameters
    ----------
    request : CutoutRequest
    download : bool
        True for the GET of ``download_cutouts``, False for the POST of ``get_cutouts``.

    Returns
    -------
    list of (str, str) pairs, or dict
        Query/form pairs in astroquery's order; a dict (JSON body) for HAPCut's POST.
    """
    size = request.size
    service = request.service
    if service == "tesscut":
        params = [("x", _text(size.x)), ("y", _text(size.y)), ("units", size.units)]
        if request.sector:
            params += _pairs("sector", request.sector)
        if request.moving:
            params += moving_sector_params(request.obj_id or "", request.obj_type)
        else:
            params += [("ra", _text(request.ra)), ("dec", _text(request.dec))]
        return params
    if request.moving:
        raise InvalidQueryError(f"{service} takes coordinates only; moving targets are TESSCut's.")
    if service == "zcut":
        if not download:
            params = [("x", _text(size.x)), ("y", _text(size.y)), ("units", size.units),
                      ("ra", _text(request.ra)), ("dec", _text(request.dec))]
            if request.survey:
                params.append(("survey", request.survey))
            return params
        check_zcut_options(request.cutout_format, request.img_params)
        params = [("ra", _text(request.ra)), ("dec", _text(request.dec)), ("y", _text(size.y)),
                  ("x", _text(size.x)), ("units", size.units)]
        if request.survey:
            params.append(("survey", request.survey))
        # The current service parameter (astroquery main, PR #3608); 0.4.11 sent format=.
        params.append(("cutout_format", request.cutout_format or "fits"))
        params += [(key, _text(value)) for key, value in request.img_params]
        return params
    if service == "hapcut":
        if download:
            return [("ra", _text(request.ra)), ("dec", _text(request.dec)), ("x", _text(size.x)),
                    ("y", _text(size.y)), ("units", size.units)]
        return {"x": float(size.x), "y": float(size.y), "units": size.units, "ra": float(request.ra),
                "dec": float(request.dec)}
    raise InvalidQueryError(f"Unknown service {service!r}.")
