"""Short, human reasons for connection-level failures, for logs and registry errors.

A leaf: the upstream client and the S3 store both describe their failures with it.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import error as net_error
from twisted.web.client import ResponseFailed, ResponseNeverReceived


def describe_failure(exc: BaseException) -> str:
    """A short human reason for a connection-level failure."""
    if isinstance(exc, ResponseNeverReceived | ResponseFailed) and exc.reasons:
        return describe_failure(exc.reasons[0].value)
    if isinstance(exc, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, net_error.DNSLookupError):
        return "host name lookup failed"
    if isinstance(exc, net_error.TimeoutError):
        return "connection timed out"
    if isinstance(exc, SSL.Error):
        return f"TLS error: {exc}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
