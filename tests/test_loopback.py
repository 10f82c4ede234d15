"""The scripted loopback server of tests/loopback.py: other tests trust its replies and faults."""

from __future__ import annotations

import socket
import threading

import pytest
import requests


def test_a_script_is_served_in_order_and_its_last_reply_repeats(loopback):
    server = loopback([loopback.Reply(429, headers={"Retry-After": "3"}), loopback.Reply.json({"a": 1})])
    assert server.url.startswith("http://127.0.0.1:")
    first = requests.get(server.url + "/x?b=2")
    assert first.status_code == 429 and first.headers["Retry-After"] == "3" and first.content == b""
    for _ in range(2):
        reply = requests.post(server.url + "/y", data={"c": "3"})
        assert reply.status_code == 200 and reply.json() == {"a": 1}
        assert reply.headers["Content-Type"] == "application/json"
    assert server.targets == ["/x?b=2", "/y", "/y"]
    first_req, second_req = server.requests[:2]
    assert (first_req.index, first_req.method, first_req.path, first_req.query) == (0, "GET", "/x", {"b": "2"})
    assert (second_req.index, second_req.method, second_req.form) == (1, "POST", {"c": "3"})


def test_a_callable_script_sees_the_request(loopback):
    server = loopback(lambda r: loopback.Reply(201 if r.method == "PUT" else 404, r.path.encode()))
    assert requests.put(server.url + "/p").status_code == 201
    missing = requests.get(server.url + "/q")
    assert missing.status_code == 404 and missing.content == b"/q"


def test_headers_given_replace_the_content_length(loopback):
    server = loopback([loopback.Reply(200, b"abc", {"Content-Length": "3", "X-Odd": "\xb2"})])
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw = b"".join(iter(lambda: sock.recv(4096), b""))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"abc" and head.count(b"Content-Length") == 1 and b"X-Odd: \xb2" in head


def test_truncate_and_reset(loopback):
    server = loopback(lambda r: {"/cut": loopback.Reply(200, b"x" * 100, truncate=10),
                                 "/reset": loopback.Reply(reset=True),
                                 "/cut-reset": loopback.Reply(200, b"x" * 100, truncate=10, reset=True)}[r.path])
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        requests.get(server.url + "/cut")
    with pytest.raises(requests.exceptions.ConnectionError, match="reset by peer"):
        requests.get(server.url + "/reset")
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset by peer"):
        requests.get(server.url + "/cut-reset")


def test_a_stall_is_logged_at_once_and_ended_by_close(loopback):
    server = loopback([loopback.Reply(stall=True)])
    outcome = []

    def call():
        try:
            requests.get(server.url + "/s", timeout=30)
        except requests.exceptions.ConnectionError as err:
            outcome.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    assert server.wait_for_requests(1, timeout=10)     # logged while it is still stalled
    assert caller.is_alive() and server.targets == ["/s"]
    server.close()                                      # ends the stall: the connection closes unanswered
    caller.join(timeout=10)
    assert not caller.is_alive() and len(outcome) == 1


def test_a_delay_is_cut_short_by_release(loopback):
    server = loopback([loopback.Reply(200, b"late", delay=60)])
    server.release()                     # from now on a delayed reply is dropped, not awaited
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, timeout=30)


def test_a_read_timeout_meets_a_delay(loopback):
    server = loopback([loopback.Reply(200, b"late", delay=60), loopback.Reply(200, b"on time")])
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url, timeout=(5, 0.2))
    assert requests.get(server.url, timeout=5).content == b"on time"


def test_closed_port_refuses(loopback):
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{loopback.closed_port()}", timeout=5)
