"""The copy-paste texts of the home page, client by client: plain text with the mirror's
address filled in, each one valid in its own format."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from dockerproxy import snippets
from dockerproxy.snippets import (
    PLACEHOLDER_HOST,
    Address,
    MirrorInfo,
    Target,
    address,
    targets,
)

HUB = "https://registry-1.docker.io"
HTTPS = Address("mirror.test:5000", "https")
HTTP = Address("mirror.test:5000", "http")
DOCKER = Target("docker.io", HUB, "")
GHCR = Target("ghcr.io", "https://ghcr.io", "/ghcr.io")
K8S = Target("registry.k8s.io", "https://registry.k8s.io", "/registry.k8s.io")


def info(**overrides) -> MirrorInfo:
    fields = {
        "host": "mirror.test:5000",
        "scheme": "https",
        "default_upstream": HUB,
        "default_registry": "docker.io",
        "routes": {},
        "registries": {"docker.io": HUB, "ghcr.io": "https://ghcr.io"},
    }
    return MirrorInfo(**{**fields, **overrides})


# --------------------------------------------------------------------------- the address


@pytest.mark.parametrize(
    "host", ["mirror.test", "MIRROR.test:443", "127.0.0.1:5000", "[::1]:5000", " mirror.test "]
)
def test_a_host_name_is_kept(host):
    assert address(host, "https") == Address(host.strip(), "https")


@pytest.mark.parametrize(
    "host",
    ["<script>", 'a.test"', "a.test/x", "a.test b", "a" * 256, "", "  ", None, "a.test\nb.test"],
)
def test_anything_else_is_the_placeholder(host):
    assert address(host, "http") == Address(PLACEHOLDER_HOST, "http", is_placeholder=True)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("http", "http"),
        ("HTTP", "http"),
        ("https", "https"),
        ("javascript", "https"),
        ("", "https"),
        (None, "https"),
    ],
)
def test_the_scheme_is_http_or_https(scheme, expected):
    assert address("mirror.test", scheme).url == f"{expected}://mirror.test"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("LOCALHOST", True),
        ("mirror.test", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert snippets.is_loopback(host) is loopback


# --------------------------------------------------------------------------- targets


def test_targets_are_the_default_at_the_root_then_each_registry_under_its_prefix():
    found = targets(
        info(
            registries={
                "docker.io": HUB,
                "ghcr.io": "https://ghcr.io",
                "registry.k8s.io": "https://registry.k8s.io",
            }
        )
    )
    assert found == [DOCKER, GHCR, K8S]
    assert [t.image for t in found] == ["library/alpine:3.20", "owner/image:tag", "pause:3.10"]


def test_without_a_default_every_registry_is_under_its_prefix():
    found = targets(info(default_upstream=None, default_registry=None))
    assert found == [Target("docker.io", HUB, "/docker.io"), GHCR]


def test_a_default_upstream_without_a_registry_name_is_no_target():
    assert targets(info(default_registry=None, registries={})) == []
    assert targets(info(default_upstream=None, default_registry=None, registries={})) == []


# --------------------------------------------------------------------------- docker pull


def test_docker_pull_and_tag():
    assert (
        snippets.docker_pull("m.test", "library/alpine:3.20")
        == "docker pull m.test/library/alpine:3.20\n"
    )
    assert snippets.hub_short_name("library/alpine:3.20") == "alpine:3.20"
    assert snippets.hub_short_name("owner/image:tag") == "owner/image:tag"
    assert (
        snippets.docker_tag("m.test", "library/alpine:3.20", "alpine:3.20")
        == "docker tag m.test/library/alpine:3.20 alpine:3.20\n"
    )


def test_prefixed_pulls_and_tags_leave_out_the_default():
    assert snippets.prefixed_pulls("m.test", [DOCKER, GHCR, K8S]) == (
        "docker pull m.test/ghcr.io/owner/image:tag\n"
        "docker pull m.test/registry.k8s.io/pause:3.10\n"
    )
    assert (
        snippets.prefixed_tags("m.test", [DOCKER, GHCR])
        == "docker tag m.test/ghcr.io/owner/image:tag ghcr.io/owner/image:tag\n"
    )


# --------------------------------------------------------------------------- Docker daemon


def test_daemon_json():
    assert (
        snippets.daemon_json(HTTPS) == '{\n  "registry-mirrors": ["https://mirror.test:5000"]\n}\n'
    )
    assert json.loads(snippets.daemon_json(HTTPS)) == {
        "registry-mirrors": ["https://mirror.test:5000"]
    }


def test_daemon_json_over_http_lists_the_mirror_as_insecure():
    assert json.loads(snippets.daemon_json(HTTP)) == {
        "registry-mirrors": ["http://mirror.test:5000"],
        "insecure-registries": ["mirror.test:5000"],
    }


# --------------------------------------------------------------------------- containerd


def test_hosts_toml():
    text = snippets.hosts_toml(HTTPS, HUB)
    assert text == (
        'server = "https://registry-1.docker.io"\n\n'
        '[host."https://mirror.test:5000"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    assert tomllib.loads(text) == {
        "server": HUB,
        "host": {"https://mirror.test:5000": {"capabilities": ["pull", "resolve"]}},
    }
    assert snippets.hosts_toml_path("ghcr.io") == "/etc/containerd/certs.d/ghcr.io/hosts.toml"


def test_default_hosts_toml_has_no_server():
    assert tomllib.loads(snippets.hosts_toml(HTTP, None)) == {
        "host": {"http://mirror.test:5000": {"capabilities": ["pull", "resolve"]}}
    }


@pytest.mark.parametrize("plugin", [snippets.CONTAINERD_CRI_V2, snippets.CONTAINERD_CRI_V3])
def test_containerd_config(plugin):
    config = tomllib.loads(snippets.containerd_config(plugin))
    assert config == {"plugins": {plugin: {"registry": {"config_path": "/etc/containerd/certs.d"}}}}
    assert snippets.containerd_config() == snippets.containerd_config(snippets.CONTAINERD_CRI_V2)


def test_ctr_pull():
    assert snippets.ctr_pull(K8S) == (
        "sudo ctr images pull --hosts-dir /etc/containerd/certs.d registry.k8s.io/pause:3.10\n"
    )


def test_restart():
    assert snippets.restart("containerd") == "sudo systemctl restart containerd\n"


# --------------------------------------------------------------------------- podman


def test_registries_conf():
    conf = tomllib.loads(snippets.registries_conf(HTTPS, [DOCKER, GHCR]))
    assert conf == {
        "registry": [
            {
                "prefix": "docker.io",
                "location": "docker.io",
                "mirror": [{"location": "mirror.test:5000"}],
            },
            {
                "prefix": "ghcr.io",
                "location": "ghcr.io",
                "mirror": [{"location": "mirror.test:5000/ghcr.io"}],
            },
        ]
    }


def test_registries_conf_over_http_marks_each_mirror_insecure():
    conf = tomllib.loads(snippets.registries_conf(HTTP, [DOCKER, GHCR]))
    assert [r["mirror"] for r in conf["registry"]] == [
        [{"location": "mirror.test:5000", "insecure": True}],
        [{"location": "mirror.test:5000/ghcr.io", "insecure": True}],
    ]


# --------------------------------------------------------------------------- k3s, kind


def test_k3s_registries_yaml():
    assert snippets.k3s_registries_yaml(HTTPS, [DOCKER, GHCR]) == (
        "mirrors:\n"
        "  docker.io:\n"
        "    endpoint:\n"
        '      - "https://mirror.test:5000"\n'
        "  ghcr.io:\n"
        "    endpoint:\n"
        '      - "https://mirror.test:5000"\n'
    )


def test_k3s_yaml_quotes_a_key_yaml_would_misread():
    odd = Target("weird name:1", "https://w.test", "/weird name:1")
    assert '  "weird name:1":\n' in snippets.k3s_registries_yaml(HTTPS, [odd])


def test_kind_script_writes_each_hosts_toml_then_the_cluster_config():
    script = snippets.kind_script(HTTP, [DOCKER, GHCR])
    heredocs = dict(re.findall(r"cat > (\S+) <<'?EOF'?\n(.*?)^EOF\n", script, re.S | re.M))
    assert list(heredocs) == [
        "certs.d/docker.io/hosts.toml",
        "certs.d/ghcr.io/hosts.toml",
        "kind.yaml",
    ]
    assert heredocs["certs.d/ghcr.io/hosts.toml"] == snippets.hosts_toml(HTTP, "https://ghcr.io")
    assert "mkdir -p certs.d/docker.io\n" in script
    assert heredocs["kind.yaml"] == (
        "kind: Cluster\n"
        "apiVersion: kind.x-k8s.io/v1alpha4\n"
        "containerdConfigPatches:\n"
        "  - |-\n"
        '    [plugins."io.containerd.grpc.v1.cri".registry]\n'
        '      config_path = "/etc/containerd/certs.d"\n'
        "nodes:\n"
        "  - role: control-plane\n"
        "    extraMounts:\n"
        "      - hostPath: $PWD/certs.d\n"
        "        containerPath: /etc/containerd/certs.d\n"
    )
    assert script.endswith("EOF\nkind create cluster --config kind.yaml\n")


# --------------------------------------------------------------------------- plain text


def test_snippets_are_plain_text_not_html():
    """Quotes and ampersands stay as they are: escaping is the page's job."""
    weird = Address("m.test", "https")
    text = snippets.hosts_toml(weird, "https://up.test/?a=1&b=<2>")
    assert 'server = "https://up.test/?a=1&b=<2>"' in text
    assert "&quot;" not in snippets.daemon_json(HTTPS)
