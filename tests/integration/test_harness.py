"""Smoke tests of the integration harness itself: real clients straight to the upstreams.

No proxy is involved; these prove the fixtures behave like the upstreams the proxy will face
(token auth, anonymous vs private pulls, CDN redirects, large blobs, log parsing).
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.harness import images, largeblobs, web
from tests.harness.polling import wait_until
from tests.harness.procs import ManagedProcess, pid_alive
from tests.harness.registry import blob_storage_path
from tests.harness.skopeo import describe, oci_digests, skopeo
from tests.harness.upstream import Upstream, UpstreamFactory

pytestmark = pytest.mark.integration


def _jwt_claims(token: str) -> dict[str, object]:
    """Decode a JWT payload without verification (the registry does the verifying)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_anonymous_inspect_alpine(upstream: Upstream) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, images.ImageRecord)
    mark = upstream.log_mark()
    result = skopeo("inspect", "--tls-verify=false", f"docker://{upstream.host}/{alpine.ref}")
    info = json.loads(result.stdout)
    assert info["Digest"] == alpine.manifest_digest
    assert info["Layers"] == alpine.layer_digests
    tokens = upstream.token_requests(mark)
    assert tokens, upstream.log_tails()
    assert all(t["user"] is None and t["status"] == 200 for t in tokens)
    assert "repository:library/alpine:pull" in tokens[0]["granted"]
    assert ("GET", "/v2/library/alpine/manifests/3.20") in upstream.requests(mark)


def test_copy_counts_upstream_requests(upstream: Upstream, tmp: Path) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, images.ImageRecord)
    mark = upstream.log_mark()
    skopeo(
        "copy", "--src-tls-verify=false",
        f"docker://{upstream.host}/{alpine.ref}", f"oci:{tmp / 'out'}:x",
    )  # fmt: skip
    layout = oci_digests(tmp / "out", verify=True)
    assert layout.manifest_digests == [alpine.manifest_digest]
    assert layout.layer_digests(alpine.manifest_digest) == alpine.layer_digests
    assert set(alpine.blobs.items()) <= set(layout.blobs.items())
    blob_gets = [
        path for method, path in upstream.requests(mark) if method == "GET" and "/blobs/" in path
    ]
    assert sorted(p.rsplit("/", 1)[1] for p in blob_gets) == sorted(alpine.blob_digests)
    assert upstream.count("GET", r"/manifests/", since=mark) == 1


def test_multiarch_index_is_stored_as_oci_index(upstream: Upstream, tmp: Path) -> None:
    multi = upstream.images["multiarch"]
    assert isinstance(multi, images.IndexRecord)
    resp = upstream.registry.get_manifest(multi.name, multi.tag)
    assert resp.status == 200, resp
    assert resp.header("Content-Type") == images.OCI_INDEX
    assert resp.header("Docker-Content-Digest") == multi.index_digest == resp.digest
    assert resp.body == multi.index
    assert {m.platform["architecture"] for m in multi.manifests if m.platform} == {"amd64", "arm64"}
    assert not set(multi.platform("amd64").layer_digests) & set(
        multi.platform("arm64").layer_digests
    )

    skopeo(
        "copy", "--all", "--src-tls-verify=false",
        f"docker://{upstream.host}/{multi.ref}", f"oci:{tmp / 'multi'}:x",
    )  # fmt: skip
    layout = oci_digests(tmp / "multi")
    assert layout.manifest_digests == [multi.index_digest]
    assert set(multi.blobs) <= set(layout.blobs)


def test_docker_format_images(upstream: Upstream) -> None:
    """The Docker schema 2 image and manifest list are served as such, with Docker Accept only."""
    hello, dlist = upstream.images["docker"], upstream.images["dockerlist"]
    assert isinstance(hello, images.ImageRecord) and isinstance(dlist, images.IndexRecord)
    for record, media_type in ((hello, images.DOCKER_MANIFEST), (dlist, images.DOCKER_LIST)):
        assert record.media_type == media_type
        resp = upstream.registry.get(
            f"/v2/{record.name}/manifests/{record.tag}", headers=[("Accept", media_type)]
        )
        assert resp.status == 200, resp
        assert resp.header("Content-Type") == media_type
        assert resp.digest == record.manifest_digest
    assert {m.media_type for m in dlist.manifests} == {images.DOCKER_MANIFEST}
    assert dlist.platform("arm64").platform == {"architecture": "arm64", "os": "linux"}


