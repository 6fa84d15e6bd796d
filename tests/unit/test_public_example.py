"""The files of README's "Running it in public" (systemd/public/) as an operator installs
them: the config passes check-config once its files exist, and the certbot deploy hook
copies a renewal where the proxy's group reads it, then reloads."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

from dockerproxy import cli, usercli
from tests.unit.tlsfiles import issue

PUBLIC = Path(__file__).resolve().parents[2] / "systemd" / "public"


def installed(etc: Path) -> Path:
    """systemd/public/config.toml with /etc/dockerproxy at C{etc}, and the files it names."""
    text = (PUBLIC / "config.toml").read_text().replace("/etc/dockerproxy", str(etc))
    (etc / "tls").mkdir(parents=True)
    issued = issue(etc / "tls", "mirror")
    os.replace(issued.key, etc / "tls" / "privkey.pem")
    os.replace(issued.cert, etc / "tls" / "fullchain.pem")
    quiet = io.StringIO()
    htpasswd = str(etc / "htpasswd")
    assert usercli.passwd_main([htpasswd, "alice"], stdin=io.StringIO("pw\n"), stderr=quiet) == 0
    tokens = ["new", "ci", "--file", str(etc / "tokens.toml")]
    assert usercli.token_main(tokens, stdout=quiet, stderr=quiet) == 0
    config = etc / "config.toml"
    config.write_text(text)
    return config


def test_the_public_config_checks(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cli.main(["check-config", str(installed(tmp_path / "etc"))], out=out) == 0
    shown = out.getvalue()
    assert "ssl:systemd=0" in shown and "tcp:9100:interface=127.0.0.1" in shown


def test_the_deploy_hook_copies_the_renewal_and_reloads(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    lineage = issue(tmp_path / "live", "renewed")
    live = tmp_path / "live"
    os.replace(lineage.key, live / "privkey.pem")
    os.replace(lineage.cert, live / "fullchain.pem")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/systemctl.args\n')
    (bin_dir / "systemctl").chmod(0o755)
    group = Path("/etc/group").read_text().split(":", 1)[0]  # any group there is
    hook = (PUBLIC / "certbot-deploy-hook").read_text()
    hook = hook.replace("/etc/dockerproxy", str(etc)).replace("-g dockerproxy", f"-g {group}")
    env = {**os.environ, "RENEWED_LINEAGE": str(live), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    etc.mkdir()
    subprocess.run(["sh", "-c", hook], env=env, check=True)
    key = etc / "tls" / "privkey.pem"
    assert key.read_bytes() == (live / "privkey.pem").read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    assert (etc / "tls" / "fullchain.pem").read_bytes() == (live / "fullchain.pem").read_bytes()
    assert sorted(p.name for p in (etc / "tls").iterdir()) == ["fullchain.pem", "privkey.pem"]
    assert (tmp_path / "systemctl.args").read_text().split() == ["reload", "dockerproxy.service"]
