"""Declarative descriptions of TESSCut, ZCut and HAPCut, and the wire parameters they take.

The parameter builders put keys in the order astroquery 0.4.11 sends them (mast-api.md §1)
and write values with ``str()`` as it does; a list becomes repeated keys. They return
sequences of ``(key, text)`` pairs for `requests` to encode (never hand-built query strings),
except HAPCut's in-memory cutout, whose body is JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from .exceptions import InvalidQueryError
from .targets import MAX_CUTOUT_PIXELS, TESS_PIXEL_ARCSEC, CutoutRequest, CutoutSize, check_pixels

__all__ = [
    "API_VERSION",
    "Endpoint",
    "ServiceSpec",
    "SERVICES",
    "ZCUT_FORMATS",
    "ZCUT_IMG_PARAMS",
    "get_service",
    "endpoint_url",
    "sector_params",
    "moving_sector_params",
    "survey_params",
    "cutout_params",
    "cutout_endpoint",
]

API_VERSION = "v0.1"
ZCUT_FORMATS = ("fits", "jpg", "png")
ZCUT_IMG_PARAMS = ("stretch", "minmax_percent", "minmax_value", "invert")
ZCUT_STRETCHES = ("asinh", "sinh", "sqrt", "log", "linear")


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a service.

    Attributes
    ----------
    path : str
        Path below ``{base}/{service}/api/v0.1/``.
    response : str
        ``"results"`` (JSON sector list), ``"surveys"`` (JSON survey list) or ``"archive"``
        (a zip, or a JSON "no data" message).
    """

    path: str
    response: str


@dataclass(frozen=True)
class ServiceSpec:
    """What one cutout service offers.

    Attributes
    ----------
    name : str
        URL segment and short name: ``tesscut``, ``zcut``, ``hapcut``.
    endpoints : mapping of str to Endpoint
        By role: ``sector``, ``mt_sector``, ``survey``, ``astrocut``, ``mt_astrocut``.
    pixel_arcsec : float or None
        Pixel scale used to bound angular sizes before sending (None: not checked locally).
    zip_prefix : str
        Prefix of downloaded archive names (astroquery: ``tesscut_``, ``zcut_``, ``hapcut_``).
    json_cutouts : bool
        True when in-memory cutouts are POSTed as JSON (HAPCut).
    max_pixels : float
        Largest cutout, in pixels, checked before any request. Only TESSCut's is documented
        ("fewer than 10,000 pixels", mast-api.md section 11); ZCut and HAPCut publish none, so
        their servers decide (a 400 becomes `InvalidQueryError` with the server's words).
    """

    name: str
    endpoints: Mapping[str, Endpoint]
    pixel_arcsec: float | None
    zip_prefix: str
    json_cutouts: bool = False
    max_pixels: float = math.inf


SERVICES: dict[str, ServiceSpec] = {
    "tesscut": ServiceSpec(
        name="tesscut",
        endpoints={
            "sector": Endpoint("sector", "results"),
            "mt_sector": Endpoint("moving_target/sector", "results"),
            "astrocut": Endpoint("astrocut", "archive"),
            "mt_astrocut": Endpoint("moving_target/astrocut", "archive"),
        },
        pixel_arcsec=TESS_PIXEL_ARCSEC,
        zip_prefix="tesscut_",
        max_pixels=MAX_CUTOUT_PIXELS,
    ),
    "zcut": ServiceSpec(
        name="zcut",
        endpoints={"survey": Endpoint("survey", "surveys"), "astrocut": Endpoint("astrocut", "archive")},
        pixel_arcsec=None,
        zip_prefix="zcut_",
    ),
    "hapcut": ServiceSpec(
        name="hapcut",
        endpoints={"astrocut": Endpoint("astrocut", "archive")},
        pixel_arcsec=None,
        zip_prefix="hapcut_",
        json_cutouts=True,
    ),
}


def check_size(service: str, size: CutoutSize) -> None:
    """Refuse a size the service is known not to serve (see `ServiceSpec.max_pixels`).

    Raises
    ------
    InvalidQueryError
        Unknown service, or the cutout is too large for it.
    """
    spec = get_service(service)
    check_pixels(size, pixel_arcsec=spec.pixel_arcsec, max_pixels=spec.max_pixels)


def get_service(name: str) -> ServiceSpec:
    """The `ServiceSpec` called ``name`` (``tesscut``, ``zcut`` or ``hapcut``)."""
    spec = SERVICES.get(str(name).lower())
    if spec is None:
        raise InvalidQueryError(f"Unknown service {name!r}: use one of {', '.join(SERVICES)}.")
    return spec


def endpoint_url(base_url: str, service: str, role: str) -> str:
    """``{base_url}/{service}/api/v0.1/{path}`` for the endpoint playing ``role``.

    The path is assembled from quoted segments with `urllib.parse`, keeping any path prefix
    of ``base_url`` (e.g. an emulator mounted below ``/mast``).
    """
    spec = get_service(service)
    endpoint = spec.endpoints.get(role)
    if endpoint is None:
        raise InvalidQueryError(f"{spec.name} has no {role!r} endpoint.")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidQueryError(f"base_url {base_url!r} must be an http(s) URL.")
    segments = [s for s in parts.path.split("/") if s]
    segments += [spec.name, "api", API_VERSION, *endpoint.path.split("/")]
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


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


def check_zcut_options(cutout_format: str | None, img_params: Sequence[tuple[str, Any]]) -> None:
    """Refuse unknown ZCut formats and image options before any request."""
    if cutout_format is not None and cutout_format not in ZCUT_FORMATS:
        raise InvalidQueryError(f"cutout_format {cutout_format!r} is not one of {', '.join(ZCUT_FORMATS)}.")
    for key, value in img_params:
        if key not in ZCUT_IMG_PARAMS:
            raise InvalidQueryError(f"Unknown ZCut image option {key!r}: use {', '.join(ZCUT_IMG_PARAMS)}.")
        if key == "stretch" and value not in ZCUT_STRETCHES:
            raise InvalidQueryError(f"stretch {value!r} is not one of {', '.join(ZCUT_STRETCHES)}.")


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
