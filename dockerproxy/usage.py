"""The usage home page served at ``/``.

It explains how to pull through this mirror and gives copy-paste configuration for Docker,
containerd, podman / CRI-O, k3s and kind, filled in with the address the client used.

Pure functions, no Twisted:

* :func:`pick_language` chooses ``"en"`` or ``"zh"`` (Simplified Chinese) from an explicit
  ``?lang=`` value or the ``Accept-Language`` header;
* :func:`render_usage` returns the page as UTF-8 HTML, self-contained (inline CSS, no scripts,
  fonts, images or links to other hosts).

Everything interpolated into the page is HTML-escaped, and a Host header that does not look
like a host name is replaced by :data:`PLACEHOLDER_HOST` rather than displayed.
"""

# The Simplified Chinese strings use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "PLACEHOLDER_HOST",
    "UsageInfo",
    "pick_language",
    "render_usage",
]

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
PLACEHOLDER_HOST = "mirror.example.com"

_SAFE_HOST = re.compile(r"[A-Za-z0-9.:\-\[\]]{1,255}")
_HTML_LANG = {"en": "en", "zh": "zh-CN"}
_DOCKER_HUB = "docker.io"
_CONTAINERD_CERTS_D = "/etc/containerd/certs.d"
# Example image per registry; anything else gets _GENERIC_IMAGE.
_EXAMPLE_IMAGES = {_DOCKER_HUB: "library/alpine:3.20", "registry.k8s.io": "pause:3.10"}
_GENERIC_IMAGE = "owner/image:tag"


@dataclass(frozen=True)
class UsageInfo:
    """What the page describes. The caller passes the default upstream that applies to the
    Host the page is served for (for a routed Host, that route's upstream)."""

    host: str  # the Host the client used, e.g. "mirror.example.com" or "127.0.0.1:5000"
    scheme: str  # "http" or "https"
    default_upstream: str | None  # e.g. "https://registry-1.docker.io"; None: no default
    default_registry: str | None  # registry name of the default upstream, e.g. "docker.io"
    routes: Mapping[str, str] = field(default_factory=dict)  # Host -> upstream URL
    # registry name -> upstream URL; a path prefix (HOST/ghcr.io/owner/img) and containerd ?ns=
    registries: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- language


def _language_of(tag: str) -> str | None:
    """Map a language tag (en, en-US, zh, zh-CN, zh-Hans, ...) to a supported language."""
    primary = tag.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in LANGUAGES else None


def pick_language(accept_language: str | None, override: str | None) -> str:
    """Return ``"en"`` or ``"zh"``.

    ``override`` (the ``?lang=`` query parameter) wins when it names a supported language;
    otherwise the supported language with the highest q-value in ``Accept-Language`` is
    chosen (the earliest on a tie), and English when there is none.
    """
    if override:
        chosen = _language_of(override)
        if chosen:
            return chosen
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in (accept_language or "").split(","):
        tag, *params = item.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if not 0.0 < q <= 1.0:  # q=0 means "not acceptable"; also rejects nan and junk
            continue
        chosen = _language_of(tag)
        if chosen and q > best_q:
            best, best_q = chosen, q
    return best


# --------------------------------------------------------------------------- strings
# Every value is trusted HTML; {placeholders} are filled with HTML-escaped values by _Ctx.t.

