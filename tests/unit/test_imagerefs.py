"""Image references and platforms as operators write them, and which index entries are warmed."""

from __future__ import annotations

import pytest

from dockerproxy.imagerefs import (
    BadReference,
    ImageRef,
    Platform,
    chosen_manifests,
    parse_image,
    parse_platform,
    read_list,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "name", "reference"),
    [
        ("alpine", "alpine", "latest"),
        ("alpine:3.20", "alpine", "3.20"),
        ("library/alpine:3.20", "library/alpine", "3.20"),
        ("docker.io/library/nginx:latest", "docker.io/library/nginx", "latest"),
        ("ghcr.io/acme/app:1", "ghcr.io/acme/app", "1"),
        ("localhost:5000/team/app", "localhost:5000/team/app", "latest"),
        ("localhost:5000/team/app:v2", "localhost:5000/team/app", "v2"),
        (f"alpine@{DIGEST}", "alpine", DIGEST),
        (f"alpine:3.20@{DIGEST}", "alpine", DIGEST),
    ],
)
def test_references(text: str, name: str, reference: str) -> None:
    ref = parse_image(text)
    assert ref == ImageRef(name, reference)
    assert ref.is_digest == (reference == DIGEST)


def test_a_reference_prints_as_written() -> None:
    assert str(parse_image("ghcr.io/acme/app:1")) == "ghcr.io/acme/app:1"
    assert str(parse_image(f"alpine@{DIGEST}")) == f"alpine@{DIGEST}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Alpine",
        "alpine:",
        "alpine:-x",
        "a//b",
        "/alpine",
        "alpine@sha256:ab",
        "a b",
        "alpine@md5:" + "0" * 32,
        "../etc:1",
        "x" * 256,
    ],
)
def test_bad_references(text: str) -> None:
    with pytest.raises(BadReference):
        parse_image(text)


def test_platforms() -> None:
    assert parse_platform("linux/amd64") == Platform("linux", "amd64")
    assert parse_platform("Linux/ARM/v7") == Platform("linux", "arm", "v7")
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    for bad in ("linux", "linux/", "linux/arm/v7/x", "linux/a b", "/amd64"):
        with pytest.raises(BadReference):
            parse_platform(bad)


INDEX = {
    "manifests": [
        {"digest": "a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "e"},
        "not an entry",
    ]
}


def digests_of(platforms: list[Platform] | None) -> list[str]:
    return [str(e["digest"]) for e in chosen_manifests(INDEX, platforms)]


def test_chosen_manifests() -> None:
    assert digests_of([Platform("linux", "amd64")]) == ["a"]
    assert digests_of([Platform("linux", "arm")]) == ["b", "c"]  # no variant: any
    assert digests_of([Platform("linux", "arm", "v7"), Platform("linux", "amd64")]) == ["a", "b"]
    assert digests_of([Platform("linux", "s390x")]) == []
    assert digests_of(None) == ["a", "b", "c", "d", "e"]


def test_read_list() -> None:
    lines = ["# images\n", "alpine:3.20\n", "\n", "  ghcr.io/acme/app:1  # the app\n"]
    assert read_list(lines) == ["alpine:3.20", "ghcr.io/acme/app:1"]
