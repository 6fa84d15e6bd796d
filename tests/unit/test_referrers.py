"""The OCI 1.1 referrers API through the whole Site (L{dockerproxy.referrers}): routed,
checked and relayed as manifests are, the C{artifactType} filter passed on, never cached."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import urlencode

from twisted.web.server import Request

from dockerproxy.config import CacheConfig, build_config
from tests.unit.authsite import AuthTestCase, auth_config
from tests.unit.fakes import scratch_dir
from tests.unit.proxysite import (
    AUTH_HOST,
    DIGEST,
    HUB_CHALLENGE,
    HUB_HOST,
    UNAUTHORIZED,
    ProxyTestCase,
    make_parts,
    reply,
)

INDEX = "application/vnd.oci.image.index.v1+json"
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
UPSTREAM_PATH = f"/v2/library/alpine/referrers/{DIGEST}"
PATH = f"/v2/alpine/referrers/{DIGEST}"


def referrers(*artifact_types: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + f"{i:02x}" * 32,
                    "size": 100 + i,
                    "artifactType": artifact_type,
                }
                for i, artifact_type in enumerate(artifact_types)
            ],
        }
    ).encode()


def upstream_referrers(request: Request) -> bytes:
    """A registry with the API: filters by C{artifactType} and says so."""
    request.setHeader(b"content-type", INDEX.encode())
    wanted = request.args.get(b"artifactType")
    if wanted:
        request.setHeader(b"oci-filters-applied", b"artifactType")
        return referrers(*[t for t in (SBOM, SIGNATURE) if t == wanted[0].decode()])
    request.setHeader(b"link", f'<{UPSTREAM_PATH}?last=x>; rel="next"'.encode())
    return referrers(SBOM, SIGNATURE)


class ReferrersTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, upstream_referrers)

    def test_relayed_from_the_routed_repository(self) -> None:
        response = self.fetch("GET", PATH)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, referrers(SBOM, SIGNATURE))
        self.assertEqual(response.header("content-type"), INDEX)
        self.assertEqual(response.header("content-length"), str(len(response.body)))
        [seen] = self.upstream.seen
        self.assertEqual((seen.method, seen.host, seen.path), ("GET", HUB_HOST, UPSTREAM_PATH))
        self.assertEqual(seen.query, {})
        self.assertEqual(self.access[-1]["route"], "referrers")
        self.assertEqual(self.access[-1]["image"], "docker.io/library/alpine")

    def test_paging_links_naming_the_upstream_are_not_relayed(self) -> None:
        self.assertIsNone(self.fetch("GET", PATH).header("link"))

    def test_artifact_type_is_passed_on_and_the_filter_reported_back(self) -> None:
        response = self.fetch("GET", f"{PATH}?{urlencode({'artifactType': SBOM})}")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, referrers(SBOM))
        self.assertEqual(response.header("oci-filters-applied"), "artifactType")
        self.assertEqual(self.upstream.seen[0].query, {"artifactType": [SBOM]})

    def test_a_bad_artifact_type_is_refused_before_the_upstream(self) -> None:
        for query in (
            "artifactType=not-a-type",
            "artifactType=a/b/c",
            f"artifactType=a/{'b' * 200}",
        ):
            response = self.fetch("GET", f"{PATH}?{query}")
            self.assertRegistryError(response, 400, "INVALID_REQUEST")
        response = self.fetch("GET", f"{PATH}?artifactType={SBOM}&artifactType={SIGNATURE}")
        self.assertRegistryError(response, 400, "INVALID_REQUEST")
        self.assertEqual(self.upstream.seen, [])

    def test_a_bad_digest_is_refused_before_the_upstream(self) -> None:
        response = self.fetch("GET", "/v2/alpine/referrers/latest")
        self.assertRegistryError(response, 400, "DIGEST_INVALID")
        self.assertEqual(self.upstream.seen, [])

    def test_head_stays_head(self) -> None:
        response = self.fetch("HEAD", PATH)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), INDEX)
        self.assertEqual(self.upstream.seen[0].method, "HEAD")

    def test_an_upstream_without_the_api_answers_404(self) -> None:
        del self.upstream.handlers[(HUB_HOST, UPSTREAM_PATH)]
        self.assertRegistryError(self.fetch("GET", PATH), 404, "NAME_UNKNOWN")

    def test_the_upstream_challenge_points_at_the_proxy_with_the_scope(self) -> None:
        self.upstream.on(
            HUB_HOST, UPSTREAM_PATH, reply(401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE)
        )
        response = self.fetch("GET", PATH, [("Authorization", "Bearer client-token")])
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.header("www-authenticate"),
            'Bearer realm="http://mirror.test:5000/v2/auth",service="registry.docker.io",'
            'scope="repository:alpine:pull"',
        )
        self.assertEqual(self.upstream.seen[0].header("authorization"), "Bearer client-token")

    def test_routed_by_prefix_and_ns(self) -> None:
        ghcr = f"/v2/owner/image/referrers/{DIGEST}"
        self.upstream.on("ghcr.io", ghcr, upstream_referrers)
        self.assertEqual(
            self.fetch("GET", f"/v2/ghcr.io/owner/image/referrers/{DIGEST}").status, 200
        )
        self.assertEqual(self.fetch("GET", f"{ghcr}?ns=ghcr.io").status, 200)
        self.assertEqual([s.host for s in self.upstream.seen], ["ghcr.io", "ghcr.io"])
        response = self.fetch("GET", f"/v2/unknown.test/owner/image/referrers/{DIGEST}")
        self.assertRegistryError(response, 404, "NAME_UNKNOWN")
        self.assertEqual(len(self.upstream.seen), 2)

    def test_a_denied_repository_is_refused_before_the_upstream(self) -> None:
        self.site.access = build_config(
            {"access": {"deny": ["docker.io/library/alpine"]}}, {}
        ).access
        self.assertRegistryError(self.fetch("GET", PATH), 403, "DENIED")
        self.assertEqual(self.upstream.seen, [])

    def test_a_list_over_the_manifest_bound_is_a_502(self) -> None:
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, reply(200, b" " * (4 * 1024 * 1024 + 1)))
        self.assertRegistryError(self.fetch("GET", PATH), 502, "UNAVAILABLE")


class CachingProxyTests(ProxyTestCase):
    def test_the_mirror_never_keeps_a_list(self) -> None:
        """Relayed each time, even by a caching proxy: a cached list could reach a client
        the upstream would refuse."""
        config = replace(build_config({}, {}), cache=CacheConfig(directory=scratch_dir(self)))
        self.proxy, self.mirror, self.site = make_parts(config, self.clock, self.stub)
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, upstream_referrers)
        for _ in range(2):
            self.assertEqual(self.fetch("GET", PATH).status, 200)
        self.assertEqual(len(self.upstream.requests_to(HUB_HOST)), 2)


class LoggedInTests(AuthTestCase):
    """With users, the proxy's challenge and token, as for manifests."""

    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config())
        self.serve_upstream(UPSTREAM_PATH, referrers(SBOM))

    def test_challenged_then_relayed_with_the_proxys_own_upstream_token(self) -> None:
        response = self.fetch_as("GET", PATH)
        self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertIn('scope="repository:alpine:pull"', response.header("www-authenticate") or "")
        self.assertEqual(self.upstream.seen, [])
        token = self.token("alpine", authorization="Basic " + "YWxpY2U6YWxpY2Utc2VjcmV0")
        response = self.fetch_as("GET", PATH, f"Bearer {token}")
        self.assertEqual((response.status, response.body), (200, referrers(SBOM)))
        self.assertEqual(self.client_credentials_upstream(), [])
        self.assertEqual(self.upstream.requests_to(AUTH_HOST)[0].path, "/token")
