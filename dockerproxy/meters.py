"""What the lower layers report to the metrics, without knowing them.

The upstream client, the S3 store and the fleet's Redis client are below the metrics in the layering
(see tests/unit/test_layering.py): they report what happened through this
small interface, which the proxy's L{dockerproxy.admin.metrics.Metrics}
implements; L{NO_METERS} (the default) reports nowhere. Each call is made once
per upstream or S3 request, never per body chunk.
"""

from __future__ import annotations

from typing import Protocol

from twisted.web.iweb import IResponse


class Meters(Protocol):
    def upstream_answered(self, registry: str, method: bytes, response: IResponse) -> None:
        """Registry C{registry} answered a request (any status: it was reached)."""

    def upstream_failed(self, registry: str, reason: str) -> None:
        """No answer from C{registry}: C{reason} is C{error} or C{timeout}."""

    def s3_failed(self, operation: str) -> None:
        """An S3 request failed (no answer, or an error status): C{operation} is S3's name
        for it (C{HeadObject}, C{GetObject}, C{PutObject}, ...)."""

    def fleet_fallback(self, operation: str) -> None:
        """Redis did not answer the fleet's C{operation} (C{tags}, C{manifests}, C{locks},
        C{records}): the instance went on alone."""


class NoMeters:
    """Reports nowhere."""

    def upstream_answered(self, registry: str, method: bytes, response: IResponse) -> None:
        pass

    def upstream_failed(self, registry: str, reason: str) -> None:
        pass

    def s3_failed(self, operation: str) -> None:
        pass

    def fleet_fallback(self, operation: str) -> None:
        pass


NO_METERS: Meters = NoMeters()
