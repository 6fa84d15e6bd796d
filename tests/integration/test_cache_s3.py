"""The S3 cache tier against a real S3 server (SeaweedFS, which checks signatures).

Two proxy instances with their own local caches share one bucket: a blob one of them fetched
from the upstream is served by the other with no upstream GET, relayed or as a 307 to a
presigned URL; large blobs go up as multipart uploads.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import largeblobs, web
from tests.harness.polling import wait_until
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.seaweed import Seaweed, unique
from tests.harness.upstream import Upstream

PREFIX = "mirror/"
PART = 5 * 1024 * 1024  # S3's smallest part: a 20 MB blob goes up in 4


def config_file(tmp: Path, seaweed: Seaweed, bucket: str, name: str) -> Path:
    """[cache.s3] with the credentials in the file (the other instance uses the environment)."""
    path = tmp / f"{name}.toml"
    path.write_text(f"""
[cache.s3]
endpoint = "{seaweed.endpoint}"
bucket = "{bucket}"
prefix = "{PREFIX}"
access_key_id = "{seaweed.access_key}"
secret_access_key = "{seaweed.secret_key}"
part_size = "5MiB"
""")
    return path


def start_pair(
    start_proxy: StartProxy,
    tmp: Path,
    seaweed: Seaweed,
    upstream: Upstream,
    bucket: str,
    *b_args: str,
) -> tuple[ProxyProcess, ProxyProcess]:
    """Instance A (settings in its config file) and B (options and AWS_* variables)."""
    a = start_proxy(
        "--upstream",
        upstream.url,
        "--log-format",
        "json",
        "--config",
        str(config_file(tmp, seaweed, bucket, "a")),
        name="proxy-a",
    )
    b = start_proxy(
        "--upstream",
        upstream.url,
        "--log-format",
        "json",
        "--cache-s3-endpoint",
        seaweed.endpoint,
        "--cache-s3-bucket",
        bucket,
        "--cache-s3-prefix",
        PREFIX,
        *b_args,
        name="proxy-b",
        env={"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key},
    )
    return a, b


def get_blob(proxy: ProxyProcess, repository: str, digest: str) -> web.Response:
    """GET a blob through ``proxy`` with an anonymous token from its /v2/auth."""
    token = web.request("GET", f"{proxy.url}/v2/auth?scope=repository:{repository}:pull")
    assert token.status == 200, token
    return web.request(
        "GET",
        f"{proxy.url}/v2/{repository}/blobs/{digest}",
        {"Authorization": f"Bearer {token.json()['token']}"},
        digest_body=True,
    )


def object_path(bucket: str, digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"/{bucket}/{PREFIX}blobs/{algorithm}/{hexdigest}"


def wait_uploaded(seaweed: Seaweed, bucket: str, digest: str, proxy: ProxyProcess) -> None:
    """Uploads run after the client's response: wait for the object to appear."""
    if not wait_until(
        lambda: seaweed.request("HEAD", object_path(bucket, digest)).status == 200, 60, interval=0.1
    ):
        raise AssertionError(f"{digest} never reached S3:\n{proxy.log_text()[-3000:]}")


def cache_statuses(proxy: ProxyProcess) -> list[object]:
    return [
        event.get("cache") for event in proxy.access_events() if "/blobs/" in str(event.get("path"))
    ]


def test_signatures_are_checked(seaweed: Seaweed) -> None:
    bucket = unique("signed")
    assert seaweed.request("PUT", f"/{bucket}").status == 200
    assert seaweed.request("PUT", f"/{bucket}/object", b"content").status == 200
    assert seaweed.request("GET", f"/{bucket}/object").body == b"content"
    wrong = seaweed.request("GET", f"/{bucket}/object", secret="not-the-secret")
    assert (wrong.status, b"SignatureDoesNotMatch" in wrong.body) == (403, True), wrong
    assert seaweed.request("GET", f"/{bucket}/object", secret="").status == 403


