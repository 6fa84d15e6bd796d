"""Registry-style JSON errors.

Every error the proxy produces itself uses the OCI distribution error format, so
registry clients show a useful message instead of choking on HTML or a traceback.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from twisted.web.iweb import IRequest


class RegistryError(Exception):
    """An error to answer with C{{"errors": [{"code", "message", "detail"}]}}."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.detail)


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode("utf-8") + b"\n"


def write_error(request: IRequest, error: RegistryError) -> bytes:
    """Set status and headers on C{request} and return the body to write.

    Headers copied from an upstream response before the failure are dropped so
    the error body is never described by, say, a blob's Content-Length.
    """
    body = error.body()
    request.setResponseCode(error.status, reason_phrase(error.status))
    for name in (b"content-length", b"docker-content-digest", b"etag", b"content-range"):
        request.responseHeaders.removeHeader(name)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"docker-distribution-api-version", b"registry/2.0")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def name_invalid(name: str) -> RegistryError:
    return RegistryError(400, "NAME_INVALID", "invalid repository name", {"name": name})


def digest_invalid(digest: str) -> RegistryError:
    return RegistryError(400, "DIGEST_INVALID", "invalid digest", {"digest": digest})


def unsupported(message: str) -> RegistryError:
    return RegistryError(405, "UNSUPPORTED", message)


def not_found(message: str, detail: Any = None) -> RegistryError:
    return RegistryError(404, "NAME_UNKNOWN", message, detail)


def bad_gateway(upstream: str, reason: str) -> RegistryError:
    return RegistryError(
        502, "UNAVAILABLE", f"upstream {upstream} failed: {reason}", {"upstream": upstream}
    )


def gateway_timeout(upstream: str, what: str) -> RegistryError:
    return RegistryError(
        504, "UNAVAILABLE", f"upstream {upstream} timed out: {what}", {"upstream": upstream}
    )


def reason_phrase(status: int) -> bytes | None:
    """The standard reason phrase (Twisted has none for 429 or 431); None when unknown."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return None


# Registry error codes for an upstream status whose body is not a registry error.
_UPSTREAM_CODES = {
    400: "UNKNOWN",
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "NAME_UNKNOWN",
    405: "UNSUPPORTED",
    429: "TOOMANYREQUESTS",
}


def upstream_status(upstream: str, status: int) -> RegistryError:
    """An upstream's 4xx/5xx whose body was not JSON (an HTML error page): its status kept,
    the body replaced by a registry error naming the upstream."""
    code = _UPSTREAM_CODES.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN")
    phrase = (reason_phrase(status) or b"error").decode()
    return RegistryError(
        status,
        code,
        f"upstream {upstream} answered {status} {phrase}",
        {"upstream": upstream, "status": status},
    )
