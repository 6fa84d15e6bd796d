"""Manifests by digest through the mirror: immutable bytes, verified, kept for good.

Registries return a manifest by digest whatever the client's Accept says (its
bytes are what the digest names, so there is no other form to send), and so does
the cache: an OCI-only client pulling a Docker image by digest gets the cached
bytes, as it would from the upstream. Tags do honour Accept (see
L{dockerproxy.mirror.tags}).

A manifest fetched from the upstream is checked against its digest (the one
asked for, or sha256 for a tag) before it is kept or sent. A cached one is
served to a client allowed to read its repository; for anyone else a HEAD
(free on Docker Hub, where a GET counts against the rate limit) asks the
upstream first. L{ManifestProxy.fetch} and L{ManifestProxy.check} are also how
the tag store (L{dockerproxy.mirror.tags}) gets and checks the manifests its
tags point at.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from twisted.web.http_headers import Headers

from dockerproxy import digests, errors
from dockerproxy.cache.manifests import CachedManifest, ManifestStore
from dockerproxy.digests import Digest
from dockerproxy.mirror.remote import CONDITIONS, Remote
from dockerproxy.mirror.responses import HIT, MISS, REVALIDATED, send_manifest
from dockerproxy.pull import Pull
from dockerproxy.relay import discard

# The distribution spec lets registries refuse manifests over 4 MiB.
MAX_MANIFEST = 4 * 1024 * 1024


class Check(Enum):
    """What a HEAD upstream said about a cached manifest, for one client."""

    CONFIRMED = "confirmed"  # the upstream serves this client that very digest
    REFUSED = "refused"  # the upstream's 401 or 403 was relayed: the client is answered
    UNKNOWN = "unknown"  # anything else: a GET decides


def named_digest(headers: Headers) -> str:
    """The C{Docker-Content-Digest} an upstream answer names, or empty."""
    return (headers.getRawHeaders(b"docker-content-digest") or [b""])[0].decode("latin-1")


class ManifestProxy:
    """Manifests by digest: the local C{store} first, then the upstream through C{remote}."""

    def __init__(self, store: ManifestStore, remote: Remote) -> None:
        self.store = store
        self.remote = remote

    async def serve(self, pull: Pull, digest: Digest) -> None:
        cached = self.store.get(digest)
        if cached is not None:
            await self.remote.access.refresh(pull.repo)  # other processes' news first
        if cached is not None and self.remote.access.is_linked(pull.repo, str(digest)):
            if self.remote.access.may_read(pull.authorization, pull.repo):
                send_manifest(pull.request, cached, HIT)
                return
            check = await self.check(pull, cached)
            if check is Check.REFUSED:
                return
            if check is Check.CONFIRMED:
                send_manifest(pull.request, cached, REVALIDATED)
                return
        manifest = await self.fetch(pull)
        if manifest is not None:
            send_manifest(pull.request, manifest, MISS)

    async def check(self, pull: Pull, cached: CachedManifest) -> Check:
        """Cached, but not yet known to be readable by this client: a HEAD asks the upstream.

        A 401 or 403 is relayed; the cached digest named with a 200 is noted as
        served to this client.
        """
        check = await self.remote.fetch(pull, method=b"HEAD", drop=CONDITIONS)
        code = check.response.code
        if code in (401, 403):
            self.remote.answered(pull, code)
            await self.remote.relay(pull, check)
            return Check.REFUSED
        named = named_digest(check.response.headers)
        await discard(check.response)
        if code != 200 or named != str(cached.digest):
            return Check.UNKNOWN
        self.remote.served(pull, cached.digest)
        return Check.CONFIRMED

    async def fetch(
        self,
        pull: Pull,
        remember: Callable[[Headers], object] | None = None,
    ) -> CachedManifest | None:
        """The client's request for the manifest, made upstream.

        A 200 to a GET is read, verified (against the digest asked for, if any),
        kept and returned, for the caller to send. Anything else (a HEAD, an
        error) is relayed and C{None} returned; a HEAD's 200 goes to C{remember}.
        """
        expected = pull.digest
        fetched = await self.remote.fetch(pull, drop=CONDITIONS)
        response = fetched.response
        if response.code != 200 or pull.request.method != b"GET":
            if response.code == 200:
                self.remote.served(pull)
                if remember is not None:
                    remember(response.headers)
            self.remote.answered(pull, response.code)
            await self.remote.relay(pull, fetched)
            return None
        data = await self.remote.read_small(pull, response, MAX_MANIFEST)
        digest = digests.of(data, expected.algorithm if expected is not None else "sha256")
        if expected is not None and digest != expected:
            raise errors.bad_gateway(
                pull.upstream.url, f"manifest {pull.reference} arrived with digest {digest}"
            )
        media_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        manifest = CachedManifest(digest, media_type.decode("latin-1").split(";")[0].strip(), data)
        self.store.put(manifest)
        self.remote.served(pull, digest)
        return manifest
