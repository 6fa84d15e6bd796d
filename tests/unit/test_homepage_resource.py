"""The home page at C{/} through the whole Site (L{dockerproxy.resources.RootResource});
the page itself is tested in test_homepage.py."""

from __future__ import annotations

from tests.unit.proxysite import ProxyTestCase


class UsagePageTests(ProxyTestCase):
    def test_usage_page(self) -> None:
        response = self.fetch("GET", "/", host="mirror.example.org:5000")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        self.assertIn(b"mirror.example.org:5000", response.body)
        self.assertEqual(self.upstream.seen, [])

    def test_usage_page_head(self) -> None:
        response = self.fetch("HEAD", "/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")

    def test_post_to_usage_page_is_a_json_error(self) -> None:
        self.assertRegistryError(self.fetch("POST", "/"), 405, "UNSUPPORTED")
