"""Real container engines as users run them: dockerd, containerd + ctr, and podman.

Each engine keeps all of its state in a short temporary directory of its own (``/tmp/dp-*``,
removed at ``stop()``) and writes its log into the test's directory (kept by pytest). It runs
with a clean environment (``engines.engine_env``) and its own config files, so nothing of the
machine's setup leaks in: no ``/etc/docker/daemon.json``, no stored logins, no system
``registries.conf`` mirrors, no proxy variables.

``stop()`` always leaves nothing behind: it stops the engine's process group (SIGTERM, then
SIGKILL), then kills every process whose command line names the state directory (dockerd's own
containerd runs in a session of its own, out of dockerd's process group), unmounts anything
below it and removes what the engine created outside it whatever it was told
(``HostFootprint``: dockerd always writes ``/etc/docker/key.json``, creates ``/opt/containerd``
through its containerd and ``/run/docker/plugins``; rootful podman creates
``/run/containers/networks``).

What cannot be redirected and is left alone: rootful podman (like skopeo) updates the shared
blob-info cache ``/var/lib/containers/cache/blob-info-cache-v1.boltdb``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.harness.engines import (
    DEFAULT_TIMEOUT,
    HostFootprint,
    Result,
    engine_env,
    kill_processes_naming,
    processes_naming,
    run,
    short_tempdir,
    tool,
    unmount_below,
)
from tests.harness.polling import wait_until
from tests.harness.procs import ManagedProcess

DOCKERD_FOOTPRINT = (
    "/etc/docker",
    "/etc/docker/key.json",  # the daemon's ID key: its path is not configurable in 20.10
    "/opt/containerd",  # the opt plugin of dockerd's own containerd (its config is generated)
    "/opt/containerd/bin",
    "/opt/containerd/lib",
    "/run/docker",
    "/run/docker/plugins",
)
PODMAN_FOOTPRINT = ("/run/containers", "/run/containers/networks")  # netavark's rootful run dir


class Engine:
    """What every engine shares: a state directory, a log directory and a clean teardown."""

    name = "engine"

    def __init__(self, state: Path, logs: Path, footprint: Sequence[str] = ()) -> None:
        self.state = state
        self.logs = logs
        self.footprint = HostFootprint(footprint)
        self.proc: ManagedProcess | None = None
        self.killed: dict[int, str] = {}  # leftovers that stop() had to kill
        self.unmounted: list[str] = []
        self._stopped = False

    def log_text(self, since: int = 0) -> str:
        return self.proc.log_text(since) if self.proc else ""

    def log_mark(self) -> int:
        return self.proc.log_size() if self.proc else 0

    def log_tail(self, lines: int = 60) -> str:
        return self.proc.log_tail(lines) if self.proc else ""

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the engine and everything it started; idempotent. Raises if anything remains."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.proc is not None:
                self.proc.stop(timeout=timeout)
            self.killed = kill_processes_naming(self.state)
            self.unmounted = unmount_below(self.state)
        finally:
            self.footprint.restore()
            shutil.rmtree(self.state, ignore_errors=True)
        left = processes_naming(self.state)
        if left:
            raise RuntimeError(f"{self.name} left processes behind: {left}")


def wait_ready(
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``ready`` until true; fail at once with the log if the process died."""

    def ready_or_dead() -> bool:
        problem = alive() if alive else None
        if problem:
            raise RuntimeError(problem)
        return ready()

    if not wait_until(ready_or_dead, timeout, interval=0.1):
        raise TimeoutError(f"{what} not ready after {timeout}s")


