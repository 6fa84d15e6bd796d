"""Clients that try to make the proxy spend memory, disk, connections or time.

Each test runs its own proxy (``--no-presets``, a loopback upstream, short client
timeouts) and talks to it over raw sockets: trickled heads, oversize heads and
bodies, thousands of idle connections, more connections than ``--max-connections``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import web
from tests.harness.polling import wait_until
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.tls import make_ca
from tests.harness.upstream import Upstream

HEADER_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0
LINGER = 5.0  # dockerproxy.channel.LINGER


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def hostile_proxy(
    start_proxy: StartProxy, upstream: Upstream, *args: str, **kwargs: Any
) -> ProxyProcess:
    return start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        "--no-cache",
        "--client-header-timeout",
        str(HEADER_TIMEOUT),
        "--client-idle-timeout",
        str(IDLE_TIMEOUT),
        *args,
        **kwargs,
    )


def connect(proxy: ProxyProcess) -> socket.socket:
    return socket.create_connection((HOST, proxy.port), timeout=10)


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse:
    """One response with a Content-Length, read within C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return RawResponse(int(status_line.split()[1]), headers, body)


def _expected_length(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return len(data) + 1
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data)


def wait_closed(sock: socket.socket, timeout: float) -> None:
    """The proxy closes the connection within C{timeout} seconds (input is dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return
        except ConnectionResetError:
            return
        except TimeoutError:
            pytest.fail(f"still open {timeout}s later")


def assert_refused(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status, response
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["connection"] == "close"
    assert response.json()["errors"][0]["code"] == code


def open_fds(proxy: ProxyProcess) -> int:
    return len(os.listdir(f"/proc/{proxy.pid}/fd"))


# --------------------------------------------------------------------------- slow clients


def test_a_trickled_head_gets_408_and_is_closed_by_the_deadline(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    """A header line every 0.5 s: Twisted's own timer restarted on each and never fired."""
    proxy = hostile_proxy(start_proxy, upstream)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: mirror.test\r\n")
        line = 0
        while not select.select([sock], [], [], 0.5)[0]:
            assert time.monotonic() - started < HEADER_TIMEOUT + 5, "no answer"
            line += 1
            sock.sendall(b"X-Trickle-%d: y\r\n" % line)
        response = read_response(sock)
        answered = time.monotonic() - started
        assert_refused(response, 408, "REQUEST_TIMEOUT")
        assert line >= HEADER_TIMEOUT / 0.5 - 1, "lines kept coming until the deadline"
        assert HEADER_TIMEOUT - 0.2 <= answered < HEADER_TIMEOUT + 2
        wait_closed(sock, timeout=2)


