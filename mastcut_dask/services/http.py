"""The one place that speaks HTTP: sessions, timeouts, bounded retries, streamed downloads.

`perform` sends one logical request and tries it up to ``1 + options.max_retries`` times:

* every try has a connect and a read timeout, and a total deadline
  (``options.request_timeout``) that also holds while the body streams: a server that drips a
  byte now and then, each within the read timeout, cannot keep a try (and its lease) for ever.
  Each try runs under ``throttle.lease()``, which is held while bytes move and released before
  any backoff sleep;
* 429/502/503/504 answers, connection errors, resets, timeouts (including the deadline) and
  truncated bodies are retried after ``uniform(0, min(cap, base * 2**n))`` seconds (full
  jitter). A ``Retry-After`` header wins when it asks for longer, even beyond the cap (the cap
  bounds our own guesses, not the server's request); one asking for more than
  ``options.max_retry_after`` ends the request at once with `ServiceUnavailableError` instead
  of sleeping that long or, worse, coming back early to a server that asked us to stay away;
* a ``validate`` callback may reject a complete body with `UnexpectedResponseError` (an HTML
  page, a corrupt zip), which is retried too;
* 400 and 422 answers are the caller's fault: `InvalidQueryError` with the server's words, at once;
* after the last try, `ServiceUnavailableError` or `UnexpectedResponseError` names the URL,
  the status, the number of tries and the reason.

With ``dest_dir`` the body is streamed to a temporary file in that folder and renamed into place
(names are random, never from the clock), so parallel downloads into one folder cannot collide
and an interrupted download leaves only a ``.part`` file that is removed.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterator, Mapping, Sequence

import requests

from ..exceptions import (
    InvalidQueryError,
    MastcutError,
    ServiceError,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from ..options import ServiceOptions
from .throttle import NullThrottle, Throttle

__all__ = ["HttpResult", "perform", "backoff_delay", "borrowed_session", "RETRY_STATUSES", "KEEP_TEMPORARY"]

log = logging.getLogger(__name__)

#: ``final_name`` that asks `perform` not to rename the downloaded body.
KEEP_TEMPORARY = "<keep temporary>"
#: Statuses that mean "busy or briefly down; try again later".
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_CHUNK = 1 << 16
_MAX_MEMORY_BODY = 2 * 1024**3

Params = Mapping[str, Any] | Sequence[tuple[str, Any]] | None


@dataclass
class HttpResult:
    """The outcome of a successful `perform`.

    Attributes
    ----------
    url : str
        The full URL of the request (with its query string).
    status : int
    headers : dict
        Response headers (lower-cased names).
    content : bytes or None
        The body, when it was kept in memory.
    path : str or None
        Where the body was written, when ``dest_dir`` was given.
    attempts : int
        Tries it took.
    n_bytes : int
        Body size.
    """

    url: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    path: str | None = None
    attempts: int = 1
    n_bytes: int = 0

    def head(self, n: int = 512) -> bytes:
        """The first ``n`` bytes of the body, wherever it is."""
        if self.content is not None:
            return self.content[:n]
        if self.path is None:
            return b""
        with open(self.path, "rb") as fh:
            return fh.read(n)


class _Fatal(Exception):
    """A failure no retry can fix (e.g. a body above the size bound); carries the error to raise."""

    def __init__(self, error: MastcutError):
        super().__init__(str(error))
        self.error = error


class _Retryable(Exception):
    """One failed try that another try may fix."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None,
                 unexpected: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.unexpected = unexpected


# ---- sessions ------------------------------------------------------------------------------
#: Idle sessions a process keeps for reuse (each holds its open connections).
MAX_IDLE_SESSIONS = 16
_idle_sessions: list[requests.Session] = []
_idle_lock = threading.Lock()
_idle_pid = os.getpid()


def _new_session() -> requests.Session:
    try:
        ours = version("mastcut_dask")
    except PackageNotFoundError:  # source tree never installed
        ours = "0"
    session = requests.Session()
    session.headers["User-Agent"] = f"mastcut_dask/{ours} {session.headers['User-Agent']}"
    return session


