"""MAST's services: their facts (`catalog`), the wire (`request`, `http`, `archive`,
`throttle`), name resolution (`resolver`), the operations as plain functions (`queries`),
astroquery's API (`clients`), and the `Source` interface the pipeline fetches through."""

from .catalog import SERVICE_NAMES, SERVICES, ServiceSpec, check_service, check_size, endpoint_url, get_service
from .mast_source import MastServiceSource
from .request import CutoutRequest
from .source import DeliveredFile, Delivery, Source

__all__ = ["SERVICE_NAMES", "SERVICES", "ServiceSpec", "check_service", "check_size", "endpoint_url", "get_service",
           "MastServiceSource", "CutoutRequest", "DeliveredFile", "Delivery", "Source"]
