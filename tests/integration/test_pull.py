"""Real clients pull through a real dockerproxy from a real token-auth registry."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import web
from tests.harness.images import IndexRecord
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.pulls import assert_same_image, assert_same_index, copy
from tests.harness.rawserver import RawServer
from tests.harness.skopeo import skopeo
from tests.harness.tls import make_ca
from tests.harness.upstream import Upstream


def mirror_of(
    start_proxy: StartProxy, upstream: Upstream, *args: str, **kwargs: Any
) -> ProxyProcess:
    """A proxy whose default upstream is C{upstream}, with Docker Hub's short-name rule."""
    return start_proxy("--upstream", upstream.url, "--library-prefix", *args, **kwargs)


def test_short_name_is_completed_with_library(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream)
    alpine = upstream.images["alpine"]
    mark = upstream.log_mark()
    copy(proxy, "alpine:3.20", tmp / "out")
    assert_same_image(tmp / "out", alpine)
    paths = [path for _, path in upstream.requests(mark)]
    assert any(p.startswith("/v2/library/alpine/manifests/") for p in paths)
    assert not any(p.startswith("/v2/alpine/") for p in paths), "no round trip for short names"
    granted = [g for t in upstream.token_requests(mark) for g in t["granted"]]
    assert "repository:library/alpine:pull" in granted


