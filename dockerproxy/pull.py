"""One client request for a repository's content, read once where it is routed.

The resource that routes a request builds its L{Pull}: what the client asked
for (kind, reference, and the reference as a digest the proxy can verify),
where it goes upstream (target, URL, token scope, containerd's C{ns}) and the
one credential both sent upstream and keyed on by the cache's access records.
Everything further in takes the Pull instead of re-reading the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.web.server import Request

from dockerproxy.config import UpstreamConfig
from dockerproxy.digests import Digest
from dockerproxy.edge import client_request
from dockerproxy.names import ApiPath, Kind, RepoKey
from dockerproxy.routing import Target


@dataclass(frozen=True)
class Pull:
    """A request for manifests, blobs or tags of one repository (C{reference} is None for
    a tag list; C{digest} is None unless the reference is a digest the proxy verifies)."""

    request: Request
    target: Target
    kind: Kind
    reference: str | None
    digest: Digest | None
    url: str  # the upstream URL it is made at
    scope: str  # the token scope a challenge for it names, as the client names the repository
    ns: str | None
    authorization: bytes | None  # see L{dockerproxy.edge.ClientRequest.authorization}

    @classmethod
    def routed(
        cls, request: Request, api: ApiPath, target: Target, url: str, ns: str | None
    ) -> Pull:
        return cls(
            request,
            target,
            api.kind,
            api.reference,
            api.digest,
            url,
            f"repository:{api.name}:pull",
            ns,
            client_request(request).authorization,
        )

    @property
    def upstream(self) -> UpstreamConfig:
        return self.target.upstream

    @property
    def repo(self) -> RepoKey:
        """The repository as the cache and its access records key it."""
        return (self.target.upstream.name, self.target.repository)

    @property
    def tag(self) -> str | None:
        """The reference when it is a tag (not a digest of any algorithm)."""
        if self.reference is None or ":" in self.reference:
            return None
        return self.reference
