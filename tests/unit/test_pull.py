"""The per-request value the resources build once (L{dockerproxy.pull.Pull})."""

from __future__ import annotations

from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from dockerproxy.config import build_config
from dockerproxy.digests import parse
from dockerproxy.edge import read_client_request
from dockerproxy.names import parse_api_path
from dockerproxy.pull import Pull
from dockerproxy.routing import Router

SHA256 = "sha256:" + "ab" * 32


def routed(path: str, *headers: tuple[bytes, bytes]) -> Pull:
    request = DummyRequest([])
    request.client_request = read_client_request(  # type: ignore[attr-defined]
        Headers({name: [value] for name, value in headers}), {}
    )
    api = parse_api_path(path)
    target = Router.from_config(build_config({}, {})).resolve(None, api.name)
    return Pull.routed(request, api, target, "https://upstream.test/x", None)


def test_a_tag() -> None:
    pull = routed("/v2/busybox/manifests/latest", (b"authorization", b"Bearer alice"))
    assert (pull.kind, pull.reference, pull.tag, pull.digest) == (
        "manifests",
        "latest",
        "latest",
        None,
    )
    assert pull.repo == ("docker.io", "library/busybox")
    assert pull.scope == "repository:busybox:pull"
    assert pull.authorization == b"Bearer alice"


def test_a_digest_the_proxy_verifies() -> None:
    pull = routed(f"/v2/busybox/blobs/{SHA256}")
    assert (pull.tag, pull.digest, pull.authorization) == (None, parse(SHA256), None)


def test_a_digest_of_another_algorithm_is_neither_a_tag_nor_a_digest() -> None:
    pull = routed("/v2/busybox/manifests/foo+bar:abc=")
    assert (pull.reference, pull.tag, pull.digest) == ("foo+bar:abc=", None, None)


def test_an_anonymous_credential_is_none() -> None:
    assert (
        routed("/v2/busybox/manifests/latest", (b"authorization", b"Basic Og==")).authorization
        is None
    )