@contextlib.contextmanager
def borrowed_session() -> Iterator[requests.Session]:
    """A `requests.Session` for one try, lent from this process's idle ones.

    A session keeps its connections open (keep-alive). Lending sessions per try rather than
    keeping one per thread lets short-lived threads reuse connections: Dask runs each network
    task seceded, mostly in a fresh thread, and a session per thread meant a new TCP connection
    (and a new handler thread on the server) for two requests in three. A session is used by
    one thread at a time, never pickled, and a forked child starts with none.
    """
    global _idle_pid
    with _idle_lock:
        if _idle_pid != os.getpid():  # forked: the parent's connections are not ours
            _idle_sessions.clear()
            _idle_pid = os.getpid()
        session = _idle_sessions.pop() if _idle_sessions else None
    if session is None:
        session = _new_session()
    kept = False
    try:
        yield session
        with _idle_lock:
            if len(_idle_sessions) < MAX_IDLE_SESSIONS and _idle_pid == os.getpid():
                _idle_sessions.append(session)
                kept = True
    finally:
        if not kept:  # an error mid-try, or enough idle ones: its connections go
            session.close()


# ---- backoff ---------------------------------------------------------------------------------
def backoff_delay(attempt: int, options: ServiceOptions, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0).

    Full jitter, ``uniform(0, min(cap, base * 2**attempt))``. A ``Retry-After`` wins when it
    asks for longer, also beyond ``backoff_cap``: the cap bounds the delays we choose, and
    waiting less than the server asked for would only earn another refusal. It is bounded by
    ``max_retry_after``; `perform` does not retry at all when the server asks for more.
    """
    ceiling = min(options.backoff_cap, options.backoff_base * (2 ** attempt))
    delay = (rng or random).uniform(0.0, max(ceiling, 0.0))
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, options.max_retry_after)
    return max(delay, 0.0)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return seconds


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text[:300]}"


def _server_words(resp: requests.Response) -> str:
    """A short, printable excerpt of an error body (never trusted beyond that)."""
    try:
        raw = resp.raw.read(2048, decode_content=True) if resp.raw is not None else b""
    except Exception:  # the body is only decoration for the message
        raw = b""
    text = raw.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            for key in ("msg", "message", "error", "detail"):
                if isinstance(obj.get(key), str):
                    return obj[key][:500]
    except ValueError:
        pass
    return " ".join(text.split())[:300]


# ---- the deadline of one try -----------------------------------------------------------------
class _Deadline:
    """Cuts a response's connection when its try runs out of time.

    ``read_timeout`` bounds each socket read only, and a single ``iter_content`` chunk is many
    reads: a server dripping a byte every few seconds never trips it. A timer that shuts the
    socket down at the deadline wakes a read blocked anywhere in the body; ``fired`` tells the
    reader that the error (or the early end of a body without Content-Length) it then sees is
    the deadline.
    """

    def __init__(self, resp: requests.Response, deadline: float):
        self.deadline = deadline
        self.fired = False
        self._armed = True
        self._lock = threading.Lock()
        self._sock = _socket_of(resp)
        self._timer: threading.Timer | None = None
        if self._sock is not None:
            self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:  # the body was read in time: leave the connection alone
                return
            self.fired = True
            try:
                # socket.socket's own shutdown, also on an SSLSocket: the reading thread still
                # uses its SSL object, which SSLSocket.shutdown would drop under its feet.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def passed(self) -> bool:
        """True once the deadline is over (also where no socket could be found to cut)."""
        return self.fired or time.monotonic() >= self.deadline

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        if self._timer is not None:
            self._timer.cancel()


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (urllib3 keeps its connection until the body is read)."""
    conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _too_slow(options: ServiceOptions, n_bytes: int) -> str:
    return (f"timed out: the try took longer than request_timeout={options.request_timeout:g}s "
            f"(slow reply, {n_bytes} bytes received)")


