"""Every fact about MAST's cutout services, defined once: names, endpoints, size limits, ZCut's
image options and the resolver's batch size. The rest of the package asks here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from ..exceptions import InvalidQueryError
from ..targets import MAX_CUTOUT_PIXELS, TESS_PIXEL_ARCSEC, CutoutSize, check_pixels

__all__ = [
    "API_VERSION",
    "Endpoint",
    "ServiceSpec",
    "SERVICES",
    "SERVICE_NAMES",
    "ZCUT_FORMATS",
    "ZCUT_IMG_PARAMS",
    "ZCUT_STRETCHES",
    "RESOLVER_BATCH_SIZE",
    "get_service",
    "check_service",
    "check_size",
    "check_zcut_options",
    "endpoint_url",
]

API_VERSION = "v0.1"
ZCUT_FORMATS = ("fits", "jpg", "png")
ZCUT_IMG_PARAMS = ("stretch", "minmax_percent", "minmax_value", "invert")
ZCUT_STRETCHES = ("asinh", "sinh", "sqrt", "log", "linear")
#: Names per request to MAST's name resolver (SANTA), as astroquery batches them.
RESOLVER_BATCH_SIZE = 30



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
        ("fewer than 10,000 pixels", in its API documentation); ZCut and HAPCut publish none, so
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


#: The services by name, in the order help texts list them.
SERVICE_NAMES: tuple[str, ...] = tuple(SERVICES)


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
    spec = SERVICES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidQueryError(f"Unknown service {name!r}: use one of {', '.join(SERVICES)}.")
    return spec


def check_service(name: str) -> str:
    """``name`` if it is one of the services, else `InvalidQueryError`."""
    return get_service(name).name


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

def check_zcut_options(cutout_format: str | None, img_params: Sequence[tuple[str, Any]]) -> None:
    """Refuse unknown ZCut formats and image options before any request.

    ``cutout_format`` None means the service's default (FITS).
    """
    if cutout_format is not None and cutout_format not in ZCUT_FORMATS:
        raise InvalidQueryError(f"cutout_format {cutout_format!r} is not one of {', '.join(ZCUT_FORMATS)}.")
    unknown = [key for key, _ in img_params if key not in ZCUT_IMG_PARAMS]
    if unknown:
        raise InvalidQueryError(f"Unknown ZCut option(s) {', '.join(map(str, unknown))}: "
                                f"use {', '.join(ZCUT_IMG_PARAMS)}.")
    for key, value in img_params:
        if key == "stretch" and value not in ZCUT_STRETCHES:
            raise InvalidQueryError(f"stretch {value!r} is not one of {', '.join(ZCUT_STRETCHES)}.")
