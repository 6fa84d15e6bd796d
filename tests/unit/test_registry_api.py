"""The registry API under C{/v2/} (L{dockerproxy.resources.RegistryResource}) relayed
without the cache: names completed, headers filtered both ways, bodies streamed, write
methods and bad names refused before any upstream request."""

from __future__ import annotations

from twisted.web.server import NOT_DONE_YET, Request

from tests.unit.proxysite import DIGEST, DOCKERD_ACCEPT, HUB_HOST, MANIFEST, ProxyTestCase, reply


class RegistryTests(ProxyTestCase):
    MANIFEST_PATH = "/v2/library/busybox/manifests/latest"

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(
            HUB_HOST,
            self.MANIFEST_PATH,
            reply(
                200,
                MANIFEST,
                content_type="application/vnd.oci.image.index.v1+json",
                docker_content_digest=DIGEST,
                etag=f'"{DIGEST}"',
                set_cookie="session=1",
                ratelimit_remaining="99;w=21600",
                x_upstream_secret="1",
            ),
        )

    def test_short_name_gets_library_prefix_upstream(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/latest")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, MANIFEST)
        [seen] = self.upstream.seen
        self.assertEqual((seen.method, seen.host, seen.path), ("GET", HUB_HOST, self.MANIFEST_PATH))

    def test_not_modified_has_no_content_length(self) -> None:
        self.upstream.on(HUB_HOST, self.MANIFEST_PATH, reply(304, etag=f'"{DIGEST}"'))
        response = self.fetch("GET", self.MANIFEST_PATH, [("If-None-Match", f'"{DIGEST}"')])
        self.assertEqual(response.status, 304)
        self.assertIsNone(response.header("content-length"))

    def test_full_name_is_kept(self) -> None:
        self.assertEqual(self.fetch("GET", self.MANIFEST_PATH).body, MANIFEST)
        self.assertEqual(self.upstream.seen[0].path, self.MANIFEST_PATH)

    def test_response_headers(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/latest")
        self.assertEqual(response.header("docker-content-digest"), DIGEST)
        self.assertEqual(response.header("etag"), f'"{DIGEST}"')
        self.assertEqual(response.header("ratelimit-remaining"), "99;w=21600")
        self.assertEqual(response.header("content-type"), "application/vnd.oci.image.index.v1+json")
        self.assertEqual(response.header("content-length"), str(len(MANIFEST)))
        self.assertIsNone(response.header("set-cookie"))
        self.assertIsNone(response.header("x-upstream-secret"))

    def test_accept_lines_are_merged(self) -> None:
        self.fetch(
            "GET", "/v2/busybox/manifests/latest", [("Accept", value) for value in DOCKERD_ACCEPT]
        )
        [seen] = self.upstream.seen
        self.assertEqual(
            seen.headers.getRawHeaders(b"accept"), [", ".join(DOCKERD_ACCEPT).encode()]
        )

    def test_request_headers(self) -> None:
        self.fetch(
            "GET",
            "/v2/busybox/manifests/latest",
            [
                ("Authorization", "Bearer tok"),
                ("If-None-Match", f'"{DIGEST}"'),
                ("Cookie", "a=b"),
                ("X-Secret", "1"),
                ("User-Agent", "docker/27"),
            ],
        )
        [seen] = self.upstream.seen
        self.assertEqual(seen.header("authorization"), "Bearer tok")
        self.assertEqual(seen.header("if-none-match"), f'"{DIGEST}"')
        self.assertIsNone(seen.header("cookie"))
        self.assertIsNone(seen.header("x-secret"))
        self.assertTrue((seen.header("user-agent") or "").startswith("dockerproxy/"))

    def test_anonymous_authorization_is_not_sent_upstream(self) -> None:
        self.fetch("GET", "/v2/busybox/manifests/latest", [("Authorization", "Basic Og==")])
        self.assertIsNone(self.upstream.seen[0].header("authorization"))

    def test_head_stays_head(self) -> None:
        response = self.fetch("HEAD", "/v2/busybox/manifests/latest")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.seen[0].method, "HEAD")
        self.assertEqual(response.header("content-length"), str(len(MANIFEST)))
        self.assertEqual(response.header("docker-content-digest"), DIGEST)
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))

    def test_blob_is_streamed(self) -> None:
        blob = bytes(range(256)) * 1024
        self.upstream.on(
            HUB_HOST,
            f"/v2/library/busybox/blobs/{DIGEST}",
            reply(200, blob, content_type="application/octet-stream"),
        )
        response = self.fetch("GET", f"/v2/busybox/blobs/{DIGEST}")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-length"), str(len(blob)))
        self.assertEqual(response.body, blob)

    def test_truncated_upstream_body_aborts_the_client(self) -> None:
        def truncated(request: Request) -> object:
            request.setHeader(b"content-length", b"100")
            request.write(b"only part")
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{DIGEST}", truncated)
        transport = self.send("GET", f"/v2/busybox/blobs/{DIGEST}")
        self.assertIn(b"\r\nContent-Length: 100\r\n", transport.value())
        self.assertTrue(transport.value().endswith(b"only part"))
        self.assertTrue(transport.disconnected, "the client connection must be aborted")

    def test_range_is_forwarded(self) -> None:
        self.upstream.on(
            HUB_HOST,
            f"/v2/library/busybox/blobs/{DIGEST}",
            reply(206, b"cde", content_range="bytes 2-4/10"),
        )
        response = self.fetch("GET", f"/v2/busybox/blobs/{DIGEST}", [("Range", "bytes=2-4")])
        self.assertEqual(response.status, 206)
        self.assertEqual(response.header("content-range"), "bytes 2-4/10")
        self.assertEqual(self.upstream.seen[0].header("range"), "bytes=2-4")

    def test_tags_list_with_paging(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/tags/list", reply(200, b'{"tags":[]}'))
        self.fetch("GET", "/v2/busybox/tags/list?n=10&last=1.36&other=x")
        self.assertEqual(self.upstream.seen[0].query, {"n": ["10"], "last": ["1.36"]})

    def test_tags_list_drops_bad_paging(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/tags/list", reply(200, b'{"tags":[]}'))
        self.fetch("GET", "/v2/busybox/tags/list?n=-1&last=../x")
        self.assertEqual(self.upstream.seen[0].query, {})

    def test_upstream_errors_are_relayed(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/nope")
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json()["errors"][0]["code"], "NAME_UNKNOWN")

    def test_write_methods_are_refused(self) -> None:
        for method in ("PUT", "POST", "PATCH", "DELETE"):
            response = self.fetch(method, "/v2/busybox/manifests/latest")
            self.assertRegistryError(response, 405, "UNSUPPORTED")
            self.assertEqual(response.header("allow"), "GET, HEAD")
        self.assertEqual(self.upstream.seen, [])

    def test_uploads_are_refused(self) -> None:
        self.assertRegistryError(
            self.fetch("POST", "/v2/busybox/blobs/uploads/"), 405, "UNSUPPORTED"
        )
        self.assertRegistryError(
            self.fetch("GET", "/v2/busybox/blobs/uploads/some-uuid"), 405, "UNSUPPORTED"
        )
        self.assertEqual(self.upstream.seen, [])

    def test_catalog_is_refused(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/_catalog"), 405, "UNSUPPORTED")
        self.assertEqual(self.upstream.seen, [])

    def test_bad_digest(self) -> None:
        entry = self.assertRegistryError(
            self.fetch("GET", "/v2/busybox/blobs/sha256:abc"), 400, "DIGEST_INVALID"
        )
        self.assertEqual(entry["detail"], {"digest": "sha256:abc"})
        self.assertEqual(self.upstream.seen, [])

    def test_bad_name(self) -> None:
        for path in (
            "/v2/BusyBox/manifests/latest",
            "/v2/a/../b/manifests/latest",
            "/v2/a%2Fb/manifests/latest",
            "/v2//busybox/manifests/latest",
        ):
            self.assertRegistryError(self.fetch("GET", path), 400, "NAME_INVALID")
        self.assertEqual(self.upstream.seen, [])

    def test_bad_tag_is_an_unknown_manifest_never_asked_upstream(self) -> None:
        for method in ("GET", "HEAD"):
            for reference in ("-x", ".INVALID_MANIFEST_NAME"):
                response = self.fetch(method, f"/v2/busybox/manifests/{reference}")
                self.assertEqual(response.status, 404)
                if method == "GET":
                    self.assertRegistryError(response, 404, "MANIFEST_UNKNOWN")
        self.assertEqual(self.upstream.seen, [])

    def test_unknown_api_path(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/busybox/signatures/x"), 404, "NOT_FOUND")

    def test_unknown_page(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/favicon.ico"), 404, "NOT_FOUND")
        self.assertRegistryError(self.fetch("DELETE", "/elsewhere"), 404, "NOT_FOUND")

    def test_head_error_has_no_body(self) -> None:
        response = self.fetch("HEAD", "/v2/busybox/blobs/sha256:abc")
        self.assertEqual(response.status, 400)
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))
