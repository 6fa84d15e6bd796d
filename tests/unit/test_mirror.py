"""The mirror's manifest and tag logic, over the fake upstream of test_resources."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from twisted.web.server import Request

from dockerproxy.config import CacheConfig, Config, build_config
from tests.unit.fakes import scratch_dir
from tests.unit.proxysite import HUB_HOST, MANIFEST, ProxyTestCase, make_parts, reply

INDEX = "application/vnd.oci.image.index.v1+json"
SINGLE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_SINGLE = "application/vnd.docker.distribution.manifest.v2+json"
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
OTHER = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","x":1}'
OTHER_DIGEST = "sha256:" + hashlib.sha256(OTHER).hexdigest()
TAG_PATH = "/v2/library/busybox/manifests/latest"
TTL = 300.0
STALE = 3600.0


class MirrorTestCase(ProxyTestCase):
    def use(self, config: Config, http: Any = None) -> None:
        cache = CacheConfig(directory=str(scratch_dir(self)), tag_ttl=TTL,
                            stale_max_age=STALE)
        self.proxy, self.mirror, self.site = make_parts(replace(config, cache=cache),
                                                        self.clock, http or self.stub)

    def setUp(self) -> None:
        super().setUp()
        self.serve_tag(MANIFEST, DIGEST)

    def serve_tag(self, body: bytes, digest: str, code: int = 200) -> None:
        def handle(request: Request) -> bytes:
            request.setResponseCode(code)
            if code != 200:
                return b'{"errors":[{"code":"UNAVAILABLE","message":"down"}]}'
            request.setHeader(b"content-type", INDEX.encode())
            request.setHeader(b"docker-content-digest", digest.encode())
            request.setHeader(b"content-length", b"%d" % len(body))
            return b"" if request.method == b"HEAD" else body

        self.upstream.on(HUB_HOST, TAG_PATH, handle)

    def pull(self, method: str = "GET", accept: str = INDEX, path: str = TAG_PATH,
             auth: str | None = None) -> Any:
        headers = [("Accept", accept)]
        if auth is not None:
            headers.append(("Authorization", auth))
        return self.fetch(method, path.replace("/library/busybox/", "/busybox/"), headers)

    def upstream_calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.upstream.seen if s.host == HUB_HOST]


class TagTests(MirrorTestCase):
    def test_a_pulled_tag_is_served_from_cache(self) -> None:
        first = self.pull()
        self.assertEqual((first.status, first.body), (200, MANIFEST))
        second = self.pull()
        self.assertEqual((second.status, second.body), (200, MANIFEST))
        self.assertEqual(second.header("docker-content-digest"), DIGEST)
        self.assertEqual(second.header("content-type"), INDEX)
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH)])
        self.assertEqual(self.access[-1]["cache"], "hit")

    def test_head_and_get_agree(self) -> None:
        self.pull()
        head = self.pull("HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header("content-length"), str(len(MANIFEST)))
        self.assertEqual(head.header("docker-content-digest"), DIGEST)
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH)])

    def test_a_client_that_does_not_accept_the_cached_type_goes_upstream(self) -> None:
        self.pull()
        self.pull(accept=SINGLE)
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH), ("GET", TAG_PATH)])

    def test_after_the_ttl_a_head_revalidates(self) -> None:
        self.pull()
        self.clock.advance(TTL + 1)
        response = self.pull()
        self.assertEqual(response.body, MANIFEST)
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH), ("HEAD", TAG_PATH)])
        self.assertEqual(self.access[-1]["cache"], "revalidated")
        self.pull()
        self.assertEqual(len(self.upstream_calls()), 2, "revalidation restarts the TTL")

    def test_a_moved_tag_is_fetched_again(self) -> None:
        self.pull()
        self.serve_tag(OTHER, OTHER_DIGEST)
        self.clock.advance(TTL + 1)
        response = self.pull()
        self.assertEqual(response.body, OTHER)
        self.assertEqual(self.upstream_calls(),
                         [("GET", TAG_PATH), ("HEAD", TAG_PATH), ("GET", TAG_PATH)])

    def test_stale_if_error(self) -> None:
        self.pull()
        self.serve_tag(MANIFEST, DIGEST, code=503)
        self.clock.advance(TTL + 1)
        stale = self.pull()
        self.assertEqual((stale.status, stale.body), (200, MANIFEST))
        self.assertIn("Stale", stale.header("warning") or "")
        self.assertEqual(self.access[-1]["cache"], "stale")

    def test_too_stale_is_not_served(self) -> None:
        self.pull()
        self.serve_tag(MANIFEST, DIGEST, code=503)
        self.clock.advance(STALE + 1)
        self.assertEqual(self.pull().status, 503)

    def test_rate_limited_upstream_serves_stale(self) -> None:
        self.pull()
        self.serve_tag(MANIFEST, DIGEST, code=429)
        self.clock.advance(TTL + 1)
        self.assertEqual(self.pull().body, MANIFEST)


class DigestTests(MirrorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/manifests/{DIGEST}", reply(
            200, MANIFEST, content_type=INDEX, docker_content_digest=DIGEST))
        self.upstream.on(HUB_HOST, f"/v2/library/other/manifests/{DIGEST}", reply(
            200, MANIFEST, content_type=INDEX, docker_content_digest=DIGEST))

    def test_manifests_by_digest_are_cached(self) -> None:
        path = f"/v2/library/busybox/manifests/{DIGEST}"
        self.pull(path=path)
        self.assertEqual(self.pull(path=path).body, MANIFEST)
        self.assertEqual(len(self.upstream_calls()), 1)

    def test_a_digest_cached_in_one_repository_is_not_trusted_in_another(self) -> None:
        self.pull(path=f"/v2/library/busybox/manifests/{DIGEST}")
        self.pull(path=f"/v2/library/other/manifests/{DIGEST}")
        self.assertEqual([p for _, p in self.upstream_calls()], [
            f"/v2/library/busybox/manifests/{DIGEST}", f"/v2/library/other/manifests/{DIGEST}"])

    def test_a_manifest_that_does_not_match_its_digest_is_refused_and_not_cached(self) -> None:
        path = f"/v2/library/busybox/manifests/{OTHER_DIGEST}"
        self.upstream.on(HUB_HOST, path, reply(200, MANIFEST, content_type=INDEX))
        first = self.pull(path=path)
        self.assertRegistryError(first, 502, "UNAVAILABLE")
        self.pull(path=path)
        self.assertEqual(len(self.upstream_calls()), 2)

    def test_a_digest_the_cache_cannot_key_goes_upstream(self) -> None:
        """The grammar allows algorithms such as C{foo+bar}; the cache keys only sha256 and
        sha512, so any other digest is a miss relayed from the upstream, not a 500."""
        path = "/v2/library/busybox/manifests/foo+bar:abc="
        unknown = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
        self.upstream.on(HUB_HOST, path, reply(404, unknown))
        response = self.pull(path=path)
        self.assertEqual((response.status, response.body), (404, unknown))
        self.assertEqual(self.upstream_calls(), [("GET", path)])


class AcceptTests(MirrorTestCase):
    """A manifest by digest is the same bytes whatever the Accept; a tag honours it."""

    def test_a_manifest_by_digest_is_a_hit_whatever_the_clients_accept(self) -> None:
        """A Docker image pulled by digest by an OCI-only client, as containerd configured
        for OCI types only sends: the upstream returns it by digest anyway, so the cache
        must too, rather than missing every time."""
        manifest = b'{"schemaVersion":2,"mediaType":"' + DOCKER_SINGLE.encode() + b'"}'
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        path = f"/v2/library/busybox/manifests/{digest}"
        self.upstream.on(HUB_HOST, path, reply(200, manifest, content_type=DOCKER_SINGLE,
                                                docker_content_digest=digest))
        self.assertEqual(self.pull(path=path, accept=DOCKER_SINGLE).body, manifest)
        for accept in (f"{SINGLE}, {INDEX}", "", "text/html"):
            response = self.pull(path=path, accept=accept)
            self.assertEqual((response.status, response.body), (200, manifest), accept)
            self.assertEqual(response.header("content-type"), DOCKER_SINGLE)
            self.assertEqual(response.header("docker-content-digest"), digest)
            self.assertEqual(self.access[-1]["cache"], "hit", accept)
        self.assertEqual(self.upstream_calls(), [("GET", path)])

    def test_a_tag_still_honours_accept_when_its_index_is_served_by_digest(self) -> None:
        self.pull()  # the tag names an index: cached, and its digest linked
        by_digest = self.pull(path=f"/v2/library/busybox/manifests/{DIGEST}", accept=SINGLE)
        self.assertEqual((by_digest.status, by_digest.body), (200, MANIFEST))
        self.assertEqual(by_digest.header("content-type"), INDEX)
        self.assertEqual(self.access[-1]["cache"], "hit")
        self.pull(accept=SINGLE)
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH), ("GET", TAG_PATH)],
                         "the index is never served by tag to a client that does not accept it")


class AccessTests(MirrorTestCase):
    def test_credentials_grants_are_not_shared(self) -> None:
        self.pull(auth="Bearer alice")
        self.pull(auth="Bearer alice")
        self.assertEqual(len(self.upstream_calls()), 1)
        self.pull(auth="Bearer bob")
        self.pull()
        self.assertEqual(len(self.upstream_calls()), 3, "bob and anonymous went upstream")

    def test_anonymous_success_makes_the_repository_public(self) -> None:
        self.pull()
        self.pull(auth="Bearer bob")
        self.assertEqual(len(self.upstream_calls()), 1)

    def test_a_refusal_is_relayed_and_revokes(self) -> None:
        self.pull(auth="Bearer alice")
        self.clock.advance(61)
        self.serve_tag(MANIFEST, DIGEST, code=401)
        self.assertEqual(self.pull(auth="Bearer alice").status, 401)


def test_cache_config_defaults_and_errors() -> None:
    config = build_config({}, {"cache_dir": "/tmp/x", "cache_max_size": "30MiB"})
    assert config.cache.directory == "/tmp/x"
    assert config.cache.max_size == 30 * 1024 * 1024
    assert build_config({}, {"cache_enabled": False}).cache.directory is None
    assert build_config({"cache": {"max_size": "2GB"}}, {}).cache.max_size == 2 * 10**9


class ConditionalTests(MirrorTestCase):
    def test_if_none_match_on_a_cached_manifest_is_a_304(self) -> None:
        self.pull()
        for value in (f'"{DIGEST}"', DIGEST, f'"sha256:{"0" * 64}", "{DIGEST}"', "*"):
            response = self.fetch("GET", "/v2/busybox/manifests/latest",
                                  [("Accept", INDEX), ("If-None-Match", value)])
            self.assertEqual((response.status, response.body), (304, b""), value)
            self.assertEqual(response.header("etag"), f'"{DIGEST}"')
        other = self.fetch("GET", "/v2/busybox/manifests/latest",
                           [("Accept", INDEX), ("If-None-Match", f'"sha256:{"0" * 64}"')])
        self.assertEqual((other.status, other.body), (200, MANIFEST))
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH)])


class BlobStatsTests(MirrorTestCase):
    def test_each_blob_request_counts_one_hit_or_miss(self) -> None:
        data = b"layer bytes" * 100
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = f"/v2/library/busybox/blobs/{digest}"
        self.upstream.on(HUB_HOST, path, reply(200, data, content_type="application/octet-stream"))
        for _ in range(2):
            response = self.fetch("GET", f"/v2/busybox/blobs/{digest}")
            self.assertEqual((response.status, response.body), (200, data))
        blobs = self.mirror.blobs
        self.assertEqual((blobs.misses, blobs.hits), (1, 1))
        self.assertEqual(len(self.upstream_calls()), 1)


class BlobRangeTests(MirrorTestCase):
    """Ranges on cached blobs, as RFC 9110 says: unusable ones ignored, past the end 416."""

    def setUp(self) -> None:
        super().setUp()
        self.data = bytes(range(256)) * 4
        self.digest = "sha256:" + hashlib.sha256(self.data).hexdigest()
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{self.digest}",
                         reply(200, self.data, content_type="application/octet-stream"))
        self.assertEqual(self.get().status, 200)  # cached

    def get(self, *headers: tuple[str, str]) -> Any:
        return self.fetch("GET", f"/v2/busybox/blobs/{self.digest}", list(headers))

    def test_a_last_byte_before_the_first_is_ignored(self) -> None:
        for value in ("bytes=50-10", "bytes=0-1,5-6", "bytes=x-", "items=0-1"):
            response = self.get(("Range", value))
            self.assertEqual((response.status, response.body), (200, self.data), value)

    def test_a_range_past_the_end_is_416_with_the_size(self) -> None:
        for value in ("bytes=1024-", "bytes=5000-6000", "bytes=-0"):
            response = self.get(("Range", value))
            self.assertEqual(response.status, 416, value)
            self.assertEqual(response.header("content-range"), "bytes */1024")

    def test_a_satisfiable_range_is_206(self) -> None:
        response = self.get(("Range", "bytes=10-19"))
        self.assertEqual((response.status, response.body), (206, self.data[10:20]))
        self.assertEqual(response.header("content-range"), "bytes 10-19/1024")
        self.assertEqual(len(self.upstream_calls()), 1)


class ManifestAlgorithmTests(MirrorTestCase):
    """A manifest by digest is checked with that digest's own algorithm."""

    def test_sha384_and_sha512_manifests_are_served_and_verified(self) -> None:
        for algorithm in ("sha512", "sha384"):
            digest = f"{algorithm}:{hashlib.new(algorithm, MANIFEST).hexdigest()}"
            path = f"/v2/library/busybox/manifests/{digest}"
            self.upstream.on(HUB_HOST, path, reply(200, MANIFEST, content_type=INDEX,
                                                   docker_content_digest=digest))
            for _ in range(2):
                response = self.pull(path=path)
                self.assertEqual((response.status, response.body), (200, MANIFEST), algorithm)
                self.assertEqual(response.header("docker-content-digest"), digest)

    def test_a_sha512_manifest_with_other_bytes_is_refused(self) -> None:
        digest = f"sha512:{hashlib.sha512(OTHER).hexdigest()}"
        path = f"/v2/library/busybox/manifests/{digest}"
        self.upstream.on(HUB_HOST, path, reply(200, MANIFEST, content_type=INDEX))
        self.assertRegistryError(self.pull(path=path), 502, "UNAVAILABLE")

    def test_manifests_and_blobs_of_every_known_algorithm_are_kept(self) -> None:
        """sha256, sha384 and sha512 alike: the second pull never reaches the upstream."""
        for algorithm in ("sha384", "sha512"):
            digest = f"{algorithm}:{hashlib.new(algorithm, MANIFEST).hexdigest()}"
            blob_digest = f"{algorithm}:{hashlib.new(algorithm, OTHER).hexdigest()}"
            manifest_path = f"/v2/library/busybox/manifests/{digest}"
            blob_path = f"/v2/library/busybox/blobs/{blob_digest}"
            self.upstream.on(HUB_HOST, manifest_path, reply(200, MANIFEST, content_type=INDEX))
            self.upstream.on(HUB_HOST, blob_path, reply(200, OTHER))
            for _ in range(2):
                self.assertEqual(self.pull(path=manifest_path).body, MANIFEST, algorithm)
                self.assertEqual(self.fetch("GET", blob_path).body, OTHER, algorithm)
            self.assertEqual(self.access[-1]["cache"], "hit")
            self.assertEqual([p for _, p in self.upstream_calls()][-2:],
                             [manifest_path, blob_path], algorithm)
