"""Every error the proxy makes itself is a registry JSON error (L{dockerproxy.errors})."""

from __future__ import annotations

from dockerproxy.config import build_config
from tests.unit.proxysite import MIRROR, ProxyTestCase


class JSONErrorTests(ProxyTestCase):
    def test_proxy_errors_are_registry_json(self) -> None:
        self.use(build_config({"routes": {"ghcr.mirror.test": "https://ghcr.io"}}, {}))
        cases = [
            ("GET", "/nope", MIRROR),
            ("GET", "/v2/Bad/manifests/x", "ghcr.mirror.test"),
            ("GET", "/v2/a/blobs/sha256:0", "ghcr.mirror.test"),
            ("GET", "/v2/a/manifests/x", "unrouted.test"),
            ("DELETE", "/v2/a/manifests/x", "ghcr.mirror.test"),
            ("POST", "/v2/", "ghcr.mirror.test"),
            ("PATCH", "/v2/auth", "ghcr.mirror.test"),
            ("OPTIONS", "/", "ghcr.mirror.test"),
            ("GET", "/v2/_catalog", "ghcr.mirror.test"),
        ]
        for method, path, host in cases:
            response = self.fetch(method, path, host=host)
            self.assertGreaterEqual(response.status, 400, (method, path))
            self.assertEqual(
                response.header("content-type"), "application/json; charset=utf-8", (method, path)
            )
            self.assertNotIn(b"Traceback", response.raw)
            [entry] = response.json()["errors"]
            self.assertEqual(set(entry) - {"detail"}, {"code", "message"}, (method, path))
