"""Manifests by digest through the mirror (L{dockerproxy.mirror.manifests.ManifestProxy}):
verified, kept for good, served whatever the Accept, and only in their repository."""

from __future__ import annotations

import hashlib

from tests.unit.mirror.mirrorsite import (
    DIGEST,
    DOCKER_SINGLE,
    INDEX,
    MANIFEST,
    OTHER,
    OTHER_DIGEST,
    SINGLE,
    TAG_PATH,
    MirrorTestCase,
)
from tests.unit.proxysite import HUB_HOST, reply


class DigestTests(MirrorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(
            HUB_HOST,
            f"/v2/library/busybox/manifests/{DIGEST}",
            reply(200, MANIFEST, content_type=INDEX, docker_content_digest=DIGEST),
        )
        self.upstream.on(
            HUB_HOST,
            f"/v2/library/other/manifests/{DIGEST}",
            reply(200, MANIFEST, content_type=INDEX, docker_content_digest=DIGEST),
        )

    def test_manifests_by_digest_are_cached(self) -> None:
        path = f"/v2/library/busybox/manifests/{DIGEST}"
        self.pull(path=path)
        self.assertEqual(self.pull(path=path).body, MANIFEST)
        self.assertEqual(len(self.upstream_calls()), 1)

    def test_a_digest_cached_in_one_repository_is_not_trusted_in_another(self) -> None:
        self.pull(path=f"/v2/library/busybox/manifests/{DIGEST}")
        self.pull(path=f"/v2/library/other/manifests/{DIGEST}")
        self.assertEqual(
            [p for _, p in self.upstream_calls()],
            [f"/v2/library/busybox/manifests/{DIGEST}", f"/v2/library/other/manifests/{DIGEST}"],
        )

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
        self.upstream.on(
            HUB_HOST,
            path,
            reply(200, manifest, content_type=DOCKER_SINGLE, docker_content_digest=digest),
        )
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
        self.assertEqual(
            self.upstream_calls(),
            [("GET", TAG_PATH), ("GET", TAG_PATH)],
            "the index is never served by tag to a client that does not accept it",
        )


class ManifestAlgorithmTests(MirrorTestCase):
    """A manifest by digest is checked with that digest's own algorithm."""

    def test_sha384_and_sha512_manifests_are_served_and_verified(self) -> None:
        for algorithm in ("sha512", "sha384"):
            digest = f"{algorithm}:{hashlib.new(algorithm, MANIFEST).hexdigest()}"
            path = f"/v2/library/busybox/manifests/{digest}"
            self.upstream.on(
                HUB_HOST,
                path,
                reply(200, MANIFEST, content_type=INDEX, docker_content_digest=digest),
            )
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
            self.assertEqual(
                [p for _, p in self.upstream_calls()][-2:], [manifest_path, blob_path], algorithm
            )
