"""The emulator's HTTP side: a real loopback server speaking MAST's cutout and resolver APIs.

:class:`MastEmulator` runs a threaded HTTP/1.1 server (keep-alive) in a background thread::

    with MastEmulator(max_cadences=200) as emu:
        Tesscut = TesscutClass(base_url=emu.url, resolver_url=emu.resolver_url)

Endpoints (GET query strings and POST bodies, form-encoded or JSON, are both accepted):

=====================================  =========================================================
``/tesscut/api/v0.1/sector``           ``{"results": [{"sectorName", "sector", "camera", "ccd"}]}``
``/tesscut/api/v0.1/moving_target/sector``  same, for ``obj_id`` [+ ``obj_type``]
``/tesscut/api/v0.1/astrocut``         zip of TPFs, or ``{"msg": "Cutout Error: No FFIs ..."}``
``/tesscut/api/v0.1/moving_target/astrocut``  zip of path-focused TPFs, or the same msg
``/zcut/api/v0.1/survey``              ``{"surveys": [...]}``
``/zcut/api/v0.1/astrocut``            zip of FITS (or JPG/PNG), or ``{"msg": ...}``
``/hapcut/api/v0.1/astrocut``          zip of FITS, or ``{"msg": "Missing HAP files ...", "results": []}``
``/Santa-war/query``                   SANTA name resolver JSON (:mod:`.resolver`)
``/emulator/stats``                    :meth:`MastEmulator.stats` as JSON (exempt from limits)
``/emulator/log``                      :meth:`MastEmulator.request_log` as JSON (exempt)
=====================================  =========================================================

All values in the sector replies are strings, as the real service sends them; ``sector`` is
the plain number (``"8"``), as in the recorded reply ``tests/data/tess_sector.json``.
Invalid input (missing position, bad units, unknown survey, more than 10,000 pixels, ...)
gives HTTP 400 with ``{"msg": ...}``; an unknown path gives 404.

Limits, checked when a service request arrives, before anything else is done for it:

* ``max_concurrency`` requests in flight at most; one more gets ``503 Service Temporarily
  Unavailable`` at once;
* ``max_rate`` request starts per second at most (sliding one-second window), likewise 503;
* a reply goes out ``latency`` seconds (plus uniform ``latency_jitter``) after its request
  was admitted: the reply is built meanwhile, so the emulator's own work does not add to the
  latency unless it takes longer; the body is sent at ``bandwidth`` bytes per second if given.

Faults (:mod:`.faults`) are drawn per admitted request from a seeded generator. Every request
is logged (start, end, method, path, params, status, bytes, fault, cpu_s: the handler thread's
CPU time for it).

The sky itself lives in :mod:`.tess` (TESS sectors and TPFs) and :mod:`.deepfields` (ZCut and
HAPCut), which document their deterministic, seeded content.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import sys
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

from . import archive
from .constants import TESS_ARCSEC_PER_PIXEL
from .errors import BadRequest
from .faults import ARCHIVE_FAULTS, FaultPlan
from .params import MAX_BODY_BYTES, RequestParams, parse_request
from .resolver import santa_reply

__all__ = ["MastEmulator", "TESS_NO_DATA_MSG", "ZCUT_NO_DATA_MSG", "HAPCUT_NO_DATA_MSG"]

log = logging.getLogger(__name__)

TESS_NO_DATA_MSG = "Cutout Error: No FFIs found for input target. Cutout not performed."
ZCUT_NO_DATA_MSG = "Cutout Error: No survey images found for input target. Cutout not performed."
HAPCUT_NO_DATA_MSG = "Missing HAP files for input target. Cutout not performed."

_CHUNK = 64 * 1024
_IDLE_TIMEOUT_S = 120.0  # an idle keep-alive connection is dropped after this


# ---- replies ---------------------------------------------------------------------------------
@dataclass
class Reply:
    """What a route produces: a status and a body, or a list of files to be zipped."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    files: list[tuple[str, bytes]] | None = None
    zip_name: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload, status: int = 200) -> Reply:
        return cls(status=status, body=json.dumps(payload).encode("utf-8"))


