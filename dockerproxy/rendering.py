"""How every resource answers: coroutines run per request, and registry JSON errors.

Each handler is a coroutine run with L{ensureDeferred}; C{render} returns
C{NOT_DONE_YET} and cancels the coroutine when the client goes away, so no
upstream work outlives the request it was for. Every error a resource raises
or meets becomes a registry JSON error, never a traceback or an HTML page.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy import errors
from dockerproxy.relay import abort_client, client_gone

log = Logger()


def render_async(request: Request, handler: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run C{handler} for C{request}; turn its errors into registry JSON errors."""
    d: Deferred[None] = ensureDeferred(handler())
    request.notifyFinish().addErrback(lambda _: d.cancel())
    d.addErrback(_fail_request, request)
    return NOT_DONE_YET


def _fail_request(failure: Failure, request: Request) -> None:
    if failure.check(CancelledError) or client_gone(request):
        return
    if isinstance(failure.value, errors.RegistryError):
        error = failure.value
    else:
        log.failure(
            "unexpected error handling {method} {path}",
            failure,
            method=request.method,
            path=request.path,
        )
        error = errors.RegistryError(500, "UNKNOWN", "internal proxy error")
    if request.startedWriting:
        abort_client(request)
        return
    respond_error(request, error)


def error_page(request: Request, error: errors.RegistryError) -> bytes:
    """Set C{error}'s status and headers; return its body, empty for HEAD."""
    body = errors.write_error(request, error)
    return b"" if request.method == b"HEAD" else body


def respond_error(request: Request, error: errors.RegistryError) -> None:
    request.write(error_page(request, error))
    request.finish()


class JSONErrorPage(Resource):
    """A fixed registry error for any method: used for unknown paths."""

    isLeaf = True

    def __init__(self, error: errors.RegistryError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: Request) -> bytes:
        return error_page(request, self.error)


class PullResource(Resource):
    """A resource answering C{methods}; other methods get a registry JSON 405.

    Twisted's own 405/501 pages are HTML, which registry clients cannot show.
    """

    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def render(self, request: Request) -> int | bytes:
        if request.method not in self.methods:
            return refuse_method(request)
        return super().render(request)


def refuse_method(request: Request) -> bytes:
    error = errors.unsupported(
        "this proxy only serves pulls: "
        f"{request.method.decode('ascii', 'replace')} is not supported"
    )
    request.setHeader(b"allow", b"GET, HEAD")
    return error_page(request, error)