# ---- one try -------------------------------------------------------------------------------
def _one_try(method: str, url: str, *, params: Params, data: Params, json_body: Any, headers: Mapping[str, str],
             options: ServiceOptions, dest_dir: str | None, tmp_prefix: str,
             max_body: int) -> HttpResult:
    # The deadline counts from the start of the try; before the headers arrive, the connect and
    # read timeouts bound the wait, and from then on the deadline's timer does.
    deadline = time.monotonic() + options.request_timeout
    with borrowed_session() as session:
        return _try_with(session, method, url, params=params, data=data, json_body=json_body, headers=headers,
                         options=options, dest_dir=dest_dir, tmp_prefix=tmp_prefix, max_body=max_body,
                         deadline=deadline)


def _try_with(session: requests.Session, method: str, url: str, *, params: Params, data: Params, json_body: Any,
              headers: Mapping[str, str], options: ServiceOptions, dest_dir: str | None, tmp_prefix: str,
              max_body: int, deadline: float) -> HttpResult:
    try:
        resp = session.request(method, url, params=params, data=data, json=json_body, headers=dict(headers),
                               timeout=(options.connect_timeout, options.read_timeout), stream=True)
    except requests.Timeout as err:
        raise _Retryable(f"timed out ({_describe(err)})") from None
    except requests.ConnectionError as err:
        raise _Retryable(f"connection failed ({_describe(err)})") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as err:
        raise _Fatal(InvalidQueryError(f"Cannot request {url!r}: {_describe(err)}", url=url)) from None
    except requests.RequestException as err:
        raise _Fatal(ServiceError(f"{method} {url} failed: {_describe(err)}", url=url)) from None
    with resp:
        full_url = resp.url or url
        status = resp.status_code
        if status in RETRY_STATUSES:
            raise _Retryable(f"HTTP {status} {resp.reason or ''}".strip(), status=status,
                             retry_after=_parse_retry_after(resp.headers.get("Retry-After")))
        if status in (400, 422):
            raise InvalidQueryError(f"The service refused the request ({status}): {_server_words(resp)} "
                                    f"[{method} {full_url}]", url=full_url)
        if status >= 400:
            raise ServiceError(f"{method} {full_url} failed with HTTP {status}: {_server_words(resp)}",
                               url=full_url, status=status)
        expected = resp.headers.get("Content-Length")
        # isascii: "\xb2" passes isdigit() but not int(); a hostile header must not crash us.
        expected_n = int(expected) if expected and expected.isascii() and expected.isdigit() else None
        if expected_n is not None and expected_n > max_body:
            raise _Fatal(UnexpectedResponseError(
                f"{full_url} announces {expected_n} bytes, more than the {max_body} allowed",
                url=full_url, status=status))
        result = HttpResult(url=full_url, status=status, headers={k.lower(): v for k, v in resp.headers.items()})
        clock = _Deadline(resp, deadline)
        n = 0
        try:
            if clock.passed():
                raise _Retryable(_too_slow(options, 0), status=status)
            if dest_dir is None:
                buf = bytearray()
                for chunk in resp.iter_content(_CHUNK):
                    buf += chunk
                    n = len(buf)
                    if n > max_body:
                        raise _Fatal(UnexpectedResponseError(f"{full_url} sent more than {max_body} bytes",
                                                             url=full_url, status=status))
                    if clock.passed():
                        raise _Retryable(_too_slow(options, n), status=status)
                result.content = bytes(buf)
            else:
                fd, tmp = tempfile.mkstemp(prefix=f".{tmp_prefix}", suffix=".part", dir=dest_dir)
                result.path = tmp
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.iter_content(_CHUNK):
                        n += len(chunk)
                        if n > max_body:
                            raise _Fatal(UnexpectedResponseError(f"{full_url} sent more than {max_body} bytes",
                                                                 url=full_url, status=status))
                        out.write(chunk)
                        if clock.passed():
                            raise _Retryable(_too_slow(options, n), status=status)
            result.n_bytes = n
            clock.disarm()
            if clock.fired:
                # Cut at the deadline: a body without Content-Length would look complete.
                raise _Retryable(_too_slow(options, n), status=status)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as err:
            clock.disarm()
            _discard(result)
            if clock.fired:
                raise _Retryable(_too_slow(options, n), status=status) from None
            raise _Retryable(f"body interrupted after {n} bytes ({_describe(err)})", status=status) \
                from None
        except BaseException as err:
            clock.disarm()
            _discard(result)
            if clock.fired and isinstance(err, Exception) and not isinstance(err, _Fatal):
                # Whatever a cut connection surfaced as, it was the deadline.
                raise _Retryable(_too_slow(options, n), status=status) from None
            raise
        # Content-Length counts the bytes on the wire: with a Content-Encoding (gzip) the decoded
        # body is longer, so compare what urllib3 pulled off the socket, not what we kept.
        wire_n = _wire_bytes(resp, result.n_bytes)
        if expected_n is not None and wire_n != expected_n:
            _discard(result)
            raise _Retryable(f"truncated body: {wire_n} of {expected_n} bytes", status=status)
        return result