def _html_page(status: int, title: str, text: str) -> bytes:
    return (f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>\n"
            f"<body><h1>{title}</h1>\n<p>{text}</p>\n<hr><address>mastcut emulator</address>\n"
            "</body></html>\n").encode("utf-8")


_PAGE_503 = _html_page(503, "Service Temporarily Unavailable",
                       "The server is temporarily unable to service your request due to "
                       "maintenance downtime or capacity problems. Please try again later.")
_PAGE_504 = _html_page(504, "Gateway Timeout",
                       "The gateway did not receive a timely response from the upstream server.")
_PAGE_HTML200 = _html_page(200, "MAST is down for maintenance",
                           "MAST services are unavailable during scheduled maintenance. "
                           "Please check back later.")


# ---- routes ----------------------------------------------------------------------------------
def _sector_rows(ccds) -> list[dict[str, str]]:
    return [{"sectorName": f"tess-s{c.sector:04d}-{c.camera}-{c.ccd}", "sector": str(c.sector),
             "camera": str(c.camera), "ccd": str(c.ccd)} for c in ccds]


def _route_tess_sector(emu: MastEmulator, p: RequestParams) -> Reply:
    ra, dec = p.position()
    radius = p.radius_deg(0.0)
    from . import tess

    ccds = tess.sectors_at(ra, dec, radius, seed=emu.sky_seed)
    return Reply.json({"results": _sector_rows(ccds)})


def _moving_target(p: RequestParams) -> tuple[str, str | None]:
    obj_id = p.get("obj_id")
    if not obj_id:
        raise BadRequest("Missing required parameter: obj_id (moving target name or ID)")
    return obj_id, (p.get("obj_type") or None)


def _route_tess_mt_sector(emu: MastEmulator, p: RequestParams) -> Reply:
    obj_id, obj_type = _moving_target(p)
    from . import tess

    return Reply.json({"results": _sector_rows(tess.moving_sectors(obj_id, obj_type,
                                                                   seed=emu.sky_seed))})


def _check_product(p: RequestParams) -> None:
    # astroquery <= 0.4.10 sent product=SPOC|TICA; TICA cutouts were discontinued in Aug 2025.
    product = p.get("product")
    if product and product.upper() != "SPOC":
        raise BadRequest(f"Invalid product {product!r}: only SPOC cutouts are offered.")


def _zip_name(service: str, ra: float, dec: float, size) -> str:
    return f"{service}_{ra:.6f}_{dec:.6f}_{size.x:g}x{size.y:g}{size.units}.zip"


def _route_tess_astrocut(emu: MastEmulator, p: RequestParams) -> Reply:
    ra, dec = p.position()
    size = p.size(arcsec_per_pixel=TESS_ARCSEC_PER_PIXEL)
    sectors = p.sectors()
    _check_product(p)
    from . import tess

    files = tess.cutout_files(ra, dec, size.x, size.y, size.units, sectors=sectors,
                              max_cadences=emu.max_cadences, seed=emu.sky_seed)
    if not files:
        return Reply.json({"msg": TESS_NO_DATA_MSG})
    return Reply(files=files, zip_name=_zip_name("astrocut", ra, dec, size))


def _route_tess_mt_astrocut(emu: MastEmulator, p: RequestParams) -> Reply:
    obj_id, obj_type = _moving_target(p)
    size = p.size(arcsec_per_pixel=TESS_ARCSEC_PER_PIXEL)
    sectors = p.sectors()
    _check_product(p)
    from . import tess

    files = tess.moving_cutout_files(obj_id, obj_type, size.x, size.y, size.units,
                                     sectors=sectors, max_cadences=emu.max_cadences,
                                     seed=emu.sky_seed)
    if not files:
        return Reply.json({"msg": TESS_NO_DATA_MSG})
    # The name reaches a response header: keep only file-name-safe characters (no quotes, no CR/LF).
    return Reply(files=files, zip_name=f"astrocut_{tess.safe_name(obj_id)}.zip")


