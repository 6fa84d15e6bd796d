"""Tags through the mirror (L{dockerproxy.mirror.tags.TagProxy}): TTL, revalidation,
stale-if-error, Accept, and who may be served a cached tag."""

from __future__ import annotations

from tests.unit.mirror.mirrorsite import (
    DIGEST,
    INDEX,
    MANIFEST,
    OTHER,
    OTHER_DIGEST,
    SINGLE,
    STALE,
    TAG_PATH,
    TTL,
    MirrorTestCase,
)


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
        self.assertEqual(
            self.upstream_calls(), [("GET", TAG_PATH), ("HEAD", TAG_PATH), ("GET", TAG_PATH)]
        )

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
