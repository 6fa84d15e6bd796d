"""The life an operator gives a proxy process: it answers, reloads on SIGHUP (systemctl
reload) and exits 0 on SIGTERM (systemctl stop)."""

from __future__ import annotations

import os
import signal

from tests.harness import web
from tests.harness.polling import wait_until
from tests.harness.ports import HOST, wait_http
from tests.harness.procs import ManagedProcess


def answers_reloads_and_stops(proc: ManagedProcess, port: int) -> None:
    """The proxy on C{port} challenges C{/v2/} with its own realm, goes on serving after a
    SIGHUP, and drains and exits 0 on SIGTERM."""
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/", alive=proc.exit_problem)
    ping = web.request("GET", f"{url}/v2/")
    assert ping.status == 401
    assert f'realm="{url}/v2/auth"' in (ping.header("www-authenticate") or "")
    os.kill(proc.pid, signal.SIGHUP)
    reloaded = wait_until(lambda: "reload: configuration applied" in proc.log_text())
    assert reloaded and proc.alive(), proc.log_tail()
    assert web.request("GET", f"{url}/v2/").status == 401
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.proc is not None and proc.proc.wait(10) == 0, proc.log_tail()
