"""Tag lists as the client named the repository.

The upstream answers for its own repository name (C{library/busybox} for the
client's C{busybox}, C{owner/image} for C{ghcr.io/owner/image}) and may page
with an absolute C{Link} to itself. The client must see its own name in the
body and paging links that come back to this proxy, never to the upstream.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

# One link-value: <URI-reference> followed by its parameters (RFC 8288).
_LINK_RE = re.compile(r"\s*<([^>]*)>([^,]*)")
# The tag list of a repository is small; Docker Hub pages at 100 tags, others send all.
MAX_TAG_LIST = 4 * 1024 * 1024


def rename_body(body: bytes, client_name: str) -> bytes:
    """The tag list document with C{name} as the client named the repository; a body that
    is not a JSON object is returned as it came."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or "name" not in document:
        return body
    document["name"] = client_name
    return json.dumps(document, separators=(",", ":")).encode()


def rewrite_links(
    values: list[bytes], upstream_name: str, client_name: str, ns: str | None
) -> list[bytes]:
    """Paging links as references relative to this proxy (resolved by clients against the
    URL they asked, so right behind any load balancer), with the client's name; links to
    anything but this repository's tag list are dropped, never relayed."""
    out = []
    for value in values:
        links = [
            _rewrite(match, upstream_name, client_name, ns)
            for match in _LINK_RE.finditer(value.decode("latin-1"))
        ]
        kept = [link for link in links if link is not None]
        if kept:
            out.append(", ".join(kept).encode("latin-1"))
    return out


def _rewrite(
    match: re.Match[str], upstream_name: str, client_name: str, ns: str | None
) -> str | None:
    target, params = match.groups()
    parts = urlsplit(target)
    if parts.path != f"/v2/{upstream_name}/tags/list":
        return None
    query = [(k, v) for k, v in parse_qsl(parts.query) if k in ("n", "last")]
    if ns:
        query.append(("ns", ns))
    path = f"/v2/{client_name}/tags/list" + ("?" + urlencode(query) if query else "")
    return f"<{path}>{params.rstrip()}"
