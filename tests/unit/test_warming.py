"""Warming pulls like a client (L{dockerproxy.warming}), against a registry in memory."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.imagerefs import ImageRef, Platform, parse_image
from dockerproxy.warming import Outcome, ProxyClient, TokenLogin, Warmer
from tests.unit.fakeregistry import BASE, FakeRegistry, digest

LAYERS = [b"layer one" * 100, b"layer two" * 50]
AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


class Recorded:
    """A progress observer that remembers what it was told."""

    def __init__(self) -> None:
        self.wanted: dict[ImageRef, int] = {}
        self.got: dict[ImageRef, int] = {}

    def add_bytes(self, image: ImageRef, size: int) -> None:
        self.wanted[image] = self.wanted.get(image, 0) + size

    def received(self, image: ImageRef, size: int) -> None:
        self.got[image] = self.got.get(image, 0) + size


class WarmerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = FakeRegistry()
        self.stub = self.registry.stub()
        self.progress = Recorded()

    def warm(
        self,
        image: str,
        platforms: tuple[Platform, ...] | None = (AMD64,),
        basic: bytes | None = None,
        concurrency: int = 4,
    ) -> Outcome:
        client = ProxyClient(self.stub, BASE, TokenLogin(self.stub, basic))
        warmer = Warmer(client, platforms, concurrency, self.progress)
        result: list[Outcome] = []
        Deferred.fromCoroutine(warmer.warm(parse_image(image))).addCallback(result.append)
        self.stub.flush()
        self.assertEqual(len(result), 1, "the warm run did not finish")
        return result[0]

    def test_an_image_is_pulled_as_a_client_would_with_one_token(self) -> None:
        self.registry.image("library/app", "1", LAYERS)
        outcome = self.warm("library/app:1")
        self.assertIsNone(outcome.error)
        self.assertEqual((outcome.manifests, outcome.blobs), (1, 3))
        self.assertEqual(outcome.size, sum(len(b) for b in self.registry.blobs.values()))
        self.assertEqual(
            outcome.summary(), f"ok library/app:1: 1 manifests, 3 blobs, {outcome.size} bytes"
        )
        paths = self.registry.paths()
        self.assertEqual(paths[0], "/v2/library/app/manifests/1")  # challenged: 401
        self.assertEqual(
            paths[1], "/v2/auth?service=dockerproxy&scope=repository%3Alibrary%2Fapp%3Apull"
        )
        self.assertEqual(paths[2], "/v2/library/app/manifests/1")
        blobs = sorted(p.rsplit("/", 1)[1] for p in paths[3:])
        self.assertEqual(blobs, sorted(self.registry.blobs))
        tokens = {s.authorization for s in self.registry.seen[2:]}
        self.assertEqual(tokens, {"Bearer token-repository:library/app:pull"})
        self.assertIsNone(self.registry.seen[1].authorization)  # anonymous login
        image = ImageRef("library/app", "1")
        self.assertEqual(self.progress.wanted[image], outcome.size)
        self.assertEqual(self.progress.got[image], outcome.size)

    def test_a_login_sends_basic_credentials_to_the_realm_only(self) -> None:
        self.registry.basic = "Basic YWxpY2U6cHc="
        self.registry.image("library/app", "1", LAYERS)
        self.assertIsNone(self.warm("library/app:1", basic=b"Basic YWxpY2U6cHc=").error)
        basics = [s.path for s in self.registry.seen if (s.authorization or "").startswith("Basic")]
        self.assertEqual([p.split("?")[0] for p in basics], ["/v2/auth"])

    def test_a_refused_login_fails_the_image(self) -> None:
        self.registry.basic = "Basic right"
        self.registry.image("library/app", "1", LAYERS)
        outcome = self.warm("library/app:1", basic=b"Basic wrong")
        self.assertEqual(outcome.error, f"login refused: 401 from {BASE}/v2/auth")

    def test_an_oversized_token_answer_is_not_read(self) -> None:
        self.registry.image("library/app", "1", LAYERS)
        self.registry.token_padding = 64 * 1024
        outcome = self.warm("library/app:1")
        self.assertEqual(
            outcome.error, "an answer of more than 65536 bytes where a small one was due"
        )
        self.registry.token_padding = 1000
        self.assertIsNone(self.warm("library/app:1").error)

    def index(self) -> tuple[str, str]:
        amd = self.registry.image("public/multi", None, [b"amd64 layer"], "amd64")
        arm = self.registry.image("public/multi", None, [b"arm64 layer"], "arm64")
        self.registry.index("public/multi", "1", {"amd64": amd, "arm64": arm})
        return amd, arm

    def test_an_index_warms_the_platforms_asked_for(self) -> None:
        amd, arm = self.index()
        outcome = self.warm("public/multi:1", (ARM64,))
        self.assertEqual((outcome.error, outcome.manifests, outcome.blobs), (None, 2, 2))
        paths = self.registry.paths()
        self.assertIn(f"/v2/public/multi/manifests/{arm}", paths)
        self.assertNotIn(f"/v2/public/multi/manifests/{amd}", paths)
        self.assertIn(f"/v2/public/multi/blobs/{digest(b'arm64 layer')}", paths)
        self.assertNotIn(f"/v2/public/multi/blobs/{digest(b'amd64 layer')}", paths)

    def test_all_platforms(self) -> None:
        self.index()
        outcome = self.warm("public/multi:1", None)
        self.assertEqual((outcome.error, outcome.manifests), (None, 3))
        self.assertEqual(outcome.blobs, 4)  # two configs, two layers

    def test_an_index_without_the_platform_fails(self) -> None:
        self.index()
        outcome = self.warm("public/multi:1", (Platform("linux", "s390x"),))
        self.assertEqual(outcome.error, "the index has no manifest for linux/s390x")

    def test_an_unknown_image_fails_with_the_registry_message(self) -> None:
        outcome = self.warm("library/nothing:1")
        self.assertEqual(outcome.error, "manifest 1: 404 manifests unknown")
        self.assertEqual(
            outcome.summary(), "failed library/nothing:1: manifest 1: 404 manifests unknown"
        )

    def test_a_blob_with_other_bytes_fails_the_image(self) -> None:
        self.registry.image("library/app", "1", LAYERS)
        self.registry.corrupt.add(digest(LAYERS[0]))
        outcome = self.warm("library/app:1")
        assert outcome.error is not None
        self.assertIn(f"blob {digest(LAYERS[0])} arrived with another digest", outcome.error)

    def test_a_manifest_that_does_not_match_its_digest_fails(self) -> None:
        manifest = self.registry.image("library/app", None, LAYERS)
        media_type, body = self.registry.manifests[("library/app", manifest)]
        self.registry.manifests[("library/app", manifest)] = (media_type, body + b" ")
        outcome = self.warm(f"library/app@{manifest}")
        self.assertEqual(outcome.error, f"manifest {manifest} does not match its digest {manifest}")

    def test_blobs_go_concurrency_at_a_time_and_the_run_waits_for_all(self) -> None:
        layers = [f"layer {i}".encode() * 10 for i in range(5)]
        self.registry.image("library/app", "1", layers)
        self.registry.hold_blobs = True
        client = ProxyClient(self.stub, BASE, TokenLogin(self.stub))
        warmer = Warmer(client, (AMD64,), 2, self.progress)
        result: list[Outcome] = []
        Deferred.fromCoroutine(warmer.warm(parse_image("library/app:1"))).addCallback(result.append)
        self.stub.flush()
        self.assertEqual(len(self.registry.held), 2)
        answered = 0
        while self.registry.held or answered == 0:
            self.stub.flush()
            self.assertLessEqual(len(self.registry.held), 2)
            if not self.registry.held:
                break
            self.assertEqual(result, [])
            self.registry.release(1)
            answered += 1
            self.stub.flush()
        self.assertEqual(answered, 6)  # the config and five layers
        self.assertEqual(result[0].blobs, 6)
