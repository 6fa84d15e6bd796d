"""The daemon as operators run it: options, proxy.tac, JSON logs, systemd units, the wheel."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dockerproxy.config import Config
from tests.harness import web
from tests.harness.polling import wait_until
from tests.harness.ports import HOST, free_port, wait_http
from tests.harness.procs import ManagedProcess
from tests.harness.proxy import StartProxy, run_twistd
from tests.harness.served import answers_reloads_and_stops
from tests.harness.tls import make_ca
from tests.harness.upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args,named",
    [
        (["--upstream", "ftp://example.com"], "--upstream"),
        (["--route", "no-equals-sign"], "--route"),
        (["--listen", "tcp:notaport"], "--listen"),
        (["--idle-timeout", "-3"], "--idle-timeout"),
        (["--log-format", "xml"], "--log-format"),
        (["--upstream-ca", "/nonexistent/ca.pem"], "--upstream-ca"),
        (["--frobnicate"], "--frobnicate"),
    ],
)
def test_bad_options_fail_with_one_line(tmp: Path, args: list[str], named: str) -> None:
    status, stderr = run_twistd(tmp, args)
    assert status != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert named in lines[0] and "Traceback" not in stderr


def test_bad_config_file_names_the_key(tmp: Path) -> None:
    config = tmp / "config.toml"
    config.write_text('[routes]\n"docker.example.com" = { url = "https://x", colour = "red" }\n')
    status, stderr = run_twistd(tmp, ["--config", str(config)])
    assert status != 0
    assert stderr.strip() == "dockerproxy: routes.docker.example.com.colour: unknown setting"


def test_config_file_with_command_line_override(
    start_proxy: StartProxy, upstream: Upstream, plain_upstream: Upstream, tmp: Path
) -> None:
    config = tmp / "config.toml"
    config.write_text(f'upstream = "{upstream.url}"\nlibrary_prefix = true\n')
    proxy = start_proxy("--config", str(config), "--upstream", plain_upstream.url)
    plain = plain_upstream.images["plain"]
    response = web.request(
        "GET", f"{proxy.url}/v2/plain/manifests/1", [("Accept", plain.media_type)]
    )
    assert response.status == 200, "library_prefix from the file, upstream from the option"
    assert response.header("docker-content-digest") == plain.manifest_digest


def test_proxy_tac_reads_the_config_from_the_environment(upstream: Upstream, tmp: Path) -> None:
    port = free_port()
    config = tmp / "config.toml"
    config.write_text(
        f'listen = ["tcp:{port}:interface={HOST}"]\nupstream = "{upstream.url}"\n'
        f'log_format = "json"\n[cache]\ndir = "{tmp / "cache"}"\n'
    )
    twistd = str(Path(sys.executable).with_name("twistd"))
    proc = ManagedProcess(
        "tac",
        [twistd, "--nodaemon", "--pidfile=", "--python", str(ROOT / "proxy.tac")],
        tmp,
        env={**os.environ, "DOCKERPROXY_CONFIG": str(config)},
        cwd=tmp,
    )
    with proc:
        wait_http(f"http://{HOST}:{port}/", alive=proc.exit_problem)
        ping = web.request("GET", f"http://{HOST}:{port}/v2/")
        assert ping.status == 401
        assert f'realm="http://{HOST}:{port}/v2/auth"' in (ping.header("www-authenticate") or "")
        assert '"log_namespace": "dockerproxy.access"' in proc.log_text()
        # SIGHUP reads DOCKERPROXY_CONFIG's file again: the log turns to text.
        config.write_text(config.read_text().replace('log_format = "json"', 'log_format = "text"'))
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_until(
            lambda: "[dockerproxy.reload#info] reload: configuration applied" in proc.log_text()
        ), proc.log_tail()
    assert (tmp / "cache" / "blobs").is_dir(), "the [cache] table is read"


def test_json_access_log(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start_proxy("--upstream", upstream.url, "--log-format", "json")
    web.request("GET", f"{proxy.url}/v2/library/alpine/tags/list")
    events = proxy.access_events()
    event = next(e for e in events if e["path"] == "/v2/library/alpine/tags/list")
    assert event["method"] == "GET" and event["status"] == 401
    assert event["upstream"] == upstream.url
    assert isinstance(event["bytes"], int) and isinstance(event["duration"], float)
    for line in proxy.log_text().splitlines():
        if line.strip():
            assert line.startswith("{"), f"not JSON: {line!r}"


def test_systemd_socket_activation(upstream: Upstream, tmp: Path) -> None:
    """systemd passes the listening socket (LISTEN_FDS); the proxy accepts on it."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "scripts/test.sh installs systemd"
    port = free_port()
    twistd = str(Path(sys.executable).with_name("twistd"))
    proc = ManagedProcess(
        "activated",
        [
            # --fdname: Twisted reads LISTEN_FDS only with LISTEN_FDNAMES, as systemd sets both.
            activate,
            "--listen",
            f"{HOST}:{port}",
            "--fdname=http",
            twistd,
            "--nodaemon",
            "--pidfile=",
            "dockerproxy",
            "--listen",
            "systemd:domain=INET:index=0",
            "--upstream",
            upstream.url,
            "--no-presets",
            "--no-cache",
        ],
        tmp,
        cwd=tmp,
    )
    with proc:
        answers_reloads_and_stops(proc, port)


