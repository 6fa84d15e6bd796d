"""A registry that misbehaves on purpose, by repository name, on 127.0.0.1.

``/v2/fault/<behaviour>/blobs/<digest>`` and ``/v2/fault/<behaviour>/manifests/<ref>`` answer
with the named fault; ``/v2/`` challenges with a token realm that redirects once before it
answers. Every request is recorded (method, path, headers) so tests can see what reached it.
One request per connection (``Connection: close``), handled on its own thread.

Behaviours: ``ok``, ``stall-before-headers``, ``stall-after-headers``, ``truncated``,
``endless`` (chunked, never ends), ``wrong-digest`` (the bytes of another blob), ``html-500``,
``429`` (with ``Retry-After: 7``), ``redirect-loop``, ``redirect-away`` (to a second server on
127.0.0.2, which records whether Authorization reached it).
"""

from __future__ import annotations

import hashlib
import json
import socketserver
import threading
from dataclasses import dataclass, field

BLOB = bytes(range(256)) * 1024  # 256 KiB
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
OTHER = b"not the blob you asked for" * 1000
OTHER_DIGEST = "sha256:" + hashlib.sha256(OTHER).hexdigest()
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": BLOB_DIGEST,
            "size": len(BLOB),
        },
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
SERVICE = "misbehaving.test"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _State:
    host: str
    away: str = ""  # "host:port" of the redirect target server
    seen: list[Seen] = field(default_factory=list)
    endless_stopped: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(65536).decode("latin-1").strip()
        if not line:
            return
        method, target, _ = [*line.split(" "), "", ""][:3]
        headers: dict[str, str] = {}
        while header := self.rfile.readline(65536).decode("latin-1").strip():
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        state = self.server.state
        with state.lock:
            state.seen.append(Seen(method, target, headers))
        try:
            self.answer(method, target.split("?")[0], state)
        except OSError:
            pass  # the proxy went away: as it should when its client does

    def send(self, status: str, headers: dict[str, str], body: bytes = b"") -> None:
        head = [
            f"HTTP/1.1 {status}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def answer(self, method: str, path: str, state: _State) -> None:
        body_allowed = method != "HEAD"
        if path == "/v2/":
            realm = f"http://{state.host}/token-redirect"
            return self.send(
                "401 Unauthorized",
                {
                    "WWW-Authenticate": f'Bearer realm="{realm}",service="{SERVICE}"',
                    "Content-Type": "application/json",
                    "Content-Length": "2",
                },
                b"{}",
            )
        if path == "/token-redirect":
            return self.send(
                "307 Temporary Redirect",
                {"Location": f"http://{state.host}/token", "Content-Length": "0"},
            )
        if path == "/token":
            token = json.dumps({"token": "t", "access_token": "t", "expires_in": 300}).encode()
            return self.send(
                "200 OK",
                {"Content-Type": "application/json", "Content-Length": str(len(token))},
                token,
            )
        parts = path.split("/")  # "", "v2", "fault", behaviour, kind, reference
        if len(parts) != 6 or parts[2] != "fault":
            return self.send(
                "404 Not Found", {"Content-Type": "application/json", "Content-Length": "2"}, b"{}"
            )
        behaviour, kind = parts[3], parts[4]
        body, kind_headers = (
            (MANIFEST, {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": MANIFEST_DIGEST})
            if kind == "manifests"
            else (BLOB, {"Content-Type": "application/octet-stream"})
        )
        if behaviour == "wrong-digest":
            body = OTHER
        sized = {**kind_headers, "Content-Length": str(len(body))}
        if behaviour in ("ok", "wrong-digest"):
            return self.send("200 OK", sized, body if body_allowed else b"")
        if behaviour == "stall-before-headers":
            state.stop.wait()
            return None
        if behaviour == "stall-after-headers":
            self.send("200 OK", sized, body[: len(body) // 2] if body_allowed else b"")
            state.stop.wait()
            return None
        if behaviour == "truncated":
            return self.send("200 OK", sized, body[: len(body) // 2] if body_allowed else b"")
        if behaviour == "endless":
            self.send("200 OK", {**kind_headers, "Transfer-Encoding": "chunked"})
            chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            try:
                while body_allowed and not state.stop.is_set():
                    self.wfile.write(chunk)
            except OSError:
                with state.lock:
                    state.endless_stopped += 1  # the proxy closed the connection
            return None
        if behaviour == "html-500":
            page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            return self.send(
                "500 Internal Server Error",
                {"Content-Type": "text/html", "Content-Length": str(len(page))},
                page,
            )
        if behaviour == "429":
            return self.send(
                "429 Too Many Requests",
                {"Retry-After": "7", "Content-Type": "text/plain", "Content-Length": "9"},
                b"slow down",
            )
        if behaviour == "redirect-loop":
            return self.send("302 Found", {"Location": path, "Content-Length": "0"})
        if behaviour == "redirect-away":
            location = f"http://{state.away}/v2/fault/ok/{kind}/{parts[5]}"
            return self.send(
                "307 Temporary Redirect", {"Location": location, "Content-Length": "0"}
            )
        return self.send("400 Bad Request", {"Content-Length": "0"})


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        super().__init__(address, _Handler)
        self.state = state


class Misbehaving:
    """The misbehaving registry on 127.0.0.1 and its redirect target on 127.0.0.2."""

    def __init__(self) -> None:
        self._servers: list[_Server] = []
        away = self._start("127.0.0.2", _State(host=""))
        self.away_state = away.state
        main = self._start("127.0.0.1", _State(host="", away=self._address(away)))
        self.state = main.state
        self.state.host = self._address(main)
        self.away_state.host = self._address(away)

    def _start(self, host: str, state: _State) -> _Server:
        server = _Server((host, 0), state)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers.append(server)
        return server

    @staticmethod
    def _address(server: _Server) -> str:
        host, port = server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.state.host}"

    def seen(self, state: _State | None = None) -> list[Seen]:
        state = state or self.state
        with state.lock:
            return list(state.seen)

    def stop(self) -> None:
        for server in self._servers:
            server.state.stop.set()
            server.shutdown()
            server.server_close()
