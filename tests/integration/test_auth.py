"""Clients log in to a real dockerproxy (``--auth-htpasswd`` written by Apache's real
``htpasswd -B``, ``--auth-tokens`` by ``dockerproxy token new``), which pulls from the real
token-auth docker-registry as itself: skopeo with and without ``--src-creds``, raw HTTP for
what no client does on purpose (another repository's token, a tampered token, guessing).

The upstream's own policy: ``library/*`` and ``public/*`` are anonymous, ``private/*`` needs
its ``reader`` account, which only the proxy has (``[registries."docker.io"]``).
"""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness.authproxy import ALICE, AuthProxy, creds, htpasswd_file
from tests.harness.proxy import StartProxy, run_twistd
from tests.harness.pulls import assert_same_image, copy
from tests.harness.upstream import Upstream


@pytest.fixture
def auth_proxy(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> AuthProxy:
    return AuthProxy(start_proxy, upstream, tmp)


def test_skopeo_logs_in_and_pulls_as_the_proxy(
    auth_proxy: AuthProxy, upstream: Upstream, tmp: Path
) -> None:
    mark = upstream.log_mark()
    copy(auth_proxy.proxy, "library/alpine:3.20", tmp / "out", creds(ALICE))
    assert_same_image(tmp / "out", upstream.images["alpine"])
    # The upstream's token server saw the proxy, anonymous: never alice, never her password.
    tokens = upstream.token_requests(mark)
    assert tokens and all(t["user"] is None and not t["authorization"] for t in tokens), tokens
    # The key was made once, private.
    [key] = auth_proxy.state.iterdir()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    log = auth_proxy.proxy.log_text()
    assert ALICE[1] not in log and base64.b64encode(ALICE[1].encode()).decode() not in log


def test_wrong_password_and_anonymous_are_refused(
    auth_proxy: AuthProxy, upstream: Upstream, tmp: Path
) -> None:
    mark = upstream.log_mark()
    wrong = copy(auth_proxy.proxy, "library/alpine:3.20", tmp / "w", creds(("alice", "nope")),
                 check=False)  # fmt: skip
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower(), wrong.stderr
    anonymous = copy(auth_proxy.proxy, "library/alpine:3.20", tmp / "a", check=False)
    assert anonymous.returncode != 0, anonymous.stderr
    assert "unauthorized" in anonymous.stderr.lower() or "denied" in anonymous.stderr.lower()
    assert upstream.requests(mark) == [], "nothing reached the upstream"


def test_a_static_token_is_a_password_and_a_bearer_token(
    auth_proxy: AuthProxy, upstream: Upstream, tmp: Path
) -> None:
    copy(auth_proxy.proxy, "library/hello:1", tmp / "out", creds(("anyone", auth_proxy.ci_token)))
    hello = upstream.images["docker"]
    manifest = auth_proxy.get(f"/v2/library/hello/manifests/{hello.manifest_digest}",
                              auth_proxy.ci_token)  # fmt: skip
    assert manifest.status == 200, str(manifest)


def test_a_token_for_one_repository_does_not_open_another(auth_proxy: AuthProxy) -> None:
    token = auth_proxy.token("library/alpine")
    assert auth_proxy.get("/v2/library/alpine/manifests/3.20", token).status == 200
    other = auth_proxy.get("/v2/public/multiarch/manifests/1", token)
    assert other.status == 401, str(other)
    assert other.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert other.header("www-authenticate") == (
        f'Bearer realm="{auth_proxy.url}/v2/auth",service="dockerproxy",'
        'scope="repository:public/multiarch:pull",error="insufficient_scope"'
    )


def test_a_tampered_token_is_refused(auth_proxy: AuthProxy) -> None:
    token = auth_proxy.token("library/alpine", creds=("bob", "bob-pw-1234"))
    header, payload, signature = token.split(".")
    claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    forged = claims.replace(b'"library/alpine"', b'"private/secret"')
    assert forged != claims
    forged_payload = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    for bad in (
        f"{header}.{forged_payload}.{signature}",
        f"{header}.{payload}.{signature[:-4]}AAAA",
    ):
        response = auth_proxy.get("/v2/private/secret/manifests/1", bad)
        assert response.status == 401, str(response)
        assert 'error="invalid_token"' in (response.header("www-authenticate") or "")


def test_anonymous_pulls_of_matching_repositories(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = AuthProxy(start_proxy, upstream, tmp, "--anonymous-pull", "docker.io/library/*")
    copy(proxy.proxy, "alpine:3.20", tmp / "out")  # the short name is docker.io/library/alpine
    assert_same_image(tmp / "out", upstream.images["alpine"])
    refused = copy(proxy.proxy, "public/multiarch:1", tmp / "no", check=False)
    assert refused.returncode != 0, refused.stderr
    copy(proxy.proxy, "public/dockerlist:1", tmp / "alice", creds(ALICE))


def test_a_private_repository_pulls_with_the_registrys_credentials(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """Only the proxy has an account upstream; its users pull what that account may."""
    without = AuthProxy(start_proxy, upstream, tmp / "without")
    refused = copy(without.proxy, "private/secret:1", tmp / "refused", creds(ALICE), check=False)
    assert refused.returncode != 0, refused.stderr

    proxy = AuthProxy(start_proxy, upstream, tmp / "with", credentials=True)
    mark = upstream.log_mark()
    copy(proxy.proxy, "private/secret:1", tmp / "out", creds(ALICE))
    assert_same_image(tmp / "out", upstream.images["secret"])
    assert upstream.reader is not None
    tokens = upstream.token_requests(mark)
    assert tokens and all(t["user"] == upstream.reader[0] for t in tokens), tokens
    # Anonymous clients still get nothing, cached or not.
    anonymous = copy(proxy.proxy, "private/secret:1", tmp / "anon", check=False)
    assert anonymous.returncode != 0, anonymous.stderr


def test_failed_logins_lock_the_address_out(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = AuthProxy(start_proxy, upstream, tmp, auth="fail_delay = 0.05")
    for _ in range(10):
        assert proxy.login("library/alpine", creds=("alice", "guess")).status == 401
    locked = proxy.login("library/alpine")
    assert locked.status == 429, str(locked)
    assert locked.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 290 <= int(locked.header("retry-after") or 0) <= 300
    assert "locked out for 300 s" in proxy.proxy.log_text()


def test_a_state_directory_it_cannot_use_stops_it(tmp: Path, upstream: Upstream) -> None:
    htpasswd = htpasswd_file(tmp / "htpasswd", ALICE)
    blocker = tmp / "not-a-directory"
    blocker.write_text("")
    status, stderr = run_twistd(
        tmp,
        ["--listen", "tcp:0:interface=127.0.0.1", "--no-cache", "--upstream", upstream.url,
         "--auth-htpasswd", str(htpasswd), "--state-dir", str(blocker / "state")],
    )  # fmt: skip
    assert status == 2, stderr
    lines = stderr.splitlines()
    assert lines == [
        f"dockerproxy: --state-dir: cannot keep the token signing key "
        f"{blocker}/state/token-signing.key: Not a directory"
    ], stderr


def test_a_hash_htpasswd_b_did_not_write_stops_it_naming_the_line(
    tmp: Path, upstream: Upstream
) -> None:
    tool = shutil.which("htpasswd")
    assert tool is not None
    htpasswd = htpasswd_file(tmp / "htpasswd", ALICE)
    subprocess.run([tool, "-m", "-b", str(htpasswd), "bob", "pw"], check=True, capture_output=True)
    status, stderr = run_twistd(tmp, ["--upstream", upstream.url, "--auth-htpasswd", str(htpasswd)])
    assert status == 2, stderr
    assert stderr.splitlines() == [
        f"dockerproxy: --auth-htpasswd: {htpasswd} line 2: user 'bob' has an Apache MD5 hash: "
        "only bcrypt entries are supported (htpasswd -B, or dockerproxy passwd)"
    ]