_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Docker registry mirror",
        "intro": (
            "<code>{host}</code> is a pull proxy for container registries: it forwards image "
            "pulls to the upstream registries listed below, so you can pull from them through "
            "this address. It serves pulls only."
        ),
        "placeholder": (
            "This page could not tell which address it was reached at, so the examples use "
            "<code>{placeholder}</code>: replace it with the address of this mirror."
        ),
        "contents": "Contents",
        "language": "Language",
        "pull_title": "Pull through the mirror",
        "pull_intro": "Put <code>{host}</code> in front of the image name:",
        "pull_short": (
            "Official Docker Hub images can also be pulled without <code>library/</code>:"
        ),
        "pull_retag": (
            "Then give the image its usual name, so that Dockerfiles and compose files that "
            "refer to it keep working:"
        ),
        "pull_no_default": (
            "This mirror has no default upstream: always put a registry name after the host "
            "(see below)."
        ),
        "http_hint": (
            "This mirror is served over plain HTTP. Docker talks HTTP only to registries listed "
            'in <code>insecure-registries</code> (see <a href="#docker">Docker</a>; addresses '
            "in 127.0.0.0/8 are allowed by default), and podman needs "
            "<code>--tls-verify=false</code>."
        ),
        "prefix_title": "Other registries",
        "prefix_intro": (
            "For the other configured registries, put the registry name after the host:"
        ),
        "upstreams_title": "Configured upstreams",
        "th_registry": "Registry",
        "th_upstream": "Upstream",
        "th_pull_as": "Pull as",
        "th_host": "Host",
        "default": "default",
        "this_host": "this host",
        "no_upstreams": "No upstream registries are configured.",
        "routes_title": "Host routes",
        "routes_intro": "Requests are also routed by the host name they are sent to:",
        "clients_title": "Use it as a registry mirror",
        "clients_intro": (
            "Instead of changing image names, you can configure your container runtime to pull "
            "through this mirror automatically. Pick the client you use:"
        ),
        "clients_none": (
            "There is nothing to mirror: this mirror has neither a default upstream nor "
            "registries configured."
        ),
        "docker_intro": (
            "Docker uses mirrors for Docker Hub images only. Add this mirror to "
            "<code>/etc/docker/daemon.json</code> (merge it with what is already there), then "
            "restart Docker:"
        ),
        "docker_insecure": (
            "The mirror is plain HTTP, so it is listed under <code>insecure-registries</code> "
            "as well."
        ),
        "docker_verify": (
            "<code>docker info</code> then lists it under <em>Registry Mirrors</em>; Docker "
            "falls back to Docker Hub when the mirror fails. On Docker Desktop, paste the same "
            "JSON into Settings → Docker Engine."
        ),
        "docker_not_hub": (
            "Docker sends only Docker Hub images to a mirror, without naming the registry; that "
            "needs Docker Hub as the mirror's default upstream, which is not the case here. Pull "
            'with the host prefix instead (see <a href="#pull">above</a>).'
        ),
        "containerd_intro": (
            "containerd (used by Kubernetes through CRI, and by nerdctl) reads one "
            "<code>hosts.toml</code> per registry from the directory set by "
            "<code>config_path</code>. Create one for each registry:"
        ),
        "containerd_ns": (
            "containerd tells the mirror which registry it wants (the <code>?ns=</code> query "
            "parameter), so one mirror address serves every registry. When the mirror fails, "
            "containerd falls back to <code>server</code>."
        ),
        "containerd_default": (
            "Optionally, <code>_default</code> sends every other registry to the mirror first "
            "too; those the mirror does not know fall back to the registry itself:"
        ),
        "containerd_config": (
            "Then point the CRI plugin at that directory in "
            "<code>/etc/containerd/config.toml</code> and restart containerd (edits to the "
            "<code>hosts.toml</code> files themselves need no restart):"
        ),
        "containerd_v3": "With containerd 2.x (config <code>version = 3</code>) the section is:",
        "containerd_verify": "Try it:",
        "podman_intro": (
            "Podman, Buildah, Skopeo and CRI-O read mirrors from "
            "<code>/etc/containers/registries.conf</code> (rootless podman also reads "
            "<code>~/.config/containers/registries.conf</code>). Add:"
        ),
        "podman_note": (
            "Mirrors are tried in order, then <code>location</code> when they fail. Podman "
            "needs no restart; restart CRI-O with <code>sudo systemctl restart crio</code>."
        ),
        "k3s_intro": (
            "k3s configures its embedded containerd from "
            "<code>/etc/rancher/k3s/registries.yaml</code> (RKE2: "
            "<code>/etc/rancher/rke2/registries.yaml</code>). Create it on every node, then "
            "restart k3s (<code>k3s-agent</code> on agent nodes):"
        ),
        "kind_intro": (
            "kind nodes run their own containerd. Write the <code>hosts.toml</code> files into a "
            "local directory, mount it into the nodes and enable <code>config_path</code> with "
            "<code>containerdConfigPatches</code>. In a multi-node cluster, give every node the "
            "same <code>extraMounts</code>."
        ),
        "kind_loopback": (
            "kind nodes are containers: <code>{host}</code> must be reachable from inside them, "
            "so use this machine's network address instead of localhost / 127.0.0.1."
        ),
        "footer": "Served by dockerproxy.",
    },
    "zh": {
        "title": "Docker 镜像加速",
        "intro": (
            "<code>{host}</code> 是容器镜像仓库的拉取代理：它把镜像拉取请求转发到下面列出的上游"
            "仓库，让你通过这个地址从这些仓库拉取镜像。仅支持拉取。"
        ),
        "placeholder": (
            "本页面无法确定自己的访问地址，因此示例中使用 <code>{placeholder}</code>，"
            "请替换为本镜像站的地址。"
        ),
        "contents": "目录",
        "language": "语言",
        "pull_title": "通过镜像站拉取",
        "pull_intro": "在镜像名前加上 <code>{host}</code>：",
        "pull_short": "Docker Hub 官方镜像也可以省略 <code>library/</code>：",
        "pull_retag": (
            "然后把镜像重新标记为原来的名称，引用它的 Dockerfile 和 compose 文件就无需修改："
        ),
        "pull_no_default": "本镜像站没有默认上游：请始终在主机名后加上仓库名（见下文）。",
        "http_hint": (
            "本镜像站使用明文 HTTP。Docker 只通过 HTTP 访问 <code>insecure-registries</code> "
            '中列出的仓库（见 <a href="#docker">Docker</a>；127.0.0.0/8 的地址默认允许），'
            "podman 需要加上 <code>--tls-verify=false</code>。"
        ),
        "prefix_title": "其他仓库",
        "prefix_intro": "拉取其他已配置仓库的镜像时，在主机名后加上仓库名：",
        "upstreams_title": "已配置的上游",
        "th_registry": "仓库",
        "th_upstream": "上游地址",
        "th_pull_as": "拉取方式",
        "th_host": "主机名",
        "default": "默认",
        "this_host": "当前主机",
        "no_upstreams": "未配置上游仓库。",
        "routes_title": "按主机名路由",
        "routes_intro": "请求还会按其访问的主机名路由：",
        "clients_title": "配置为镜像加速器",
        "clients_intro": (
            "也可以不修改镜像名，而是让容器运行时自动通过本镜像站拉取。选择你使用的客户端："
        ),
        "clients_none": "没有可加速的仓库：本镜像站既没有默认上游，也没有配置仓库。",
        "docker_intro": (
            "Docker 只对 Docker Hub 的镜像使用镜像加速器。把本镜像站加入 "
            "<code>/etc/docker/daemon.json</code>（与已有内容合并），然后重启 Docker："
        ),
        "docker_insecure": (
            "由于本镜像站使用明文 HTTP，它同时列在 <code>insecure-registries</code> 中。"
        ),
        "docker_verify": (
            "之后 <code>docker info</code> 会在 <em>Registry Mirrors</em> 下列出它；镜像站出错时 "
            "Docker 会回退到 Docker Hub。Docker Desktop 用户请把同样的 JSON 粘贴到"
            "“设置 → Docker Engine”中。"
        ),
        "docker_not_hub": (
            "Docker 只把 Docker Hub 的镜像发往镜像加速器，且请求中不带仓库名；这要求镜像站的默认"
            '上游是 Docker Hub，而本镜像站并非如此。请改用主机名前缀的方式拉取（见<a href="#pull">'
            "上文</a>）。"
        ),
        "containerd_intro": (
            "containerd（Kubernetes 通过 CRI 使用它，nerdctl 也是）从 <code>config_path</code> "
            "指定的目录中为每个仓库读取一个 <code>hosts.toml</code>。为每个仓库各创建一个："
        ),
        "containerd_ns": (
            "containerd 会通过 <code>?ns=</code> 查询参数告诉镜像站要访问哪个仓库，因此一个镜像站"
            "地址即可服务所有仓库。镜像站出错时，containerd 会回退到 <code>server</code>。"
        ),
        "containerd_default": (
            "可选：<code>_default</code> 让其他所有仓库也先尝试本镜像站；镜像站不认识的仓库会回退"
            "到仓库本身："
        ),
        "containerd_config": (
            "然后在 <code>/etc/containerd/config.toml</code> 中让 CRI 插件使用该目录，并重启 "
            "containerd（之后修改 <code>hosts.toml</code> 无需重启）："
        ),
        "containerd_v3": "containerd 2.x（配置文件 <code>version = 3</code>）中该配置段为：",
        "containerd_verify": "试一下：",
        "podman_intro": (
            "Podman、Buildah、Skopeo 和 CRI-O 从 <code>/etc/containers/registries.conf</code> "
            "读取镜像配置（rootless podman 还会读取 "
            "<code>~/.config/containers/registries.conf</code>）。添加："
        ),
        "podman_note": (
            "拉取时依次尝试各个 mirror，都失败后再使用 <code>location</code>。podman 无需重启；"
            "CRI-O 需执行 <code>sudo systemctl restart crio</code>。"
        ),
        "k3s_intro": (
            "k3s 根据 <code>/etc/rancher/k3s/registries.yaml</code> 配置其内置的 containerd"
            "（RKE2 为 <code>/etc/rancher/rke2/registries.yaml</code>）。在每个节点上创建该文件，"
            "然后重启 k3s（agent 节点上为 <code>k3s-agent</code>）："
        ),
        "kind_intro": (
            "kind 的每个节点运行各自的 containerd。把 <code>hosts.toml</code> 文件写入本地目录，"
            "挂载到节点中，并通过 <code>containerdConfigPatches</code> 启用 "
            "<code>config_path</code>。多节点集群中，每个节点都需要同样的 "
            "<code>extraMounts</code>。"
        ),
        "kind_loopback": (
            "kind 的节点是容器：必须能从节点内部访问 <code>{host}</code>，"
            "请使用本机的网络地址，而不是 localhost / 127.0.0.1。"
        ),
        "footer": "由 dockerproxy 提供服务。",
    },
}


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class _Target:
    """A registry this host can mirror."""

    registry: str  # e.g. "docker.io"
    upstream: str  # upstream URL
    path: str  # where it is served on this host: "" (the default) or "/ghcr.io"

    @property
    def image(self) -> str:
        return _EXAMPLE_IMAGES.get(self.registry, _GENERIC_IMAGE)