def test_library_form(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> None:
    proxy = mirror_of(start_proxy, upstream)
    copy(proxy, "library/alpine:3.20", tmp / "out")
    assert_same_image(tmp / "out", upstream.images["alpine"])


def test_multi_arch_index_with_all(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> None:
    proxy = mirror_of(start_proxy, upstream)
    index = upstream.images["multiarch"]
    assert isinstance(index, IndexRecord)
    copy(proxy, index.ref, tmp / "out", "--all")
    assert_same_index(tmp / "out", index)


def test_private_image_needs_credentials(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream)
    secret = upstream.images["secret"]
    refused = copy(proxy, secret.ref, tmp / "anon", check=False)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "denied" in refused.stderr.lower()
    user, password = upstream.reader
    wrong = copy(
        proxy, secret.ref, tmp / "wrong", f"--src-creds={user}:not-{password}", check=False
    )
    assert wrong.returncode != 0
    mark = upstream.log_mark()
    copy(proxy, secret.ref, tmp / "out", f"--src-creds={user}:{password}")
    assert_same_image(tmp / "out", secret)
    tokens = upstream.token_requests(mark)
    assert any(t["user"] == user for t in tokens), "Basic credentials reach the realm"


def test_inspect(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = mirror_of(start_proxy, upstream)
    alpine = upstream.images["alpine"]
    result = skopeo("inspect", "--tls-verify=false", f"docker://{proxy.host}/alpine:3.20")
    info = json.loads(result.stdout)
    assert info["Digest"] == alpine.manifest_digest
    assert info["Layers"] == alpine.layer_digests
    assert "3.20" in info["RepoTags"]


def test_blob_redirects_are_followed_without_authorization(
    start_proxy: StartProxy, redirect_upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, redirect_upstream)
    alpine = redirect_upstream.images["alpine"]
    mark = redirect_upstream.log_mark()
    copy(proxy, "alpine:3.20", tmp / "out")
    assert_same_image(tmp / "out", alpine)
    cdn = redirect_upstream.cdn_requests(mark)
    assert len([r for r in cdn if r["status"] == 200]) >= len(alpine.layers)
    assert all(not r["authorization"] for r in cdn), cdn


def test_ssl_endpoint_with_test_ca(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> None:
    ca = make_ca(tmp / "certs")
    from tests.harness.ports import free_port

    port = free_port()
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={ca.server_key}:certKey={ca.server_cert}"
    proxy = mirror_of(start_proxy, upstream, port=port, listen=listen, scheme="https")
    cert_dir = tmp / "client-certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
    result = skopeo(
        "copy",
        f"--src-cert-dir={cert_dir}",
        f"docker://{proxy.host}/alpine:3.20",
        f"oci:{tmp / 'out'}:x",
    )
    assert result.returncode == 0
    assert_same_image(tmp / "out", upstream.images["alpine"])
    untrusted = skopeo("inspect", f"docker://{proxy.host}/alpine:3.20", check=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr


def test_challenges_point_at_the_proxy(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = mirror_of(start_proxy, upstream)
    ping = web.request("GET", f"{proxy.url}/v2/")
    assert ping.status == 401
    assert ping.header("www-authenticate") == (
        f'Bearer realm="{proxy.url}/v2/auth",service="{upstream.service}"'
    )
    head = web.request("HEAD", f"{proxy.url}/v2/alpine/manifests/3.20")
    assert head.status == 401
    challenge = head.header("www-authenticate") or ""
    assert f'realm="{proxy.url}/v2/auth"' in challenge
    assert 'scope="repository:alpine:pull"' in challenge


def test_token_endpoint_and_head(start_proxy: StartProxy, upstream: Upstream) -> None:
    """containerd's flow: HEAD the manifest, get a token with several scopes, HEAD again."""
    proxy = mirror_of(start_proxy, upstream)
    alpine = upstream.images["alpine"]
    mark = upstream.log_mark()
    token = web.request(
        "GET",
        f"{proxy.url}/v2/auth?service=whatever&scope=repository:alpine:pull"
        "&scope=repository:public/multiarch:pull",
        {"Authorization": "Basic " + base64.b64encode(b":").decode()},
    )
    assert token.status == 200, token
    bearer = token.json()["token"]
    sent = upstream.token_requests(mark)[-1]
    assert sent["auth_type"] is None, "Basic Og== is anonymous and not forwarded"
    assert set(sent["scopes"]) == {
        "repository:library/alpine:pull",
        "repository:public/multiarch:pull",
    }
    mark = upstream.log_mark()
    accept = [("Accept", alpine.media_type)]
    head = web.request(
        "HEAD",
        f"{proxy.url}/v2/alpine/manifests/3.20",
        [("Authorization", f"Bearer {bearer}"), *accept],
    )
    assert head.status == 200, head
    assert head.header("docker-content-digest") == alpine.manifest_digest
    assert int(head.header("content-length") or -1) == len(alpine.manifest)
    assert ("HEAD", "/v2/library/alpine/manifests/3.20") in upstream.requests(mark)
    assert not any(m == "GET" and "/manifests/" in p for m, p in upstream.requests(mark))
    post = web.request("POST", f"{proxy.url}/v2/auth", body=b"grant_type=password")
    assert post.status == 404 and post.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_refusals_and_bad_input_are_registry_errors(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = mirror_of(start_proxy, upstream)
    mark = upstream.log_mark()
    cases = [
        ("PUT", "/v2/alpine/manifests/3.20", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/alpine/manifests/3.20", 405, "UNSUPPORTED"),
        ("POST", "/v2/alpine/blobs/uploads/", 405, "UNSUPPORTED"),
        ("GET", "/v2/_catalog", 405, "UNSUPPORTED"),
        ("GET", "/v2/Alpine/manifests/3.20", 400, "NAME_INVALID"),
        ("GET", "/v2/a/../../b/manifests/3.20", 400, "NAME_INVALID"),
        ("GET", "/v2/a%2fb/manifests/3.20", 400, "NAME_INVALID"),
        ("GET", "/v2/alpine/blobs/sha256:1234", 400, "DIGEST_INVALID"),
    ]
    for method, path, status, code in cases:
        response = web.request(method, proxy.url + path)
        assert response.status == status, (method, path, response)
        assert response.json()["errors"][0]["code"] == code
        assert response.header(
            "content-type",
        ).startswith("application/json")
    assert upstream.requests(mark) == [], "refused requests never reach the upstream"


def test_upstream_down_is_a_502_naming_it(start_proxy: StartProxy) -> None:
    from tests.harness.ports import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    proxy = start_proxy("--upstream", dead)
    response = web.request("GET", f"{proxy.url}/v2/library/alpine/manifests/3.20")
    assert response.status == 502
    error = response.json()["errors"][0]
    assert dead in error["message"] and "refused" in error["message"]


def test_upstream_timeout_is_a_504(start_proxy: StartProxy) -> None:
    with RawServer() as silent:  # accepts and never answers
        url = silent.url
        proxy = start_proxy("--upstream", url, "--headers-timeout", "1")
        response = web.request("GET", f"{proxy.url}/v2/library/alpine/manifests/3.20")
    assert response.status == 504
    assert url in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("lang,text", [("en", "Docker registry mirror"), ("zh", "Docker 镜像加速")])
def test_usage_page(start_proxy: StartProxy, upstream: Upstream, lang: str, text: str) -> None:
    proxy = mirror_of(start_proxy, upstream)
    page = web.request("GET", f"{proxy.url}/", {"Accept-Language": lang})
    assert page.status == 200
    html = page.body.decode()
    assert f"docker pull {proxy.host}/" in html
    assert text in html
    assert f'lang="{lang}' in html
