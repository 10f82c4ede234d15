"""Scripted HTTP servers on 127.0.0.1, for replies the emulator never sends.

The emulator answers like MAST does, with faults drawn at random rates. Some tests need one
exact reply instead (a 429 with a Retry-After, a gzip body whose Content-Length counts wire
bytes, a JSON shape MAST might send): they script it here. Tests reach this module through
the ``loopback`` fixture in conftest.py, which closes every server it started::

    def test_retry_after(loopback):
        server = loopback([loopback.Reply(429, headers={"Retry-After": "0.2"}),
                           loopback.Reply.json({"results": []})])
        perform("GET", server.url + "/x", options=opts)
        assert server.targets == ["/x", "/x"]

A *script* is either

* a sequence of :class:`Reply`, one per request in the order requests arrive; once it runs
  out the last reply is repeated, so ``[Reply(...)]`` answers every request alike; or
* a callable taking the :class:`Request` and returning a :class:`Reply`, for replies that
  depend on the method, path or query, or must be built when the request arrives
  (``request.index`` counts requests from 0).

A reply can also misbehave: ``delay`` waits before answering, ``stall`` never answers,
``truncate`` cuts the body short and ``reset`` aborts the connection with a TCP reset.
Waiting is done on events, so :meth:`LoopbackServer.close` ends every stall and delay at once,
and :meth:`LoopbackServer.wait_for_requests` lets a test wait for a request to arrive.

Every request is logged (method, request target, headers, body) before its reply is chosen,
so a stalled request shows in :attr:`LoopbackServer.requests` while it is still stalled.

The servers speak HTTP/1.0 (one request per connection, as ``http.server`` does by default),
read request bodies by Content-Length only (no chunked uploads), and bind to 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Loopback", "LoopbackServer", "Reply", "Request", "closed_port"]


@dataclass(frozen=True)
class Reply:
    """One scripted reply.

    ``headers`` are sent as given, after the ``Server`` and ``Date`` headers http.server adds;
    a Content-Length is added from the body unless ``headers`` has one (give a wrong or
    malformed one there on purpose). No Content-Type is added unless given.
    """

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0            # seconds to wait before the status line
    stall: bool = False           # send nothing until the server is closed or released
    truncate: int | None = None   # send only this many body bytes, then close
    reset: bool = False           # abort with a TCP reset: instead of a reply, or after `truncate`

    @classmethod
    def json(cls, payload, status: int = 200, **kw) -> Reply:
        """A JSON reply with ``Content-Type: application/json``."""
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return cls(status, json.dumps(payload).encode(), headers, **kw)


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    index: int                    # 0 for the first request this server received
    method: str
    target: str                   # the request target as sent: path and query string
    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last one wins when a name repeats)."""
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    @property
    def form(self) -> dict[str, str]:
        """The body read as an urlencoded form (the last one wins when a name repeats)."""
        return dict(parse_qsl(self.body.decode("latin-1"), keep_blank_values=True))


Script = Sequence[Reply] | Callable[[Request], Reply]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) that answers from a script.

    ``url`` is ``http://127.0.0.1:PORT`` without a trailing slash. Use it as a context
    manager, or call :meth:`close`; the ``loopback`` fixture closes it in any case.
    """

    def __init__(self, script: Script):
        if not callable(script):
            script = list(script)
            if not script:
                raise ValueError("a script needs at least one Reply")
        self._script = script
        self._log: list[Request] = []
        self._arrived = threading.Condition()
        self._released = threading.Event()
        self.errors: list[BaseException] = []   # exceptions raised by a callable script

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits for the serve loop to notice, up to one interval.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"loopback-{self.port}", daemon=True)
        self._thread.start()
        self._closed = False

    # ---- what the tests look at --------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """A copy of the requests received so far, in order of arrival."""
        with self._arrived:
            return list(self._log)

    @property
    def targets(self) -> list[str]:
        """The request targets (path and query) received so far, in order of arrival."""
        return [r.target for r in self.requests]

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` requests have arrived; False if ``timeout`` passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._log) >= n, timeout)

    def release(self) -> None:
        """End every stall and delay now and from now on: such replies are dropped unanswered."""
        self._released.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.release()          # a stalled handler thread would otherwise outlive the test
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- used by the handler -----------------------------------------------------------------
    def _receive(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        with self._arrived:
            request = Request(len(self._log), method, target, dict(headers), body)
            self._log.append(request)
            self._arrived.notify_all()
            if not callable(self._script):
                return self._script[min(request.index, len(self._script) - 1)]
        try:
            return self._script(request)
        except BaseException as err:   # reported by the fixture; the client sees a 500
            self.errors.append(err)
            return Reply(500, f"loopback script failed: {err!r}".encode())


def _handler_for(server: LoopbackServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply = server._receive(self.command, self.path, self.headers, body)

            if reply.stall:
                server._released.wait()
                return
            if reply.delay and server._released.wait(reply.delay):
                return              # closed while waiting: leave unanswered
            if reply.reset and reply.truncate is None:
                self._abort()
                return

            self.send_response(reply.status)
            names = {k.lower() for k in reply.headers}
            if "content-length" not in names:
                self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            self.wfile.write(reply.body if reply.truncate is None else reply.body[:reply.truncate])
            if reply.reset:
                self._abort()

        def _abort(self):
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN. The socket is
            # really closed only once rfile (a file made from it) is closed too.
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

        def log_message(self, *args):
            pass

    return Handler


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then let go), for refused connections.

    Another process could take it in between; on a test machine that is rare enough.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Loopback:
    """What the ``loopback`` fixture gives a test: call it with a script to start a server.

    ``Reply`` is reachable as an attribute so that tests need no import of this module.
    """

    Reply = Reply

    def __init__(self):
        self._servers: list[LoopbackServer] = []

    def __call__(self, script: Script) -> LoopbackServer:
        server = LoopbackServer(script)
        self._servers.append(server)
        return server

    @staticmethod
    def closed_port() -> int:
        return closed_port()

    def close_all(self) -> list[BaseException]:
        """Close every server started here; return what their callable scripts raised."""
        errors = []
        for server in self._servers:
            server.close()
            errors.extend(server.errors)
        return errors