class _Ctx:
    """Everything a section needs: the sanitised address, the language and the targets."""

    def __init__(self, info: UsageInfo, lang: str) -> None:
        self.info = info
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        host = info.host.strip() if info.host else ""
        self.host_is_placeholder = not _SAFE_HOST.fullmatch(host)
        self.host = PLACEHOLDER_HOST if self.host_is_placeholder else host
        self.scheme = "http" if (info.scheme or "").lower() == "http" else "https"
        self.url = f"{self.scheme}://{self.host}"
        self.default_is_hub = bool(info.default_upstream) and info.default_registry == _DOCKER_HUB
        self.targets = _targets(info)

    def t(self, key: str, **values: str) -> str:
        """The translated HTML string ``key`` with ``values`` escaped and filled in."""
        text = _STRINGS[self.lang][key]
        if not values:
            return text
        return text.format(**{name: html.escape(value) for name, value in values.items()})


def _targets(info: UsageInfo) -> list[_Target]:
    targets = []
    if info.default_upstream and info.default_registry:
        targets.append(_Target(info.default_registry, info.default_upstream, ""))
    for name, upstream in info.registries.items():
        if name != info.default_registry:
            targets.append(_Target(name, upstream, "/" + name))
    return targets


# --------------------------------------------------------------------------- html helpers