def test_private_image_needs_reader_credentials(upstream: Upstream) -> None:
    secret = upstream.images["secret"]
    ref = f"docker://{upstream.host}/{secret.ref}"
    anonymous = skopeo("inspect", "--tls-verify=false", "-n", ref, check=False)
    assert anonymous.returncode != 0, describe(anonymous)
    assert "unauthorized" in anonymous.stderr.lower(), describe(anonymous)

    assert upstream.reader is not None
    user, password = upstream.reader
    mark = upstream.log_mark()
    wrong = skopeo(
        "inspect", "--tls-verify=false", "-n", "--creds", f"{user}:nope", ref, check=False
    )
    assert wrong.returncode != 0, describe(wrong)
    assert [t["status"] for t in upstream.token_requests(mark)] == [401]

    ok = skopeo("inspect", "--tls-verify=false", "-n", "--creds", f"{user}:{password}", ref)
    assert json.loads(ok.stdout)["Digest"] == secret.manifest_digest


def test_token_server_policy(upstream: Upstream) -> None:
    """Scope parsing, anonymous markers, wrong credentials and the pusher's rights."""
    assert upstream.realm and upstream.reader and upstream.pusher
    query = urllib.parse.urlencode(
        [
            ("service", upstream.service),
            ("scope", "repository:library/alpine:pull repository:private/secret:pull"),
            ("scope", "repository:public/multiarch:pull,push"),
        ]
    )
    url = f"{upstream.realm}?{query}"

    anonymous = web.request("GET", url, {"Authorization": "Basic Og=="})
    assert anonymous.status == 200, anonymous
    body = anonymous.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    claims = _jwt_claims(body["token"])
    assert claims["sub"] == "" and claims["aud"] == upstream.service
    assert claims["access"] == [
        {"type": "repository", "name": "library/alpine", "actions": ["pull"]},
        {"type": "repository", "name": "public/multiarch", "actions": ["pull"]},
    ]

    reader = web.request("GET", url, {"Authorization": _basic(*upstream.reader)})
    access = _jwt_claims(reader.json()["token"])["access"]
    assert {"type": "repository", "name": "private/secret", "actions": ["pull"]} in access

    pusher = web.request("GET", url, {"Authorization": _basic(*upstream.pusher)})
    access = _jwt_claims(pusher.json()["token"])["access"]
    assert {"type": "repository", "name": "public/multiarch", "actions": ["pull", "push"]} in access

    wrong = web.request("GET", url, {"Authorization": _basic(upstream.reader[0], "bad")})
    assert wrong.status == 401 and wrong.json()["errors"][0]["code"] == "UNAUTHORIZED"

    bad_service = web.request("GET", f"{upstream.realm}?service=other")
    assert bad_service.status == 400

    logged = upstream.token_requests()[-4:]
    assert [(r["authorization"], r["user"], r["status"]) for r in logged] == [
        (True, upstream.reader[0], 200),
        (True, upstream.pusher[0], 200),
        (True, upstream.reader[0], 401),
        (False, None, 400),
    ]


def test_plain_upstream_needs_no_auth(plain_upstream: Upstream) -> None:
    plain = plain_upstream.images["plain"]
    assert plain_upstream.tokenserver is None and plain_upstream.realm is None
    assert web.request("GET", plain_upstream.url + "/v2/").status == 200
    result = skopeo("inspect", "--tls-verify=false", f"docker://{plain_upstream.host}/{plain.ref}")
    assert json.loads(result.stdout)["Digest"] == plain.manifest_digest


