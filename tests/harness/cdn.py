"""A tiny CDN stand-in serving a registry's storage root, run as its own process.

    python -m tests.harness.cdn --port P --root STORAGE_ROOT

With the ``redirect`` storage middleware, docker-registry answers blob GETs with a 307 to
``baseurl`` + the blob's storage path (``/docker/registry/v2/blobs/sha256/XX/HEX/data``); this
server answers those URLs from the same directory. Like a CDN with presigned URLs it refuses
(403) any request that carries an ``Authorization`` header: a client or proxy that forwards the
registry token across the redirect fails here. GET, HEAD and single byte ranges are supported.
Each request is logged to stdout as one JSON line. ``Cdn`` is the test-side handle.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_LOG_LOCK = threading.Lock()


class CdnHandler(BaseHTTPRequestHandler):
    """Serves files below ``root``; 403 for requests with credentials."""

    server_version = "harness-cdn/1"
    protocol_version = "HTTP/1.1"
    root: Path  # set on the subclass built in main()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib access log; ``_log`` writes JSON lines instead."""

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        if self.headers.get("Authorization") is not None:
            self._error(403, "Authorization header not allowed on presigned CDN URLs")
            return
        path = self._resolve()
        if path is None or not path.is_file():
            self._error(404, "not found")
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header:
            parsed = self._parse_range(header, size)
            if parsed is None:
                self._error(416, "range not satisfiable", [("Content-Range", f"bytes */{size}")])
                return
            start, end = parsed
            status = 206
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        sent = 0
        if send_body:
            with open(path, "rb") as f:
                f.seek(start)
                while sent < length:
                    chunk = f.read(min(CHUNK, length - sent))
                    if not chunk:
                        break
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        break
                    sent += len(chunk)
        self._log(status, sent)

    def _resolve(self) -> Path | None:
        """Map the URL path into ``root``; None if it escapes it."""
        raw = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        candidate = (self.root / raw.lstrip("/")).resolve()
        root = self.root.resolve()
        if candidate != root and root not in candidate.parents:
            return None
        return candidate

    @staticmethod
    def _parse_range(header: str, size: int) -> tuple[int, int] | None:
        """One ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` range, clamped; None if unsatisfiable."""
        m = _RANGE.match(header.strip())
        if not m or (not m[1] and not m[2]):
            return None
        if not m[1]:
            n = int(m[2])
            if n == 0 or size == 0:
                return None
            return max(0, size - n), size - 1
        start = int(m[1])
        end = int(m[2]) if m[2] else size - 1
        if start >= size or end < start:
            return None
        return start, min(end, size - 1)

    def _error(self, status: int, message: str, extra: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra or []:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._log(status, 0)

    def _log(self, status: int, sent: int) -> None:
        record = {
            "ts": time.time(),
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization") is not None,
            "range": self.headers.get("Range"),
            "status": status,
            "sent": sent,
            "user_agent": self.headers.get("User-Agent"),
        }
        with _LOG_LOCK:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    handler = type("Handler", (CdnHandler,), {"root": Path(args.root)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    server.serve_forever()


# -- test-side handle ---------------------------------------------------------------------------


@dataclass
class Cdn:
    """A running CDN process; its ``url`` is the registry's redirect middleware baseurl."""

    port: int
    root: Path
    process: Any  # procs.ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_mark(self) -> int:
        """A log position for ``requests(since=...)``."""
        return int(self.process.log_size())

    def requests(self, since: int = 0, settle: float = 0.2) -> list[dict[str, Any]]:
        """Logged requests: dicts with method, path, authorization, range, status, sent.

        A request is logged after its response, so ``settle`` waits for the log to go quiet.
        """
        self.process.wait_log_quiet(settle)
        return self.process.json_lines(since)

    def stop(self) -> None:
        self.process.stop()


def start_cdn(workdir: Path, root: Path, port: int | None = None) -> Cdn:
    """Start the CDN for ``root`` (it need not exist yet); the caller must ``stop()`` it.

    Pass ``port`` when the registry's config must name the CDN before the CDN is started.
    """
    from tests.harness.ports import free_port
    from tests.harness.procs import start_harness_server

    port = port or free_port()
    args = ["--port", str(port), "--root", str(root)]
    return Cdn(port, root, start_harness_server("cdn", "tests.harness.cdn", args, workdir, port))


if __name__ == "__main__":
    main()