def _code(text: str) -> str:
    return f"<pre><code>{html.escape(text)}</code></pre>"


def _file(path: str, text: str) -> str:
    """A code block with the file it belongs in as its caption."""
    return f"<figure><figcaption>{html.escape(path)}</figcaption>{_code(text)}</figure>"


def _p(inner_html: str, cls: str = "") -> str:
    return f'<p class="{cls}">{inner_html}</p>' if cls else f"<p>{inner_html}</p>"


def _section(anchor: str, title: str, parts: list[str], level: int = 2) -> str:
    body = "\n".join(parts)
    return f'<section id="{anchor}">\n<h{level}>{title}</h{level}>\n{body}\n</section>'


# --------------------------------------------------------------------------- config texts
# Plain text, the same in every language; escaped as a whole by _code.


def _hosts_toml(ctx: _Ctx, target: _Target | None) -> str:
    """containerd hosts.toml for ``target`` (None: the _default namespace, no server)."""
    lines = []
    if target is not None:
        lines += [f'server = "{target.upstream}"', ""]
    lines += [f'[host."{ctx.url}"]', '  capabilities = ["pull", "resolve"]']
    return "\n".join(lines) + "\n"


def _yaml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", name) else f'"{name}"'


def _daemon_json(ctx: _Ctx) -> str:
    lines = ["{", f'  "registry-mirrors": ["{ctx.url}"]']
    if ctx.scheme == "http":
        lines[-1] += ","
        lines.append(f'  "insecure-registries": ["{ctx.host}"]')
    return "\n".join([*lines, "}"]) + "\n"