def test_a_blob_filled_through_one_instance_is_served_by_the_other(
    seaweed: Seaweed, upstream: Upstream, start_proxy: StartProxy, tmp: Path
) -> None:
    repository = f"public/{unique('s3')}"
    large = largeblobs.put_large_blob(upstream.registry, repository, 20_000_000, seed=repository)
    small = largeblobs.write_blob(upstream.registry, repository, [b"small blob " * 1000])
    bucket = unique("shared")
    assert seaweed.request("HEAD", f"/{bucket}").status == 404
    a, b = start_pair(start_proxy, tmp, seaweed, upstream, bucket)

    for blob in (large, small):
        response = get_blob(a, repository, blob.digest)
        assert (response.status, response.digest, response.length) == (
            200,
            blob.digest,
            blob.size,
        ), response
    for blob in (large, small):
        wait_uploaded(seaweed, bucket, blob.digest, a)
    assert seaweed.request("HEAD", f"/{bucket}").status == 200, "the bucket was created"

    # The large blob went up in parts (an S3 multipart ETag ends with -<parts>), and the
    # object is byte for byte the blob.
    head = seaweed.request("HEAD", object_path(bucket, large.digest))
    assert (head.header("etag") or "").strip('"').endswith(f"-{-(-large.size // PART)}"), head
    assert "-" not in (
        seaweed.request("HEAD", object_path(bucket, small.digest)).header("etag") or "-"
    )
    stored = seaweed.request("GET", object_path(bucket, large.digest), digest_body=True)
    assert (stored.status, stored.length, stored.digest) == (200, large.size, large.digest)

    mark = upstream.log_mark()
    for blob in (large, small):
        response = get_blob(b, repository, blob.digest)
        assert (response.status, response.digest, response.length) == (
            200,
            blob.digest,
            blob.size,
        ), response
    assert upstream.count("GET", "/blobs/", since=mark) == 0, upstream.requests(mark)
    assert cache_statuses(b) == ["s3", "s3"]
    again = get_blob(b, repository, large.digest)
    assert (again.status, again.digest) == (200, large.digest)
    assert cache_statuses(b)[-1] == "hit", "B keeps a verified local copy"
    assert upstream.count("GET", "/blobs/", since=mark) == 0


def test_redirect_mode_sends_clients_to_a_presigned_url(
    seaweed: Seaweed, upstream: Upstream, start_proxy: StartProxy, tmp: Path
) -> None:
    repository = f"public/{unique('s3redirect')}"
    blob = largeblobs.put_large_blob(upstream.registry, repository, 3_000_000, seed=repository)
    bucket = unique("redirect")
    a, b = start_pair(start_proxy, tmp, seaweed, upstream, bucket, "--cache-s3-redirect")
    assert get_blob(a, repository, blob.digest).digest == blob.digest
    wait_uploaded(seaweed, bucket, blob.digest, a)

    mark = upstream.log_mark()
    redirect = get_blob(b, repository, blob.digest)
    assert redirect.status == 307, redirect
    location = redirect.header("location") or ""
    assert location.startswith(f"{seaweed.endpoint}{object_path(bucket, blob.digest)}?")
    assert "X-Amz-Signature=" in location
    followed = web.request("GET", location, digest_body=True)  # no Authorization
    assert (followed.status, followed.length, followed.digest) == (200, blob.size, blob.digest)
    assert upstream.count("GET", "/blobs/", since=mark) == 0
    assert cache_statuses(b) == ["s3-redirect"]


def test_a_failing_s3_never_fails_a_pull(
    upstream: Upstream, start_proxy: StartProxy, tmp: Path
) -> None:
    """Nothing listens at the endpoint: pulls go to the upstream, the failures are logged."""
    from tests.harness.ports import free_port

    repository = f"public/{unique('nos3')}"
    blob = largeblobs.put_large_blob(upstream.registry, repository, 1_000_000, seed=repository)
    proxy = start_proxy(
        "--upstream",
        upstream.url,
        "--cache-s3-endpoint",
        f"http://127.0.0.1:{free_port()}",
        "--cache-s3-bucket",
        "absent",
        env={"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"},
    )
    for _ in range(2):
        response = get_blob(proxy, repository, blob.digest)
        assert (response.status, response.digest) == (200, blob.digest), response
    # The upload fails after the client's response.
    wait_until(lambda: "S3 cache: cannot upload" in proxy.log_text(), 10, interval=0.1)
    log = proxy.log_text()
    assert "S3 cache: cannot look up" in log
    assert "S3 cache: cannot upload" in log
    assert "refused" in log.lower()
