"""The admin listener's resources: C{/metrics}, C{/healthz}, C{/readyz}, C{/status},
C{/status.json}, on a Site of their own (never the proxy's resource tree).

On a listener beyond loopback every page is L{dockerproxy.admin.gate.Gated}: for
admins only.
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from dockerproxy.admin import statuspage
from dockerproxy.admin.gate import Admission, CheckAdmin, Gated
from dockerproxy.admin.health import Readiness, ReadinessCheck
from dockerproxy.admin.metrics import Metrics
from dockerproxy.admin.status import StatusSources, status_document
from dockerproxy.channel import BodyBuffer, ProxyChannel
from dockerproxy.config import ClientLimits
from dockerproxy.languages import pick_language
from dockerproxy.listeners import ConnectionLimit

log = Logger()


def _text(request: Request, status: int, body: bytes, content_type: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return b"" if request.method == b"HEAD" else body


def _json(request: Request, status: int, document: Any) -> bytes:
    body = json.dumps(document, separators=(",", ":")).encode() + b"\n"
    return _text(request, status, body, b"application/json; charset=utf-8")


class Leaf(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes | int:
        raise NotImplementedError

    def render_HEAD(self, request: Request) -> bytes | int:
        return self.render_GET(request)


class MetricsPage(Leaf):
    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.exposition(accept.decode("latin-1") if accept else None)
        return _text(request, 200, body, content_type.encode())


class Healthz(Leaf):
    """The process answers: nothing else is checked (see C{/readyz})."""

    def render_GET(self, request: Request) -> bytes:
        return _text(request, 200, b"ok\n", b"text/plain; charset=utf-8")


class Readyz(Leaf):
    """200 when ready for traffic, else 503; the body names each check's outcome."""

    def __init__(self, check: ReadinessCheck) -> None:
        super().__init__()
        self.check = check

    def render_GET(self, request: Request) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(readiness: Readiness) -> None:
            if not gone:
                request.write(
                    _json(
                        request,
                        200 if readiness.ready else 503,
                        {"ready": readiness.ready, "checks": readiness.checks},
                    )
                )
                request.finish()

        def failed(failure: Failure) -> None:
            log.failure("readiness check", failure)
            answer(Readiness({"error": "the check failed"}))

        ensureDeferred(self.check.check()).addCallbacks(answer, failed)
        return NOT_DONE_YET


class StatusJSON(Leaf):
    def __init__(self, sources: StatusSources) -> None:
        super().__init__()
        self.sources = sources

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, status_document(self.sources))


class StatusPage(Leaf):
    def __init__(self, sources: StatusSources) -> None:
        super().__init__()
        self.sources = sources

    def render_GET(self, request: Request) -> bytes:
        override = request.args.get(b"lang", [b""])[0].decode("ascii", "replace")
        accept = (request.getHeader(b"accept-language") or b"").decode("latin-1")
        lang = pick_language(accept, override or None, statuspage.STATUS_LANGUAGES)
        body = statuspage.render(status_document(self.sources), lang)
        request.setHeader(b"content-language", lang.encode())
        request.setHeader(b"vary", b"Accept-Language")
        return _text(request, 200, body, b"text/html; charset=utf-8")


class NotFound(Leaf):
    def render_GET(self, request: Request) -> bytes:
        return _text(request, 404, b"not found\n", b"text/plain; charset=utf-8")


class AdminRoot(Resource):
    """The pages by path; with C{check_admin}, only for an admin's Basic credentials."""

    def __init__(
        self,
        metrics: Metrics,
        readiness: ReadinessCheck,
        sources: StatusSources,
        check_admin: CheckAdmin | None = None,
    ) -> None:
        super().__init__()
        self.admission = None if check_admin is None else Admission(check_admin, sources.clock)
        self.pages: dict[bytes, Resource] = {
            b"metrics": MetricsPage(metrics),
            b"healthz": Healthz(),
            b"readyz": Readyz(readiness),
            b"status": StatusPage(sources),
            b"status.json": StatusJSON(sources),
        }
        self.not_found = NotFound()

    def getChild(self, path: bytes, request: Request) -> Resource:
        page = self.page_for(path, request)
        return page if self.admission is None else Gated(self.admission, page)

    def page_for(self, path: bytes, request: Request) -> Resource:
        if request.postpath:
            return self.not_found
        if request.method not in (b"GET", b"HEAD"):
            return MethodNotAllowed()
        return self.pages.get(path, self.not_found)


class MethodNotAllowed(Leaf):
    def render(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"GET, HEAD")
        return _text(request, 405, b"method not allowed\n", b"text/plain; charset=utf-8")


class AdminSite(Site):
    """A Site for the admin pages over the proxy's bounded channel (L{ProxyChannel}:
    request size, header and idle deadlines, as on the proxy's own port), with no
    per-request log line (Prometheus scrapes every few seconds) and no tracebacks."""

    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(self, root: Resource, reactor: Any, limits: ClientLimits | None = None) -> None:
        super().__init__(root, reactor=reactor, timeout=None, parsePOSTFormSubmission=False)
        self.displayTracebacks = False
        self.limits = limits or ClientLimits()
        self.connections: ConnectionLimit | None = None  # set with the listeners

    def buildProtocol(self, addr: IAddress | None) -> ProxyChannel:  # type: ignore[override]
        channel = cast(ProxyChannel, super().buildProtocol(addr))
        channel.clock = self.reactor
        channel.limits = self.limits
        channel.connections = self.connections
        return channel

    def getContentFile(self, length: int | None) -> BodyBuffer:
        return BodyBuffer()

    def acceptableProtocols(self) -> list[bytes]:
        """HTTP/1.1 only by ALPN: Twisted's Site offers h2 whenever the h2 package is there,
        which this site's channel does not speak."""
        return [b"http/1.1"]

    def log(self, request: Any) -> None:
        pass