def _route_zcut_survey(emu: MastEmulator, p: RequestParams) -> Reply:
    ra, dec = p.position()
    # The real service defaults to 0.2 d when no radius is sent (astroquery always sends one).
    radius = p.radius_deg(0.2)
    from . import deepfields

    return Reply.json({"surveys": deepfields.zcut_surveys_at(ra, dec, radius,
                                                             seed=emu.sky_seed)})


def _route_zcut_astrocut(emu: MastEmulator, p: RequestParams) -> Reply:
    ra, dec = p.position()
    size = p.size()
    survey = p.get("survey") or None
    fmt, stretch = p.image_format(), p.stretch()
    minmax_percent, minmax_value = p.pair("minmax_percent"), p.pair("minmax_value")
    invert = p.flag("invert")
    from . import deepfields

    if survey is not None and survey not in deepfields.zcut_survey_names():
        raise BadRequest(f"Unknown survey {survey!r}. Available surveys: "
                         f"{', '.join(deepfields.zcut_survey_names())}")
    files = deepfields.zcut_cutout_files(
        ra, dec, size.x, size.y, size.units, survey=survey, fmt=fmt, stretch=stretch,
        minmax_percent=minmax_percent, minmax_value=minmax_value, invert=invert,
        seed=emu.sky_seed)
    if not files:
        return Reply.json({"msg": ZCUT_NO_DATA_MSG})
    return Reply(files=files, zip_name=_zip_name("zcut", ra, dec, size))


def _route_hapcut_astrocut(emu: MastEmulator, p: RequestParams) -> Reply:
    ra, dec = p.position()
    size = p.size()
    from . import deepfields

    files = deepfields.hapcut_cutout_files(ra, dec, size.x, size.y, size.units, seed=emu.sky_seed)
    if not files:
        return Reply.json({"msg": HAPCUT_NO_DATA_MSG, "results": []})
    return Reply(files=files, zip_name=_zip_name("hapcut", ra, dec, size))


def _route_resolver(emu: MastEmulator, p: RequestParams) -> Reply:
    return Reply.json(santa_reply(p, seed=emu.sky_seed))


# Each route validates its input before importing the sky module it needs: invalid requests
# never pay for (or depend on) the heavy sky code, and this module imports on its own.
_Route = Callable[["MastEmulator", RequestParams], Reply]
# path -> (route, is a cutout endpoint whose reply is an archive)
ROUTES: dict[str, tuple[_Route, bool]] = {
    "/tesscut/api/v0.1/sector": (_route_tess_sector, False),
    "/tesscut/api/v0.1/moving_target/sector": (_route_tess_mt_sector, False),
    "/tesscut/api/v0.1/astrocut": (_route_tess_astrocut, True),
    "/tesscut/api/v0.1/moving_target/astrocut": (_route_tess_mt_astrocut, True),
    "/zcut/api/v0.1/survey": (_route_zcut_survey, False),
    "/zcut/api/v0.1/astrocut": (_route_zcut_astrocut, True),
    "/hapcut/api/v0.1/astrocut": (_route_hapcut_astrocut, True),
    "/Santa-war/query": (_route_resolver, False),
}