def _registries_conf(ctx: _Ctx) -> str:
    blocks = []
    for target in ctx.targets:
        block = [
            "[[registry]]",
            f'prefix = "{target.registry}"',
            f'location = "{target.registry}"',
            "",
            "[[registry.mirror]]",
            f'location = "{ctx.host}{target.path}"',
        ]
        if ctx.scheme == "http":
            block.append("insecure = true")
        blocks.append("\n".join(block))
    return "\n\n".join(blocks) + "\n"


def _k3s_registries_yaml(ctx: _Ctx) -> str:
    lines = ["mirrors:"]
    for target in ctx.targets:
        lines += [f"  {_yaml_key(target.registry)}:", "    endpoint:", f'      - "{ctx.url}"']
    return "\n".join(lines) + "\n"


def _kind_script(ctx: _Ctx) -> str:
    lines = []
    for target in ctx.targets:
        directory = f"certs.d/{target.registry}"
        lines += [
            f"mkdir -p {directory}",
            f"cat > {directory}/hosts.toml <<'EOF'",
            _hosts_toml(ctx, target) + "EOF",
            "",
        ]
    lines += [
        "cat > kind.yaml <<EOF",
        "kind: Cluster",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        "containerdConfigPatches:",
        "  - |-",
        '    [plugins."io.containerd.grpc.v1.cri".registry]',
        f'      config_path = "{_CONTAINERD_CERTS_D}"',
        "nodes:",
        "  - role: control-plane",
        "    extraMounts:",
        "      - hostPath: $PWD/certs.d",
        f"        containerPath: {_CONTAINERD_CERTS_D}",
        "EOF",
        "kind create cluster --config kind.yaml",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sections


def _header(ctx: _Ctx) -> str:
    links = []
    for code, label in (("en", "English"), ("zh", "中文")):
        current = ' aria-current="true"' if code == ctx.lang else ""
        links.append(
            f'<a href="?lang={code}" hreflang="{_HTML_LANG[code]}" lang="{_HTML_LANG[code]}"'
            f"{current}>{label}</a>"
        )
    switch = f'<nav class="lang" aria-label="{ctx.t("language")}">{" · ".join(links)}</nav>'
    parts = [
        f'<header>\n<div class="top"><h1>{ctx.t("title")}</h1>{switch}</div>',
        _p(ctx.t("intro", host=ctx.host)),
    ]
    if ctx.host_is_placeholder:
        parts.append(_p(ctx.t("placeholder", placeholder=PLACEHOLDER_HOST), "note"))
    return "\n".join(parts) + "\n</header>"


def _contents(ctx: _Ctx, entries: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{anchor}">{title}</a></li>' for anchor, title in entries)
    return f'<nav class="toc" aria-label="{ctx.t("contents")}"><ul>{items}</ul></nav>'


def _pull_section(ctx: _Ctx) -> str:
    info, host = ctx.info, ctx.host
    parts = []
    if info.default_upstream:
        registry = info.default_registry
        image = _EXAMPLE_IMAGES.get(registry or "", _GENERIC_IMAGE)
        parts += [_p(ctx.t("pull_intro", host=host)), _code(f"docker pull {host}/{image}\n")]
        if ctx.default_is_hub:
            short = image.removeprefix("library/")
            parts += [_p(ctx.t("pull_short")), _code(f"docker pull {host}/{short}\n")]
            parts += [_p(ctx.t("pull_retag")), _code(f"docker tag {host}/{image} {short}\n")]
        elif registry:
            parts += [
                _p(ctx.t("pull_retag")),
                _code(f"docker tag {host}/{image} {registry}/{image}\n"),
            ]
    else:
        parts.append(_p(ctx.t("pull_no_default")))
    if ctx.scheme == "http":
        parts.append(_p(ctx.t("http_hint"), "note"))
    return _section("pull", ctx.t("pull_title"), parts)


def _prefix_section(ctx: _Ctx) -> str:
    host = ctx.host
    pulls, tags = [], []
    for target in ctx.targets:
        if target.path:
            pulls.append(f"docker pull {host}{target.path}/{target.image}")
            tags.append(
                f"docker tag {host}{target.path}/{target.image} {target.registry}/{target.image}"
            )
    parts = [
        _p(ctx.t("prefix_intro")),
        _code("\n".join(pulls) + "\n"),
        _p(ctx.t("pull_retag")),
        _code("\n".join(tags) + "\n"),
    ]
    return _section("registries", ctx.t("prefix_title"), parts)


def _cell_code(text: str) -> str:
    """Escaped ``text`` as code, preferring to wrap after a path's slashes (not inside ://)."""
    return "<code>" + re.sub(r"(?<!/)/(?!/)", "/<wbr>", html.escape(text)) + "</code>"


def _badge(text: str) -> str:
    return f' <span class="badge">{text}</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A table; on narrow screens each row is stacked, labelled by data-label (see _CSS)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    labels = [html.escape(h) for h in headers]
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{label}"><span>{c}</span></td>'
            for label, c in zip(labels, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="table"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _upstreams_section(ctx: _Ctx) -> str:
    info, c = ctx.info, _cell_code
    rows = []
    if info.default_upstream:
        name = info.default_registry or "—"
        pull_as = [f"{ctx.host}/…"]
        if info.default_registry in info.registries:
            pull_as.append(f"{ctx.host}/{info.default_registry}/…")
        rows.append(
            [
                c(name) + _badge(ctx.t("default")),
                c(info.default_upstream),
                "<br>".join(c(p) for p in pull_as),
            ]
        )
    for name, upstream in info.registries.items():
        if info.default_upstream and name == info.default_registry:
            continue
        rows.append([c(name), c(upstream), c(f"{ctx.host}/{name}/…")])
    headers = [ctx.t("th_registry"), ctx.t("th_upstream"), ctx.t("th_pull_as")]
    parts = [_table(headers, rows) if rows else _p(ctx.t("no_upstreams"))]
    if info.routes:
        route_rows = []
        for route_host, upstream in info.routes.items():
            mark = _badge(ctx.t("this_host")) if route_host.lower() == ctx.host.lower() else ""
            route_rows.append([c(route_host) + mark, c(upstream)])
        parts += [
            f'<h3 id="routes">{ctx.t("routes_title")}</h3>',
            _p(ctx.t("routes_intro")),
            _table([ctx.t("th_host"), ctx.t("th_upstream")], route_rows),
        ]
    return _section("upstreams", ctx.t("upstreams_title"), parts)


def _docker_section(ctx: _Ctx) -> str:
    if not ctx.default_is_hub:
        return _section("docker", "Docker", [_p(ctx.t("docker_not_hub"), "note")], 3)
    parts = [
        _p(ctx.t("docker_intro")),
        _file("/etc/docker/daemon.json", _daemon_json(ctx)),
        _code("sudo systemctl restart docker\n"),
    ]
    if ctx.scheme == "http":
        parts.append(_p(ctx.t("docker_insecure")))
    parts.append(_p(ctx.t("docker_verify")))
    return _section("docker", "Docker", parts, 3)


def _containerd_section(ctx: _Ctx) -> str:
    parts = [_p(ctx.t("containerd_intro"))]
    for target in ctx.targets:
        path = f"{_CONTAINERD_CERTS_D}/{target.registry}/hosts.toml"
        parts.append(_file(path, _hosts_toml(ctx, target)))
    parts += [
        _p(ctx.t("containerd_ns")),
        _p(ctx.t("containerd_default")),
        _file(f"{_CONTAINERD_CERTS_D}/_default/hosts.toml", _hosts_toml(ctx, None)),
        _p(ctx.t("containerd_config")),
        _file(
            "/etc/containerd/config.toml",
            '[plugins."io.containerd.grpc.v1.cri".registry]\n'
            f'  config_path = "{_CONTAINERD_CERTS_D}"\n',
        ),
        _code("sudo systemctl restart containerd\n"),
        _p(ctx.t("containerd_v3")),
        _code(
            '[plugins."io.containerd.cri.v1.images".registry]\n'
            f'  config_path = "{_CONTAINERD_CERTS_D}"\n'
        ),
        _p(ctx.t("containerd_verify")),
        _code(
            f"sudo ctr images pull --hosts-dir {_CONTAINERD_CERTS_D} "
            f"{ctx.targets[0].registry}/{ctx.targets[0].image}\n"
        ),
    ]
    return _section("containerd", "containerd", parts, 3)


def _podman_section(ctx: _Ctx) -> str:
    parts = [
        _p(ctx.t("podman_intro")),
        _file("/etc/containers/registries.conf", _registries_conf(ctx)),
        _p(ctx.t("podman_note")),
    ]
    return _section("podman", "Podman / CRI-O", parts, 3)


def _k3s_section(ctx: _Ctx) -> str:
    parts = [
        _p(ctx.t("k3s_intro")),
        _file("/etc/rancher/k3s/registries.yaml", _k3s_registries_yaml(ctx)),
        _code("sudo systemctl restart k3s\n"),
    ]
    return _section("k3s", "k3s", parts, 3)


def _is_loopback(host: str) -> bool:
    name = host.lower()
    return name.startswith(("localhost", "127.", "[::1]")) or name == "::1"


def _kind_section(ctx: _Ctx) -> str:
    parts = [_p(ctx.t("kind_intro"))]
    if _is_loopback(ctx.host):
        parts.append(_p(ctx.t("kind_loopback", host=ctx.host), "note"))
    parts.append(_code(_kind_script(ctx)))
    return _section("kind", "kind", parts, 3)


_CLIENTS: list[tuple[str, str, Callable[[_Ctx], str]]] = [
    ("docker", "Docker", _docker_section),
    ("containerd", "containerd", _containerd_section),
    ("podman", "Podman / CRI-O", _podman_section),
    ("k3s", "k3s", _k3s_section),
    ("kind", "kind", _kind_section),
]


def _clients_section(ctx: _Ctx) -> str:
    if not ctx.targets:
        return _section("clients", ctx.t("clients_title"), [_p(ctx.t("clients_none"))])
    parts = [_p(ctx.t("clients_intro"))]
    parts += [render(ctx) for _, _, render in _CLIENTS]
    return _section("clients", ctx.t("clients_title"), parts)


# --------------------------------------------------------------------------- page

_CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;
--code:#f6f8fa;--link:#0969da;--note:#fff8c5;--note-line:#d4a72c}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;
--line:#3d444d;--code:#161b22;--link:#4493f8;--note:#272115;--note-line:#9e6a03}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.6 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue","Noto Sans","PingFang SC","Hiragino Sans GB",
"Microsoft YaHei","Noto Sans CJK SC",sans-serif}
main{max-width:52rem;margin:0 auto;padding:1rem 1rem 2rem}
a{color:var(--link)}
h1{font-size:1.6rem;line-height:1.25;margin:.5rem 0}
h2{font-size:1.3rem;line-height:1.3;margin:2.25rem 0 .75rem;padding-bottom:.3rem;
border-bottom:1px solid var(--line)}
h3{font-size:1.1rem;margin:1.75rem 0 .5rem}
.top{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;
gap:.25rem 1rem}
.lang{white-space:nowrap}
.lang a[aria-current]{color:var(--fg);font-weight:600;text-decoration:none}
.toc ul{display:flex;flex-wrap:wrap;gap:.25rem 1.25rem;margin:1rem 0;padding:0;list-style:none}
code,pre{font-family:ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",
monospace;font-size:.875rem}
:not(pre)>code{background:var(--code);padding:.1em .35em;border-radius:4px;
overflow-wrap:anywhere}
pre{background:var(--code);border:1px solid var(--line);border-radius:6px;margin:.5rem 0 1rem;
padding:.75rem 1rem;overflow-x:auto;line-height:1.45;-webkit-overflow-scrolling:touch}
figure{margin:.75rem 0 1rem}
figcaption{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem;
color:var(--muted);overflow-wrap:anywhere}
figure pre{margin-top:.25rem}
.note{background:var(--note);border-left:4px solid var(--note-line);border-radius:4px;
padding:.5rem .75rem}
.table{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.4rem .6rem;border-bottom:1px solid var(--line)}
th{font-weight:600;white-space:nowrap}
@media (max-width:40rem){
.table thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
.table tr{display:block;padding:.4rem 0;border-bottom:1px solid var(--line)}
.table td{display:grid;grid-template-columns:minmax(5rem,30%) 1fr;gap:.75rem;padding:.1rem 0;
border:0}
.table td::before{content:attr(data-label);color:var(--muted);font-size:.875rem}}
.badge{display:inline-block;font-size:.75rem;line-height:1.4;padding:0 .45rem;
border:1px solid var(--line);border-radius:999px;color:var(--muted);white-space:nowrap}
footer{color:var(--muted);font-size:.875rem;margin-top:3rem;border-top:1px solid var(--line);
padding-top:.75rem}
"""


def render_usage(info: UsageInfo, lang: str) -> bytes:
    """The usage page for ``info`` in ``lang`` ("en" or "zh"), as UTF-8 HTML."""
    ctx = _Ctx(info, lang)
    sections = [("pull", ctx.t("pull_title"), _pull_section)]
    if any(target.path for target in ctx.targets):
        sections.append(("registries", ctx.t("prefix_title"), _prefix_section))
    sections += [
        ("upstreams", ctx.t("upstreams_title"), _upstreams_section),
        ("clients", ctx.t("clients_title"), _clients_section),
    ]
    toc = [(anchor, title) for anchor, title, _ in sections]
    if ctx.targets:
        toc += [(anchor, title) for anchor, title, _ in _CLIENTS]
    page = "\n".join(
        [
            "<!doctype html>",
            f'<html lang="{_HTML_LANG[ctx.lang]}">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="color-scheme" content="light dark">',
            f"<title>{html.escape(ctx.host)} · {ctx.t('title')}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<main>",
            _header(ctx),
            _contents(ctx, toc),
            *(render(ctx) for _, _, render in sections),
            f"<footer>{ctx.t('footer')}</footer>",
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )
    return page.encode("utf-8")
