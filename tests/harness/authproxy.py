"""A dockerproxy whose clients log in (tests.integration.test_auth and
test_auth_daemons): users in an htpasswd file written by Apache's real ``htpasswd -B``, a
static token ``ci`` written by ``dockerproxy token new``, its own state directory, and a
small HTTP client for what no container client does on purpose."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from dockerproxy.usercli import token_main
from tests.harness import web
from tests.harness.proxy import StartProxy
from tests.harness.upstream import Upstream

ALICE = ("alice", "alice-pw-" + "x" * 8)


def htpasswd_file(path: Path, *users: tuple[str, str]) -> Path:
    """Written by the real ``htpasswd -B`` (apache2-utils), as operators do."""
    tool = shutil.which("htpasswd")
    if tool is None:
        pytest.fail("not installed: htpasswd; run scripts/test.sh as root (apache2-utils)")
    for n, (user, password) in enumerate(users):
        create = ["-c"] if n == 0 else []
        subprocess.run([tool, "-B", "-b", *create, str(path), user, password], check=True,
                       capture_output=True)  # fmt: skip
    return path


def new_token(path: Path, name: str) -> str:
    out = io.StringIO()
    assert token_main(["new", name, "--file", str(path)], stdout=out, stderr=io.StringIO()) == 0
    return out.getvalue().strip()


class AuthProxy:
    """A proxy with users, a static token ``ci`` and its own state directory."""

    def __init__(
        self,
        start_proxy: StartProxy,
        upstream: Upstream,
        tmp: Path,
        *args: str,
        credentials: bool = False,
        auth: str = "",
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.state = tmp / "state"
        htpasswd = htpasswd_file(tmp / "htpasswd", ALICE, ("bob", "bob-pw-1234"))
        tokens = tmp / "tokens.toml"
        self.ci_token = new_token(tokens, "ci")
        config = f'[registries."docker.io"]\nurl = "{upstream.url}"\n'
        if credentials:
            assert upstream.reader is not None
            user, password = upstream.reader
            config += f'username = "{user}"\npassword = "{password}"\n'
        config += f"[auth]\n{auth}\n"
        (tmp / "config.toml").write_text(config)
        self.proxy = start_proxy(
            "--no-presets",
            "--config", str(tmp / "config.toml"),
            "--auth-htpasswd", str(htpasswd),
            "--auth-tokens", str(tokens),
            "--state-dir", str(self.state),
            *args,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return self.proxy.url

    def login(self, *scopes: str, creds: tuple[str, str] | None = ALICE) -> web.Response:
        query = "&".join(f"scope=repository:{s}:pull" for s in scopes)
        headers = {"Authorization": basic(*creds)} if creds else {}
        return web.request("GET", f"{self.url}/v2/auth?service=dockerproxy&{query}", headers)

    def token(self, *repositories: str, creds: tuple[str, str] | None = ALICE) -> str:
        response = self.login(*repositories, creds=creds)
        assert response.status == 200, str(response)
        token = response.json()["token"]
        assert isinstance(token, str)
        return token

    def get(self, path: str, token: str | None = None) -> web.Response:
        headers = [("Accept", "application/vnd.oci.image.manifest.v1+json"),
                   ("Accept", "application/vnd.oci.image.index.v1+json")]  # fmt: skip
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        return web.request("GET", f"{self.url}{path}", headers)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def creds(pair: tuple[str, str]) -> str:
    return f"--src-creds={pair[0]}:{pair[1]}"
