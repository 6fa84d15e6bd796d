"""The servers a benchmark puts in front of the registry or beside dockerproxy: nginx
(the reference) and dockerproxy itself, started with twistd, and its JSON access log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from processes import VENV_BIN, Proc, Procs, free_port, wait_http

# -- nginx ----------------------------------------------------------------------------------

NGINX_CONF = """\
# {comment}
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

{http}
}}
"""


def start_nginx(
    procs: Procs,
    work: Path,
    name: str,
    http: Callable[[int], str],
    workers: str = "1",
    comment: str = "",
) -> tuple[Proc, int]:
    """nginx with everything under C{work/name}; C{http(port)} is its http block's body."""
    d = work / name
    (d / "tmp").mkdir(parents=True)
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            comment=comment,
            workers=workers,
            dir=d,
            http=http(port),
            # As root, nginx's workers would run as "nobody"; keep them as the current user.
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    proc = procs.start(
        Proc(name, ["nginx", "-p", d, "-e", d / "error.log", "-c", conf, "-g", "daemon off;"], work)
    )
    wait_http(port, "/v2/", proc)
    return proc, port


# -- dockerproxy ----------------------------------------------------------------------------


def start_proxy(
    procs: Procs,
    work: Path,
    upstream_port: int,
    bench_args: argparse.Namespace,
    options: Sequence[str],
    code_module: str = "dockerproxy.relay",
    name: str = "dockerproxy",
) -> tuple[Proc, int]:
    """twistd dockerproxy on a free port in front of C{upstream_port}, with C{options}.

    The bench's C{--proxy-arg}s follow C{options} and its C{--proxy-env}s are set. With
    C{--proxy-src}, the package is imported from that tree; C{code_module} is the module
    whose file is printed (and checked to come from it).
    """
    src: Path | None = bench_args.proxy_src
    port = free_port()
    env = dict(os.environ)
    env.pop("DOCKERPROXY_CONFIG", None)
    for item in bench_args.proxy_env:
        key, _, value = item.partition("=")
        env[key] = value
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    argv = [
        VENV_BIN / "twistd",
        "-n",
        "--pidfile=",
        "dockerproxy",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
        "--no-library-prefix",
        *options,
        *bench_args.proxy_arg,
    ]
    code_file = imported_file(env, work, code_module)
    if src is not None and not Path(code_file).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"--proxy-src {src}: the proxy would import {code_file}")
    print(f"dockerproxy {code_module.rpartition('.')[2]} code: {code_file}", flush=True)
    # cwd=work: twistd must not pick anything up from the current directory.
    proc = procs.start(Proc(name, argv, work, env=env, cwd=work))
    wait_http(port, "/v2/", proc)
    return proc, port


def start_caching_proxy(
    procs: Procs,
    work: Path,
    upstream_port: int,
    bench_args: argparse.Namespace,
    cache_dir: Path,
    max_size_mib: int,
) -> tuple[Proc, int]:
    """dockerproxy with its cache in C{cache_dir}, and a JSON log to tell hits from misses."""
    options = [
        "--cache-dir",
        str(cache_dir),
        "--cache-max-size",
        f"{max_size_mib}MiB",
        "--log-format",
        "json",
    ]
    return start_proxy(
        procs, work, upstream_port, bench_args, options, code_module="dockerproxy.cache.blobs"
    )


def imported_file(env: dict[str, str], cwd: Path, module: str) -> str:
    """The file of C{module} the proxy's interpreter imports with this environment."""
    out = subprocess.run(
        [VENV_BIN / "python", "-c", f"import {module} as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
    )
    return out.stdout.strip()


def access_events(proxy: Proc, path: str) -> list[dict[str, object]]:
    """The proxy's JSON access-log events for GETs of C{path}, oldest first."""
    events = []
    for line in proxy.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            event.get("log_namespace") == "dockerproxy.access"
            and event.get("path") == path
            and event.get("method") == "GET"
        ):
            events.append(event)
    return events