def unix_http_ok(path: Path, request_path: str) -> bool:
    """True if an HTTP server on unix socket ``path`` answers ``GET request_path`` with 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            sock.sendall(f"GET {request_path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


# -- dockerd -------------------------------------------------------------------------------------


class Dockerd(Engine):
    """A running dockerd; ``docker(...)`` runs the CLI against it."""

    name = "dockerd"

    @property
    def socket(self) -> Path:
        return self.state / "docker.sock"

    def docker(self, *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> Result:
        """``DOCKER_HOST=unix://STATE/docker.sock docker ARGS``, with an empty CLI config."""
        env = engine_env(
            self.state, DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=self.state / "cli"
        )
        return run([tool("docker") or "docker", *args], env=env, timeout=timeout, check=check)

    def repo_digests(self, image: str) -> list[str]:
        result = self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", image)
        return json.loads(result.stdout)

    def image_id(self, image: str) -> str:
        return self.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


def start_dockerd(
    logs: Path, *, mirrors: Sequence[str] = (), insecure: Sequence[str] = (), timeout: float = 60.0
) -> Dockerd:
    """``dockerd`` with vfs storage, no networking setup, its own data root and sockets.

    ``mirrors`` are ``--registry-mirror`` URLs and ``insecure`` ``--insecure-registry`` hosts.
    """
    state = short_tempdir("dp-dockerd-")
    engine = Dockerd(state, logs, DOCKERD_FOOTPRINT)
    try:
        (state / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
        argv = [
            tool("dockerd") or "dockerd",
            "--config-file", str(state / "daemon.json"),
            "--debug",
            "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--storage-driver=vfs",
            "--data-root", str(state / "docker"),
            "--exec-root", str(state / "exec"),
            "-H", f"unix://{engine.socket}",
            "--pidfile", str(state / "dockerd.pid"),
        ]  # fmt: skip
        for host in insecure:
            argv += ["--insecure-registry", host]
        for mirror in mirrors:
            argv += ["--registry-mirror", mirror]
        engine.proc = ManagedProcess(
            "dockerd", argv, logs, env=engine_env(state), cwd=state
        ).start()
        wait_ready(
            lambda: unix_http_ok(engine.socket, "/_ping"),
            timeout,
            "dockerd",
            alive=engine.proc.exit_problem,
        )
    except BaseException:
        engine.stop()
        raise
    return engine


# -- containerd ----------------------------------------------------------------------------------


CONTAINERD_CONFIG = """\
version = 2
root = "{state}/root"
state = "{state}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{state}/containerd.sock"

[ttrpc]
  address = "{state}/containerd.sock.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/opt"
"""


class Containerd(Engine):
    """A running containerd; ``ctr(...)`` runs ctr against it in ``namespace``."""

    name = "containerd"

    def __init__(self, state: Path, logs: Path, namespace: str) -> None:
        super().__init__(state, logs)
        self.namespace = namespace

    @property
    def address(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def hosts_dir(self) -> Path:
        return self.state / "certs.d"

    def ctr(
        self, *args: str, debug: bool = False, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> Result:
        argv = [
            tool("ctr") or "ctr",
            *(["--debug"] if debug else []),
            "--address",
            str(self.address),
            "--namespace",
            self.namespace,
            *args,
        ]
        return run(argv, env=engine_env(self.state), timeout=timeout, check=check)

    def write_hosts(self, servers: Mapping[str, str], mirror: str) -> Path:
        """``certs.d/REGISTRY/hosts.toml`` for each registry: ``server`` is ``servers[REGISTRY]``,
        tried only after the one mirror host ``mirror`` (pull and resolve). Returns the dir."""
        for registry, server in servers.items():
            directory = self.hosts_dir / registry
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts.toml").write_text(
                f'server = "{server}"\n\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
            )
        return self.hosts_dir

    def images(self) -> dict[str, str]:
        """``ctr images ls``: image name -> target (manifest or index) digest."""
        lines = self.ctr("images", "ls").stdout.splitlines()
        out = {}
        for line in lines[1:]:
            fields = line.split()
            if len(fields) >= 3:
                out[fields[0]] = fields[2]
        return out


def start_containerd(
    logs: Path, *, namespace: str = "dockerproxy-test", timeout: float = 30.0
) -> Containerd:
    """``containerd --config STATE/config.toml``: root, state, sockets and opt below STATE."""
    state = short_tempdir("dp-containerd-")
    engine = Containerd(state, logs, namespace)
    try:
        config = state / "config.toml"
        config.write_text(CONTAINERD_CONFIG.format(state=state))
        # TMPDIR: where the differ mounts snapshots to apply layers.
        engine.proc = ManagedProcess(
            "containerd",
            [tool("containerd") or "containerd", "--config", str(config)],
            logs,
            env=engine_env(state),
            cwd=state,
        ).start()

        def ready() -> bool:
            if not engine.address.exists():
                return False
            return engine.ctr("version", timeout=10, check=False).returncode == 0

        wait_ready(ready, timeout, "containerd", alive=engine.proc.exit_problem)
    except BaseException:
        engine.stop()
        raise
    return engine


# -- podman ----------------------------------------------------------------------------------


CONTAINERS_CONF = """\
[engine]
tmp_dir = "{state}/libpod"
events_logger = "file"
image_copy_tmp_dir = "{state}/tmp"

[network]
network_config_dir = "{state}/networks"
"""
INSECURE_ACCEPT_ANYTHING = {"default": [{"type": "insecureAcceptAnything"}]}


def mirror_registries_conf(mirrors: Mapping[str, str], insecure: bool = True) -> str:
    """registries.conf text: each registry (prefix = location = name) with one mirror."""
    blocks = []
    for registry, mirror in mirrors.items():
        blocks.append(
            "[[registry]]\n"
            f'prefix = "{registry}"\n'
            f'location = "{registry}"\n\n'
            "[[registry.mirror]]\n"
            f'location = "{mirror}"\n' + ("insecure = true\n" if insecure else "")
        )
    return "\n".join(blocks)


class Podman(Engine):
    """Rootful podman with vfs storage below STATE; call it like the command: ``podman("pull",
    ref)``. There is no daemon: ``stop()`` only cleans up."""

    name = "podman"

    def __call__(
        self, *args: str, debug: bool = False, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> Result:
        state = self.state
        env = engine_env(
            state,
            CONTAINERS_CONF=state / "containers.conf",
            CONTAINERS_REGISTRIES_CONF=state / "registries.conf",
            REGISTRY_AUTH_FILE=state / "auth.json",
            DOCKER_CONFIG=state / "docker-config",
            XDG_CONFIG_HOME=state / "home" / ".config",
            XDG_RUNTIME_DIR=state / "xdg-run",
        )
        argv = [
            tool("podman") or "podman",
            "--root",
            str(state / "root"),
            "--runroot",
            str(state / "run"),
            "--storage-driver",
            "vfs",
            *(["--log-level=debug"] if debug else []),
            *args,
        ]
        return run(argv, env=env, timeout=timeout, check=check)

    def digest(self, image: str) -> str:
        return self("image", "inspect", "--format", "{{.Digest}}", image).stdout.strip()


def make_podman(logs: Path, registries_conf: str = "") -> Podman:
    """A podman whose only configuration is ours: ``registries_conf``, an empty auth file, a
    containers.conf keeping its run-time files in STATE, and an accept-anything policy."""
    state = short_tempdir("dp-podman-")
    engine = Podman(state, logs, PODMAN_FOOTPRINT)
    try:
        (state / "registries.conf").write_text(registries_conf)
        (state / "auth.json").write_text('{"auths": {}}\n')
        (state / "containers.conf").write_text(CONTAINERS_CONF.format(state=state))
        for directory in ("docker-config", "xdg-run", "libpod", "networks"):
            (state / directory).mkdir(mode=0o700)
        # As root, podman prefers $HOME/.config/containers/policy.json to /etc/containers'.
        policy = state / "home" / ".config" / "containers" / "policy.json"
        policy.parent.mkdir(parents=True)
        policy.write_text(json.dumps(INSECURE_ACCEPT_ANYTHING))
    except BaseException:
        with contextlib.suppress(Exception):
            engine.stop()
        raise
    return engine