# ---- the HTTP machinery ----------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for stalled or idle keep-alive connections: it closes them itself.
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, handler, emulator: MastEmulator):
        self.emulator = emulator
        # open connection -> the thread serving it, so stop() can close and join them
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback to stderr; a client hanging up (clients drop
        # connections after faults, at shutdown) is routine for a server, anything else is logged.
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address, err)
        else:
            log.exception("error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mastcut-emulator"
    sys_version = ""
    timeout = _IDLE_TIMEOUT_S
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # peer's delayed ACK add ~40 ms to many replies.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections[self.connection] = threading.current_thread()

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.pop(self.connection, None)
        try:
            super().finish()
        except OSError:
            pass  # the peer went away, or a fault reset the socket

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self.server.emulator._handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "POST")

    # -- low-level sending -------------------------------------------------------------------
    def send_plain(self, status: int, body: bytes, content_type: str,
                   headers: Mapping[str, str] | None = None) -> int:
        """Send a whole reply; returns the body bytes written."""
        self.send_response(status, _reason(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        return len(body)


class _Slot:
    """An admitted request's place in the in-flight count, given back exactly once."""

    def __init__(self, server: "MastEmulator"):
        self._server = server
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            with self._server._lock:
                self._server._in_flight -= 1


def _reason(status: int) -> str:
    if status == 503:
        return "Service Temporarily Unavailable"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class MastEmulator:
    """A local MAST-compatible cutout service on loopback, for tests, demos and benchmarks.

    Parameters
    ----------
    host : str
        Interface to bind (loopback by default).
    port : int
        TCP port; 0 lets the OS choose.
    latency : float
        Seconds from a service request's admission to its reply (built meanwhile).
    max_concurrency : int
        Requests allowed in flight; one more gets an immediate 503.
    max_rate : float, optional
        Request starts allowed per second (sliding window); excess gets 503. None = no limit.
    faults : mapping of str to float, optional
        Fault name → probability (see :mod:`mastcut_dask.emulator.faults`).
    seed : int
        Seed of the fault and jitter generators: the same seed and request order give the
        same faults.
    max_cadences : int, optional
        Cap on cadences per TPF, for fast tests. None = the mission's real counts.
    sky_seed : int
        Seed of the procedural sky (:mod:`.tess`, :mod:`.deepfields`). Kept apart from
        ``seed`` so that runs with different fault sequences serve the same pixels and can be
        checked against a clean run.
    latency_jitter : float
        Extra latency drawn uniformly from [0, latency_jitter] seconds per request (seeded).
    bandwidth : float, optional
        Body bytes per second per request. None = as fast as loopback goes.
    stall_seconds : float
        How long the ``stall`` fault holds a request before answering normally.
    zipbomb_bytes : int
        Inflated size of each member of the ``zipbomb`` fault's archive.
    zip_compression : {"stored", "deflate"}
        How FITS members of cutout archives are packed; ``"deflate"`` is what MAST does but
        costs the server more CPU than building the TPF (see :func:`.archive.build_zip`).
    retry_after : float, optional
        If given, every 503 (limit or fault) carries ``Retry-After`` with these seconds.
    log_limit : int
        Most recent request-log entries kept.

    Examples
    --------
    >>> with MastEmulator(max_cadences=100) as emu:  # doctest: +SKIP
    ...     requests.get(emu.url + "/tesscut/api/v0.1/sector", params={"ra": 10, "dec": 20})
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 max_concurrency: int = 10, max_rate: float | None = None,
                 faults: Mapping[str, float] | None = None, seed: int = 0,
                 max_cadences: int | None = None, sky_seed: int = 0, latency_jitter: float = 0.0,
                 bandwidth: float | None = None, stall_seconds: float = 30.0,
                 zipbomb_bytes: int = archive.ZIPBOMB_DECLARED_BYTES,
                 zip_compression: str = "stored", retry_after: float | None = None,
                 log_limit: int = 100_000):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_rate is not None and not (max_rate > 0 and math.isfinite(max_rate)):
            raise ValueError("max_rate must be a positive number or None")
        if latency < 0 or latency_jitter < 0 or stall_seconds < 0:
            raise ValueError("latency, latency_jitter and stall_seconds must not be negative")
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError("bandwidth must be positive or None")
        if zip_compression not in archive.ZIP_COMPRESSIONS:
            raise ValueError(f"zip_compression must be one of {archive.ZIP_COMPRESSIONS}")
        if max_cadences is not None and max_cadences < 1:
            raise ValueError("max_cadences must be at least 1 or None")
        self.host = host
        self.port = int(port)
        self.latency = float(latency)
        self.latency_jitter = float(latency_jitter)
        self.bandwidth = bandwidth
        self.max_concurrency = int(max_concurrency)
        self.max_rate = max_rate
        self.seed = int(seed)
        self.sky_seed = int(sky_seed)
        self.max_cadences = max_cadences
        self.stall_seconds = float(stall_seconds)
        self.zipbomb_bytes = int(zipbomb_bytes)
        self.zip_compression = zip_compression
        if retry_after is not None and not retry_after >= 0:
            raise ValueError("retry_after must be a non-negative number or None")
        self.retry_after = retry_after
        self._faults = FaultPlan(faults, seed=self.seed)
        self._jitter_rng = random.Random(f"mastcut-jitter-{self.seed}")

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log: deque[dict] = deque(maxlen=log_limit)
        self._starts: deque[float] = deque()
        self._reset_counters()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> MastEmulator:
        """Bind the socket and start serving in a background thread; returns self."""
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"mast-emulator-{self.port}", daemon=True)
        self._thread.start()
        log.info("MAST emulator serving at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving: wake stalled requests, close open connections, release the port."""
        server = self._server
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        with server.connections_lock:
            open_connections = list(server.connections.items())
        for sock, _ in open_connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Let handlers finish their bookkeeping so stats() is final once stop() returns.
        deadline = time.monotonic() + 10.0
        for _, thread in open_connections:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._server = None
        self._thread = None

    def __enter__(self) -> MastEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to use in place of ``https://mast.stsci.edu``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return urlunsplit(("http", f"{host}:{self.port}", "", "", ""))

    @property
    def resolver_url(self) -> str:
        """The name resolver's query URL (in place of ``http://mastresolver.stsci.edu/Santa-war/query``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return urlunsplit(("http", f"{host}:{self.port}", "/Santa-war/query", "", ""))

    # -- observability -----------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._status_counts: Counter[int] = Counter()
        self._fault_counts: Counter[str] = Counter()
        self._bytes_sent = 0
        self._rejected = 0

    def stats(self) -> dict:
        """Counters since start (or the last :meth:`reset_stats`).

        Returns
        -------
        dict
            ``requests`` (service requests received, rejected ones included), ``in_flight``,
            ``max_in_flight``, ``rejected`` (503s from the limits), ``status_counts``
            (int status → count), ``fault_counts`` (fault name → count) and ``bytes_sent``
            (body bytes).
        """
        with self._lock:
            return {"requests": self._requests, "in_flight": self._in_flight,
                    "max_in_flight": self._max_in_flight, "rejected": self._rejected,
                    "status_counts": dict(self._status_counts),
                    "fault_counts": dict(self._fault_counts), "bytes_sent": self._bytes_sent}

    def request_log(self) -> list[dict]:
        """One dict per service request: start, end, method, path, params, status, bytes,
        fault, cpu_s.

        An entry appears when its reply starts; ``end``, ``bytes`` and ``cpu_s`` stay None/0
        until the body has been sent (all are final once :meth:`stop` has returned).
        """
        with self._lock:
            return [dict(e) for e in self._log]

    def reset_stats(self) -> None:
        """Zero the counters and clear the request log; restart the fault sequence."""
        with self._lock:
            in_flight = self._in_flight
            self._reset_counters()
            self._in_flight = in_flight
            self._log.clear()
            self._starts.clear()
        self._faults.reset()

    # -- request handling --------------------------------------------------------------------
    def _admit(self, now: float) -> bool:
        with self._lock:
            self._requests += 1
            if self._in_flight >= self.max_concurrency:
                self._rejected += 1
                return False
            if self.max_rate is not None:
                window = max(1.0, 1.0 / self.max_rate)
                while self._starts and self._starts[0] <= now - window:
                    self._starts.popleft()
                if len(self._starts) >= self.max_rate * window:
                    self._rejected += 1
                    return False
                self._starts.append(now)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return True

    def _record(self, entry: dict) -> None:
        with self._lock:
            self._bytes_sent += entry["bytes"]
            if not entry["status"]:  # never answered (dropped at shutdown): log it now
                self._log.append(entry)

    def _reply_status(self, entry: dict, status: int) -> None:
        # Counted and logged before the first byte goes out, so a client that has its reply
        # always finds it in stats() and request_log(); end, bytes and cpu_s are filled in
        # (in place) once the body is sent.
        entry["status"] = status
        with self._lock:
            self._status_counts[status] += 1
            self._log.append(entry)

    def _inject(self, entry: dict, fault: str) -> None:
        entry["fault"] = fault
        with self._lock:
            self._fault_counts[fault] += 1

    def _handle(self, h: _Handler, method: str) -> None:
        start = time.time()
        cpu0 = time.thread_time()
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/") or "/"
        body = b""
        length = h.headers.get("Content-Length")
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            # No MAST client streams its (tiny) request bodies; refusing keeps parsing simple.
            h.close_connection = True
            h.send_plain(411, json.dumps({"msg": "Content-Length required"}).encode(),
                         "application/json", {"Connection": "close"})
            return
        if length:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n < 0 or n > MAX_BODY_BYTES:
                h.close_connection = True
                h.send_plain(413, json.dumps({"msg": "Request body too large"}).encode(),
                             "application/json", {"Connection": "close"})
                return
            body = h.rfile.read(n)

        if path in ("/emulator/stats", "/emulator/log"):
            payload = self.stats() if path.endswith("stats") else self.request_log()
            h.send_plain(200, json.dumps(payload, default=str).encode(), "application/json")
            return

        entry = {"start": start, "end": None, "method": method, "path": path, "params": {},
                 "status": 0, "bytes": 0, "fault": None, "cpu_s": 0.0}
        slot: _Slot | None = None
        try:
            try:
                params = parse_request(parts.query, body, h.headers.get("Content-Type"))
                entry["params"] = params.as_dict()
            except BadRequest as err:
                params = None
                parse_error = err
            route = ROUTES.get(path)
            if route is None:
                with self._lock:
                    self._requests += 1
                self._reply_status(entry, 404)
                entry["bytes"] = h.send_plain(404, json.dumps({"msg": f"Not found: {path}"})
                                              .encode(), "application/json")
                return
            if not self._admit(start):
                self._reply_status(entry, 503)
                entry["bytes"] = h.send_plain(503, _PAGE_503, "text/html; charset=utf-8",
                                              self._retry_headers())
                return
            slot = _Slot(self)
            self._serve(h, route, params if params is not None else parse_error, entry, slot)
        except OSError as err:  # broken pipe, reset, timeout: the client went away
            log.debug("client went away during %s: %s", path, err)
            h.close_connection = True
        finally:
            if slot is not None:
                slot.release()
            entry["end"] = time.time()
            entry["cpu_s"] = time.thread_time() - cpu0
            self._record(entry)

    def _serve(self, h: _Handler, route: tuple[_Route, bool], params, entry: dict, slot: "_Slot") -> None:
        func, is_archive = route
        fault = self._faults.draw()
        if fault in ("503", "504"):
            self._inject(entry, fault)
            self._reply_status(entry, int(fault))
            page = _PAGE_503 if fault == "503" else _PAGE_504
            entry["bytes"] = h.send_plain(int(fault), page, "text/html; charset=utf-8",
                                          self._retry_headers() if fault == "503" else None)
            return
        if fault == "stall":
            self._inject(entry, fault)
            if self._stop.wait(self.stall_seconds):
                h.close_connection = True  # shutting down: drop the request unanswered
                return
        delay = self.latency
        if self.latency_jitter:
            with self._lock:
                delay += self._jitter_rng.uniform(0.0, self.latency_jitter)
        # The reply is built while the latency runs and sent when it is over, so a request
        # takes `delay` seconds whatever the host's load (or longer, if building takes longer):
        # the emulator's own CPU time must not inflate the service time a benchmark measures.
        reply_at = time.monotonic() + delay

        if isinstance(params, BadRequest):
            reply = Reply.json({"msg": str(params)}, status=400)
        else:
            try:
                reply = func(self, params)
            except BadRequest as err:
                reply = Reply.json({"msg": str(err)}, status=400)
            except Exception:  # a bug in the sky must not take the server down
                log.exception("emulator route %s failed", entry["path"])
                reply = Reply.json({"msg": "Internal server error"}, status=500)

        if fault == "html200":
            self._inject(entry, fault)
            reply = Reply(status=200, body=_PAGE_HTML200, content_type="text/html; charset=utf-8")
        elif fault in ARCHIVE_FAULTS and is_archive and reply.files:
            self._inject(entry, fault)
            reply = self._hostile(fault, reply, entry["path"])

        if reply.files is not None:
            reply.body = archive.build_zip(reply.files, self.zip_compression)
            reply.content_type = "application/zip"
            if reply.zip_name:
                reply.headers["Content-Disposition"] = f'attachment; filename="{reply.zip_name}"'
        if fault in ("truncate", "reset"):
            self._inject(entry, fault)
        wait = reply_at - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            h.close_connection = True
            return
        self._reply_status(entry, reply.status)
        if fault in ("truncate", "reset"):
            entry["bytes"] = self._send_broken(h, reply, reset=(fault == "reset"))
            return
        entry["bytes"] = self._send(h, reply, slot)

    def _retry_headers(self) -> dict[str, str] | None:
        if self.retry_after is None:
            return None
        return {"Retry-After": f"{self.retry_after:g}"}

    def _hostile(self, fault: str, reply: Reply, path: str) -> Reply:
        if fault == "nodata_transient":
            # each service's own "nothing here" reply, for a target that does have data
            if path.startswith("/hapcut/"):
                return Reply.json({"msg": HAPCUT_NO_DATA_MSG, "results": []})
            if path.startswith("/zcut/"):
                return Reply.json({"msg": ZCUT_NO_DATA_MSG})
            return Reply.json({"msg": TESS_NO_DATA_MSG})
        if fault == "badzip":
            body = archive.corrupt_zip(archive.build_zip(reply.files or [], self.zip_compression))
        elif fault == "zipslip":
            body = archive.zipslip_zip(reply.files or [])
        else:
            body = archive.zipbomb_zip(member_bytes=self.zipbomb_bytes)
        return Reply(status=200, body=body, content_type="application/zip",
                     zip_name=reply.zip_name)

    def _send(self, h: _Handler, reply: Reply, slot: "_Slot | None" = None) -> int:
        """Send a whole reply. ``slot`` is given back just before the last byte goes out.

        The request stops counting as in flight once its last byte is handed over: a client
        that has read it may start its next request at once. Given back after the handler had
        finished instead, a handler thread waiting for the GIL on a loaded machine kept the place
        for tens of milliseconds after its client was done, and that client's next request got
        a 503 it had done nothing to earn (seen at about 1 in 1,600 requests in the benchmark).
        """
        self._send_headers(h, reply, len(reply.body))
        return self._write_paced(h, reply.body, slot)

    @staticmethod
    def _send_headers(h: _Handler, reply: Reply, length: int) -> None:
        h.send_response(reply.status, _reason(reply.status))
        h.send_header("Content-Type", reply.content_type)
        h.send_header("Content-Length", str(length))
        for key, value in reply.headers.items():
            h.send_header(key, value)
        h.end_headers()

    def _write_paced(self, h: _Handler, data: bytes, slot: "_Slot | None" = None) -> int:
        sent = 0
        t0 = time.monotonic()
        for i in range(0, len(data), _CHUNK):
            chunk = data[i:i + _CHUNK]
            if slot is not None and i + _CHUNK >= len(data):
                h.wfile.write(chunk[:-1])  # all but the last byte, then the place, then the byte
                slot.release()
                h.wfile.write(chunk[-1:])
            else:
                h.wfile.write(chunk)
            sent += len(chunk)
            if self.bandwidth:
                ahead = sent / self.bandwidth - (time.monotonic() - t0)
                if ahead > 0 and self._stop.wait(ahead):
                    h.close_connection = True
                    break
        return sent

    def _send_broken(self, h: _Handler, reply: Reply, *, reset: bool) -> int:
        body = reply.body
        # Announce the whole body, send about half of it, then hang up.
        self._send_headers(h, reply, len(body))
        part = body[: max(1, len(body) // 2)] if len(body) > 1 else b""
        sent = self._write_paced(h, part)
        h.wfile.flush()
        h.close_connection = True
        if reset:
            sock = h.connection
            # SO_LINGER with a zero timeout turns close() into a TCP RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server = h.server
            with server.connections_lock:
                server.connections.pop(sock, None)
            socket.close(sock.detach())
        return sent