def test_redirect_upstream_sends_blobs_to_cdn(redirect_upstream: Upstream, tmp: Path) -> None:
    up = redirect_upstream
    assert up.cdn is not None
    alpine = up.images["alpine"]
    assert isinstance(alpine, images.ImageRecord)
    layer = alpine.layers[0]
    mark = up.log_mark()

    resp = up.registry.get(f"/v2/{alpine.name}/blobs/{layer.digest}")
    assert resp.status == 307, resp
    location = resp.header("Location")
    assert location == up.cdn.url + blob_storage_path(layer.digest)

    token = up.token([f"repository:{alpine.name}:pull"])
    refused = web.request("GET", location, {"Authorization": f"Bearer {token}"})
    assert refused.status == 403, refused
    served = web.request("GET", location)
    assert served.status == 200 and served.digest == layer.digest and served.length == layer.size
    part = web.request("GET", location, {"Range": "bytes=10-19"})
    assert part.status == 206 and part.header("Content-Range") == f"bytes 10-19/{layer.size}"
    assert part.body == up.registry.blob_path(layer.digest).read_bytes()[10:20]
    head = web.request("HEAD", location)
    assert head.status == 200 and head.header("Content-Length") == str(layer.size)

    assert [(r["authorization"], r["status"]) for r in up.cdn_requests(mark)] == [
        (True, 403),
        (False, 200),
        (False, 206),
        (False, 200),
    ]

    # A real client follows the redirect without forwarding its token.
    mark = up.log_mark()
    skopeo(
        "copy", "--src-tls-verify=false",
        f"docker://{up.host}/{alpine.ref}", f"oci:{tmp / 'out'}:x",
    )  # fmt: skip
    assert set(alpine.blobs.items()) <= set(oci_digests(tmp / "out", verify=True).blobs.items())
    cdn = up.cdn_requests(mark)
    assert sorted(r["path"] for r in cdn) == sorted(
        blob_storage_path(d) for d in alpine.blob_digests
    )
    assert not any(r["authorization"] for r in cdn)


def test_large_blob_helper(upstream: Upstream, tmp: Path) -> None:
    name = f"library/large-{uuid.uuid4().hex[:8]}"
    size = 10 * 1024 * 1024 + 123
    blob = largeblobs.put_large_blob(upstream.registry, name, size, seed="harness")
    assert blob.size == size
    assert upstream.registry.blob_path(blob.digest).stat().st_size == size
    assert largeblobs.put_large_blob(upstream.registry, name + "-again", size, "harness") == blob

    resp = upstream.registry.get(f"/v2/{name}/blobs/{blob.digest}", digest_body=True)
    assert resp.status == 200, resp
    assert (resp.digest, resp.length) == (blob.digest, size)
    anonymous = web.request("GET", f"{upstream.url}/v2/{name}/blobs/{blob.digest}")
    assert anonymous.status == 401

    assert upstream.pusher is not None
    image = largeblobs.put_large_image(
        upstream.registry, name, "1", 3 * 1024 * 1024, upstream.pusher
    )
    skopeo(
        "copy", "--src-tls-verify=false", f"docker://{upstream.host}/{image.ref}", f"dir:{tmp}/d"
    )
    copied = tmp / "d" / image.layers[0].digest.split(":")[1]
    assert copied.stat().st_size == image.layers[0].size


def test_managed_process_kills_its_group(tmp: Path) -> None:
    """stop() must take grandchildren down too, and the log tail must be readable."""
    script = "import os,subprocess,sys,time; p=subprocess.Popen(['sleep','300']); print(p.pid)"
    script += "; sys.stdout.flush(); time.sleep(300)"
    with ManagedProcess("sleeper", [sys.executable, "-c", script], tmp) as proc:
        wait_until(lambda: bool(proc.log_text().strip()), 10)
        grandchild = int(proc.log_text().split()[0])
        assert pid_alive(grandchild) and proc.alive()
    assert not proc.alive()
    if not wait_until(lambda: not pid_alive(grandchild), 5):
        pytest.fail(f"grandchild {grandchild} survived stop()")
    assert str(grandchild) in proc.log_tail()


def test_make_upstream_x5c_ec_and_restart(make_upstream: UpstreamFactory) -> None:
    """ES256 tokens with an x5c header verify too, and a registry can go down and come back."""
    up = make_upstream(header="x5c", key_kind="ec", expires_in=60)
    alpine = up.images["alpine"]
    ref = f"docker://{up.host}/{alpine.ref}"
    assert json.loads(skopeo("inspect", "--tls-verify=false", "-n", ref).stdout)["Digest"] == (
        alpine.manifest_digest
    )
    token = up.token([f"repository:{alpine.name}:pull"])
    assert token is not None
    assert _jwt_claims(token)["exp"] == _jwt_claims(token)["iat"] + 60  # type: ignore[operator]

    up.registry.stop()
    with pytest.raises(ConnectionRefusedError):
        web.request("GET", up.url + "/v2/")
    up.registry.restart()
    assert up.registry.get_manifest(alpine.name, "3.20").digest == alpine.manifest_digest