def test_an_idle_keep_alive_connection_is_closed_silently(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = hostile_proxy(start_proxy, upstream)
    with connect(proxy) as sock:
        sock.sendall(b"GET /nope HTTP/1.1\r\nHost: mirror.test\r\n\r\n")
        assert read_response(sock).status == 404
        answered = time.monotonic()
        sock.settimeout(IDLE_TIMEOUT + 5)
        assert sock.recv(100) == b"", "closed without a word"
        assert time.monotonic() - answered >= IDLE_TIMEOUT - 0.2


# --------------------------------------------------------------------------- oversize heads


@pytest.mark.parametrize(
    "request_head,status",
    [
        (b"GET /v2/ HTTP/1.1\r\nHost: m.test\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431),
        (
            b"GET /v2/ HTTP/1.1\r\nHost: m.test\r\n"
            + b"".join(b"X-Fill-%d: %s\r\n" % (i, b"a" * 8000) for i in range(9))
            + b"\r\n",
            431,
        ),
        (
            b"GET /v2/ HTTP/1.1\r\nHost: m.test\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(101))
            + b"\r\n",
            431,
        ),
        (b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: m.test\r\n\r\n", 414),
    ],
    ids=["header-line", "head", "header-lines", "request-line"],
)
def test_oversize_heads_get_a_json_error_then_close(
    start_proxy: StartProxy, upstream: Upstream, request_head: bytes, status: int
) -> None:
    proxy = hostile_proxy(start_proxy, upstream)
    mark = upstream.log_mark()
    with connect(proxy) as sock:
        sock.sendall(request_head)
        response = read_response(sock)
        assert_refused(response, status, "URI_TOO_LONG" if status == 414 else "HEADERS_TOO_LARGE")
        wait_closed(sock, timeout=2)
    assert upstream.requests(since=mark) == []


def test_refusals_over_tls_are_answered_then_closed(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """No half-close under TLS: the client reads the answer and the proxy closes after it."""
    ca = make_ca(tmp / "certs")
    port = free_port()
    proxy = hostile_proxy(
        start_proxy,
        upstream,
        port=port,
        scheme="https",
        listen=(f"ssl:{port}:interface={HOST}:privateKey={ca.server_key}:certKey={ca.server_cert}"),
    )
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    with context.wrap_socket(connect(proxy), server_hostname=HOST) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: m.test\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
        assert_refused(read_response(sock), 431, "HEADERS_TOO_LARGE")
        wait_closed(sock, timeout=LINGER + 2)
    with context.wrap_socket(connect(proxy), server_hostname=HOST) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: m.test\r\n")
        assert_refused(read_response(sock, timeout=HEADER_TIMEOUT + 2), 408, "REQUEST_TIMEOUT")


def test_unparseable_requests_get_a_json_400(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = hostile_proxy(start_proxy, upstream)
    with connect(proxy) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nthis line has no colon\r\n\r\n")
        assert_refused(read_response(sock), 400, "INVALID_REQUEST")


# --------------------------------------------------------------------------- oversize bodies


def spooled_files(proxy: ProxyProcess, directory: Path) -> list[str]:
    """Files the proxy holds open in C{directory} (an unlinked temporary file included)."""
    targets = []
    for fd in os.listdir(f"/proc/{proxy.pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{proxy.pid}/fd/{fd}"))
    return [t for t in targets if t.startswith(str(directory))]


def test_an_oversize_content_length_gets_413_at_once(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = hostile_proxy(start_proxy, upstream)
    with connect(proxy) as sock:
        sock.sendall(
            b"POST /v2/auth HTTP/1.1\r\nHost: m.test\r\nContent-Length: 3221225472\r\n\r\n"
        )
        assert_refused(read_response(sock, timeout=5), 413, "BODY_TOO_LARGE")
        wait_closed(sock, timeout=2)


def test_a_large_chunked_body_gets_413_and_nothing_is_written_to_disk(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """Twisted spooled every chunked body to a temporary file before the resource said no."""
    tmpdir = tmp / "proxy-tmp"
    tmpdir.mkdir()
    proxy = hostile_proxy(start_proxy, upstream, env={"TMPDIR": str(tmpdir)})
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
    sent = [0]
    stop = threading.Event()
    seen_on_disk: list[str] = []

    def send_body(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set() and sent[0] < 2 << 30:
                sock.sendall(chunk)
                sent[0] += len(chunk)
                if sent[0] % (16 << 20) < len(chunk):
                    seen_on_disk.extend(spooled_files(proxy, tmpdir))

    with connect(proxy) as sock:
        sock.sendall(
            b"POST /v2/auth HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sender = threading.Thread(target=send_body, args=(sock,), daemon=True)
        sender.start()
        try:
            assert wait_until(lambda: sent[0] >= 4 << 20 or not sender.is_alive(), 10), (
                "not sending after 10s"
            )
            seen_on_disk.extend(spooled_files(proxy, tmpdir))
            response = read_response(sock, timeout=10)
        finally:
            stop.set()
            sender.join(10)
    assert_refused(response, 413, "BODY_TOO_LARGE")
    assert seen_on_disk == [] and list(tmpdir.iterdir()) == []


# --------------------------------------------------------------------------- many connections


@contextlib.contextmanager
def fd_limit(wanted: int) -> Iterator[None]:
    """Room for C{wanted} sockets in this test process, put back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        assert hard == resource.RLIM_INFINITY or hard >= wanted, f"hard RLIMIT_NOFILE {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_two_thousand_idle_connections_are_closed_and_their_fds_come_back(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = hostile_proxy(start_proxy, upstream)
    baseline = open_fds(proxy)
    with fd_limit(4096):
        socks: list[socket.socket] = []
        answered: dict[int, float] = {}  # fd -> when its response came
        try:
            for _ in range(2000):
                sock = connect(proxy)
                socks.append(sock)
                sock.sendall(b"GET /nope HTTP/1.1\r\nHost: m.test\r\n\r\n")
                assert read_response(sock).status == 404
                answered[sock.fileno()] = time.monotonic()
            assert open_fds(proxy) >= 2000, "each connection holds a descriptor"
            ping = web.request("GET", f"{proxy.url}/v2/")
            assert ping.status == 401, "the proxy keeps answering meanwhile"
            waiting = select.poll()  # select() stops at fd 1024
            by_fd = {sock.fileno(): sock for sock in socks}
            for fd in by_fd:
                waiting.register(fd, select.POLLIN)
            while by_fd:
                for fd, _ in waiting.poll(1000):
                    assert by_fd[fd].recv(100) == b"", "an idle connection is closed silently"
                    idle = time.monotonic() - answered[fd]
                    assert IDLE_TIMEOUT - 0.2 <= idle < IDLE_TIMEOUT + 15, idle
                    waiting.unregister(fd)
                    del by_fd[fd]
                assert time.monotonic() - max(answered.values()) < IDLE_TIMEOUT + 15, (
                    f"{len(by_fd)} connections still open"
                )
        finally:
            for sock in socks:
                sock.close()
    assert wait_until(lambda: open_fds(proxy) <= baseline + 5, 10), (
        "not back to its file descriptors after 10s"
    )


def test_max_connections_keeps_the_eleventh_waiting_until_one_closes(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        "--no-cache",
        "--client-idle-timeout",
        "60",
        "--max-connections",
        "10",
    )
    request = b"GET /nope HTTP/1.1\r\nHost: m.test\r\n\r\n"
    first_ten = [connect(proxy) for _ in range(10)]
    eleventh = None
    try:
        for sock in first_ten:
            sock.sendall(request)
            assert read_response(sock).status == 404
        eleventh = connect(proxy)  # completed by the kernel: it waits in the backlog
        eleventh.sendall(request)
        assert select.select([eleventh], [], [], 1.5)[0] == [], "answered past the bound"
        first_ten.pop().close()
        assert read_response(eleventh, timeout=5).status == 404
    finally:
        for sock in [*first_ten, *([eleventh] if eleventh else [])]:
            sock.close()
