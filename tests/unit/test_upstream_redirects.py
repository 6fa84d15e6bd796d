"""Upstream redirects followed on the proxy side (L{dockerproxy.upstream.UpstreamClient}):
the client never sees a CDN, and its Authorization never leaves the upstream's origin."""

from __future__ import annotations

from tests.unit.proxysite import (
    CDN_HOST,
    DIGEST,
    HUB_HOST,
    ProxyTestCase,
    Response,
    redirect,
    reply,
)


class RedirectTests(ProxyTestCase):
    BLOB_PATH = f"/v2/library/busybox/blobs/{DIGEST}"

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(CDN_HOST, "/blob", reply(200, b"blob bytes"))

    def get_blob(self, method: str = "GET") -> Response:
        return self.fetch(
            method,
            f"/v2/busybox/blobs/{DIGEST}",
            [("Authorization", "Bearer tok"), ("Range", "bytes=0-")],
        )

    def test_cross_host_redirect_is_followed(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/blob?sig=1"))
        response = self.get_blob()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"blob bytes")
        self.assertIsNone(response.header("location"))

    def test_cross_host_redirect_drops_authorization(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/blob?sig=1"))
        self.get_blob()
        hub, cdn = self.upstream.seen
        self.assertEqual(hub.header("authorization"), "Bearer tok")
        self.assertIsNone(cdn.header("authorization"))
        self.assertEqual(cdn.header("range"), "bytes=0-")
        self.assertEqual(cdn.query, {"sig": ["1"]})

    def test_redirect_keeps_the_method(self) -> None:
        for code in (301, 302, 307, 308):
            self.upstream.seen.clear()
            self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/blob", code))
            self.get_blob("HEAD")
            self.assertEqual([s.method for s in self.upstream.seen], ["HEAD", "HEAD"])

    def test_see_other_becomes_get(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", redirect(f"https://{CDN_HOST}/blob", 303))
        self.upstream.on(CDN_HOST, "/blob", reply(200, b"{}"))
        self.fetch("GET", "/v2/")
        self.assertEqual([s.method for s in self.upstream.seen], ["GET", "GET"])

    def test_relative_location_is_resolved_against_the_upstream(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect("/storage/blob?sig=2"))
        self.upstream.on(HUB_HOST, "/storage/blob", reply(200, b"stored"))
        response = self.get_blob()
        self.assertEqual(response.body, b"stored")
        second = self.upstream.seen[1]
        self.assertEqual(
            (second.host, second.path, second.query), (HUB_HOST, "/storage/blob", {"sig": ["2"]})
        )

    def test_same_origin_redirect_keeps_authorization(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{HUB_HOST}:443/storage"))
        self.upstream.on(HUB_HOST, "/storage", reply(200, b"stored"))
        self.get_blob()
        self.assertEqual(
            [s.header("authorization") for s in self.upstream.seen], ["Bearer tok", "Bearer tok"]
        )

    def test_authorization_stays_dropped_after_leaving_the_origin(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/hop"))
        self.upstream.on(CDN_HOST, "/hop", redirect(f"https://{HUB_HOST}/storage"))
        self.upstream.on(HUB_HOST, "/storage", reply(200, b"stored"))
        self.assertEqual(self.get_blob().body, b"stored")
        self.assertEqual(
            [s.header("authorization") for s in self.upstream.seen], ["Bearer tok", None, None]
        )

    def test_five_redirects_are_followed(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/r1"))
        for hop in range(1, 5):
            self.upstream.on(CDN_HOST, f"/r{hop}", redirect(f"/r{hop + 1}"))
        self.upstream.on(CDN_HOST, "/r5", reply(200, b"far"))
        self.assertEqual(self.get_blob().body, b"far")

    def test_more_than_five_redirects_is_a_bad_gateway(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(self.BLOB_PATH))
        entry = self.assertRegistryError(self.get_blob(), 502, "UNAVAILABLE")
        self.assertIn("redirects", entry["message"])
        self.assertEqual(len(self.upstream.seen), 6)

    def test_redirect_to_another_scheme_is_a_bad_gateway(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect("ftp://cdn.test/blob"))
        self.assertRegistryError(self.get_blob(), 502, "UNAVAILABLE")
        self.assertEqual(len(self.upstream.seen), 1)

    def test_redirect_without_location_is_relayed(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, reply(302, b"nowhere"))
        response = self.get_blob()
        self.assertEqual(response.status, 302)
        self.assertEqual(response.body, b"nowhere")