def test_tls_over_a_socket_systemd_passes(upstream: Upstream, tmp: Path) -> None:
    """ssl:systemd=0: systemd owns port 443, the proxy terminates TLS on it, and a reload
    serves a renewed certificate on the same socket."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "scripts/test.sh installs systemd"
    port = free_port()
    ca = make_ca(tmp / "ca")
    key, cert = tmp / "privkey.pem", tmp / "fullchain.pem"
    shutil.copy(ca.server_key, key)
    shutil.copy(ca.server_cert, cert)
    twistd = str(Path(sys.executable).with_name("twistd"))
    listen = f"ssl:systemd=0:privateKey={key}:certKey={cert}"
    argv = [activate, "--listen", f"{HOST}:{port}", "--fdname=https", twistd, "--nodaemon"]
    argv += ["--pidfile=", "dockerproxy", "--listen", listen, "--upstream", upstream.url]
    proc = ManagedProcess("activated-tls", [*argv, "--no-presets", "--no-cache"], tmp, cwd=tmp)
    with proc:
        trusted = ssl.create_default_context(cafile=str(ca.ca_cert))
        assert wait_until(lambda: _https_status(port, trusted) == 401), proc.log_tail()
        renewed = make_ca(tmp / "ca-2")
        shutil.copy(renewed.server_key, key)
        shutil.copy(renewed.server_cert, cert)
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_until(lambda: "serves a new certificate" in proc.log_text()), proc.log_tail()
        assert _https_status(port, ssl.create_default_context(cafile=str(renewed.ca_cert))) == 401
        with pytest.raises(ssl.SSLCertVerificationError):
            _https_status(port, trusted)


def _https_status(port: int, context: ssl.SSLContext) -> int | None:
    """The status of GET /v2/ over TLS verified by ``context``; None if nothing listens."""
    connection = http.client.HTTPSConnection(HOST, port, timeout=10, context=context)
    try:
        connection.request("GET", "/v2/")
        return connection.getresponse().status
    except ConnectionError:
        return None
    finally:
        connection.close()


def test_systemd_units_verify(tmp: Path) -> None:
    """systemd-analyze checks the units as shipped, with ExecStart pointed at this venv."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "scripts/test.sh installs systemd"
    twistd = Path(sys.executable).with_name("twistd")
    service = (ROOT / "systemd/dockerproxy.service").read_text()
    assert "/opt/dockerproxy/venv/bin/twistd" in service
    assert "--listen systemd:domain=INET:index=0" in service
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CacheDirectory=dockerproxy",
        "StateDirectory=dockerproxy",  # the token signing key, when clients log in
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert setting in service
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", service, re.MULTILINE)
    assert stop and int(stop[1]) > Config.drain_timeout, "systemd must outwait the drain"
    (tmp / "dockerproxy.service").write_text(
        service.replace("/opt/dockerproxy/venv/bin/twistd", str(twistd))
    )
    shutil.copy(ROOT / "systemd/dockerproxy.socket", tmp / "dockerproxy.socket")
    result = subprocess.run(
        [analyze, "verify", str(tmp / "dockerproxy.socket"), str(tmp / "dockerproxy.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "dockerproxy" not in result.stderr, result.stderr


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy without build/ leftovers, as a fresh clone would be built."""
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", "tests", "bench"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return next(tmp.glob("dockerproxy-*.whl"))


def test_wheel_ships_the_twistd_plugin(tmp: Path) -> None:
    """A plain (non-editable) install must carry twisted/plugins/dockerproxy_plugin.py."""
    wheel = build_wheel(tmp)
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/dockerproxy_plugin.py" in names
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "dockerproxy").rglob("*.py")}
    assert sources <= set(names), f"missing from the wheel: {sorted(sources - set(names))}"
    assert not any(
        n.startswith("twisted/__init__") or n.startswith("twisted/plugins/__init__") for n in names
    ), "must not shadow Twisted's own packages"


def test_wheel_ships_the_home_page_template_and_catalogs(tmp: Path) -> None:
    """The home page's data files are in the wheel, and the package installed from it alone
    (not this checkout, not the venv's copy) renders the page in every language."""
    wheel = build_wheel(tmp)
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = ROOT / "dockerproxy" / "templates"
    data = {str(p.relative_to(ROOT)) for p in templates.rglob("*") if p.is_file()}
    assert {
        "dockerproxy/templates/home.xhtml",
        "dockerproxy/templates/messages/en.toml",
        "dockerproxy/templates/messages/zh.toml",
    } <= data
    assert data <= names, f"missing from the wheel: {sorted(data - names)}"

    site = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    script = (
        "import dockerproxy.homepage as h, dockerproxy.languages as l\n"
        "print(h.__file__)\n"
        "print(sorted(l.LANGUAGES))\n"
        "for lang in l.LANGUAGES:\n"
        "    info = h.MirrorInfo('wheel.test:5000', 'https', None, None)\n"
        "    print(h.render(info, lang).count(b'wheel.test:5000'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    where, languages, *counts = result.stdout.splitlines()
    assert Path(where).is_relative_to(site), where
    assert languages == "['en', 'zh']"
    assert all(int(count) > 0 for count in counts), counts


def test_the_wheel_installs_the_dockerproxy_command(tmp: Path) -> None:
    """``pip install .`` gives a ``dockerproxy`` script that runs the package it came with."""
    wheel = build_wheel(tmp)
    with zipfile.ZipFile(wheel) as archive:
        [entry_points] = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        declared = archive.read(entry_points).decode()
    assert "[console_scripts]\ndockerproxy = dockerproxy.cli:main" in declared, declared
    site = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), wheel],
        check=True,
        timeout=300,
        capture_output=True,
    )
    script = site / "bin" / "dockerproxy"
    env = {**os.environ, "PYTHONPATH": str(site)}
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp
    )
    assert (version.returncode, version.stdout.split()[0]) == (0, "dockerproxy"), version
    config = tmp / "config.toml"
    config.write_text('log_format = "json"\n[cache]\nenabled = false\n')
    checked = subprocess.run(
        [str(script), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp,
    )
    assert checked.returncode == 0, checked.stderr
    assert 'log_format = "json"' in checked.stdout.splitlines()