def _wire_bytes(resp: requests.Response, decoded: int) -> int:
    """Body bytes received over the wire (before any Content-Encoding was undone)."""
    tell = getattr(resp.raw, "tell", None)
    try:
        n = tell() if tell is not None else None
    except Exception:  # not a urllib3 response: fall back to the decoded size
        n = None
    return n if isinstance(n, int) else decoded


def _discard(result: HttpResult) -> None:
    if result.path:
        try:
            os.unlink(result.path)
        except FileNotFoundError:
            pass
        result.path = None


# ---- the public entry point ------------------------------------------------------------------
def perform(method: str, url: str, *, options: ServiceOptions, throttle: Throttle | None = None,
            params: Params = None, data: Params = None, json_body: Any = None,
            headers: Mapping[str, str] | None = None, dest_dir: str | None = None,
            final_name: str | None = None, tmp_prefix: str = "download",
            validate: Callable[[HttpResult], None] | None = None,
            max_body: int | None = None, sleep: Callable[[float], None] = time.sleep) -> HttpResult:
    """Send a request with timeouts, throttling and bounded retries.

    Each try is bounded by ``options.connect_timeout`` and ``options.read_timeout`` (per
    socket read) and by ``options.request_timeout`` in all: a reply still streaming at that
    deadline is cut and counts as a timeout, to be retried like one (its throttle lease is
    given back at once).

    Between tries the client waits as `backoff_delay` says. A ``Retry-After`` (seconds or an
    HTTP date) on a 429/502/503/504 is honoured even beyond ``options.backoff_cap``, up to
    ``options.max_retry_after``; a server asking for longer than that is not retried at all:
    `ServiceUnavailableError` says how long it asked for, so the caller can come back later
    rather than have a worker sleep for hours or retry early against the server's wish.

    Parameters
    ----------
    method : str
        ``"GET"`` or ``"POST"``.
    url : str
        The endpoint, without query string (parameters go in ``params``).
    options : ServiceOptions
        Timeouts, retries, backoff.
    throttle : Throttle, optional
        Lent a slot for each try (default: no limit).
    params : mapping or sequence of pairs, optional
        Query string; a list value becomes a repeated key.
    data : mapping or sequence of pairs, optional
        Form body (``application/x-www-form-urlencoded``).
    json_body : optional
        JSON body.
    headers : mapping, optional
    dest_dir : str, optional
        Stream the body to a temporary file in this folder and rename it to ``final_name``
        (default: a random unique name). Without it the body is kept in memory.
    final_name : str, optional
        File name (not a path) inside ``dest_dir``; `KEEP_TEMPORARY` leaves the body under its
        temporary ``.part`` name for the caller to rename (or delete) after a closer look.
    tmp_prefix : str
        Prefix of the random names.
    validate : callable, optional
        Called with each complete `HttpResult`; raising `UnexpectedResponseError` makes the
        try fail and be retried. Other exceptions propagate at once.
    max_body : int, optional
        Refuse bodies larger than this (default: ``options.max_archive_bytes``).
    sleep : callable
        Waits between tries (default `time.sleep`); a test may record the delays instead.

    Returns
    -------
    HttpResult

    Raises
    ------
    ServiceUnavailableError
        429/502/503/504, connection errors, timeouts (per read or ``request_timeout``) or
        truncated bodies on every try; or a ``Retry-After`` longer than ``max_retry_after``.
    UnexpectedResponseError
        ``validate`` rejected the body on every try (or the body was too large).
    InvalidQueryError
        HTTP 400 or 422.
    ServiceError
        Any other HTTP error status.
    """
    throttle = throttle or NullThrottle()
    limit = int(max_body if max_body is not None else options.max_archive_bytes)
    if dest_dir is None:
        limit = min(limit, _MAX_MEMORY_BODY)
    if dest_dir is not None:
        os.makedirs(dest_dir, exist_ok=True)
    if final_name not in (None, KEEP_TEMPORARY) and (os.path.basename(final_name) != final_name
                                                     or final_name in ("", ".", "..")):
        raise InvalidQueryError(f"final_name must be a plain file name, got {final_name!r}")
    tries = 1 + max(int(options.max_retries), 0)
    shown_url = _display_url(method, url, params)
    last = _Retryable("no try was made")
    for attempt in range(tries):
        if attempt:
            if last.retry_after is not None and last.retry_after > options.max_retry_after:
                raise ServiceUnavailableError(
                    f"{method} {shown_url} failed ({last.reason}) and the service asked to be left alone for "
                    f"{last.retry_after:.0f}s (Retry-After), more than max_retry_after={options.max_retry_after:g}s; "
                    f"not retried: try again later", url=shown_url, status=last.status, attempts=attempt)
            delay = backoff_delay(attempt - 1, options, last.retry_after)
            log.info("retrying %s %s in %.2fs (try %d of %d): %s", method, shown_url, delay, attempt + 1, tries,
                     last.reason)
            sleep(delay)  # outside the lease: a waiting client holds no slot
        result: HttpResult | None = None
        try:
            with throttle.lease():
                result = _one_try(method, url, params=params, data=data, json_body=json_body,
                                  headers=headers or {}, options=options, dest_dir=dest_dir, tmp_prefix=tmp_prefix,
                                  max_body=limit)
            shown_url = result.url
            if validate is not None:
                validate(result)
        except _Retryable as err:
            last = err
            continue
        except _Fatal as fatal:
            raise fatal.error from None
        except UnexpectedResponseError as err:
            if result is not None:
                _discard(result)
            last = _Retryable(err.message, status=result.status if result else err.status, unexpected=True)
            continue
        except MastcutError as err:
            if result is not None:
                _discard(result)
            if getattr(err, "url", None) is None:
                err.url = shown_url
            raise
        except BaseException:
            if result is not None:
                _discard(result)
            raise
        result.attempts = attempt + 1
        if dest_dir is not None and result.path is not None and final_name != KEEP_TEMPORARY:
            name = final_name or f"{tmp_prefix}_{uuid.uuid4().hex}"
            final = os.path.join(dest_dir, name)
            os.replace(result.path, final)
            result.path = final
        if attempt:
            log.info("%s %s succeeded on try %d", method, shown_url, attempt + 1)
        return result
    cls = UnexpectedResponseError if last.unexpected else ServiceUnavailableError
    raise cls(f"{method} {shown_url} failed after {tries} tries; last error: {last.reason}",
              url=shown_url, status=last.status, attempts=tries)


def _display_url(method: str, url: str, params: Params) -> str:
    """The URL with its query string, for messages (built by requests, never by concatenation)."""
    try:
        return requests.Request(method, url, params=params).prepare().url or url
    except Exception:  # a message must never fail
        return url
