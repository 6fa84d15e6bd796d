"""Repository names, digests, references and the /v2/ API path parser."""

from __future__ import annotations

import pytest

from dockerproxy import errors
from dockerproxy.digests import parse
from dockerproxy.names import (
    MAX_NAME_LENGTH,
    ApiPath,
    is_valid_digest,
    is_valid_name,
    is_valid_reference,
    parse_api_path,
)

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8
SHA384 = "sha384:" + "0123456789abcdef" * 6


def api_error(path: str) -> errors.RegistryError:
    with pytest.raises(errors.RegistryError) as caught:
        parse_api_path(path)
    return caught.value


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "alpine",
        "library/alpine",
        "a/b/c",
        "foo-bar__baz.x",
        "a--b",
        "0/1/2",
        "ghcr.io/owner/repo",
        "a_b/c.d/e-f",
    ],
)
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Library/alpine",
        "library/Alpine",
        "/library/alpine",
        "library/alpine/",
        "-alpine",
        ".alpine",
        "_alpine",
        "alpine-",
        "library//alpine",
        "library/../alpine",
        "..",
        "library/./alpine",
        "a___b",
        "a..b",
        "a._b",
        "library%2falpine",
        "library/alp%69ne",
        "library alpine",
        "library\\alpine",
        "library/alpine:latest",
        "läbrary/alpine",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)


def test_name_length_limit_is_inclusive() -> None:
    at_limit = "a/" * ((MAX_NAME_LENGTH - 1) // 2) + "a"
    assert len(at_limit) == MAX_NAME_LENGTH
    assert is_valid_name(at_limit)
    assert not is_valid_name(at_limit + "b")


def test_over_long_single_component_is_invalid() -> None:
    assert not is_valid_name("a" * (MAX_NAME_LENGTH + 1))


# --------------------------------------------------------------------------- digests


@pytest.mark.parametrize(
    "digest",
    [
        SHA256,
        SHA384,
        SHA512,
        # Algorithms the proxy does not know: only the grammar is checked.
        "blake3:" + "A" * 10,
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
        "x.y_z-w:abc=",
    ],
)
def test_valid_digests(digest: str) -> None:
    assert is_valid_digest(digest)


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256",
        "sha256:",
        ":" + "a" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha256:" + "a" * 128,
        "sha512:" + "a" * 64,
        "sha512:" + "a" * 127,
        "sha512:" + "F" * 128,
        "sha384:" + "a" * 64,
        "sha384:" + "a" * 95,
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 63 + "/",
        "sha256:" + "a" * 63 + "%",
        "-sha:abc",
        "sha256::" + "a" * 64,
    ],
)
def test_invalid_digests(digest: str) -> None:
    assert not is_valid_digest(digest)


@pytest.mark.parametrize("reference", ["latest", "3.20", "v1_2-rc.3", "_x", "A" * 128, SHA256])
def test_valid_references(reference: str) -> None:
    assert is_valid_reference(reference)


@pytest.mark.parametrize("reference", ["", "-latest", ".hidden", "A" * 129, "a:", "la test"])
def test_invalid_references(reference: str) -> None:
    assert not is_valid_reference(reference)


# --------------------------------------------------------------------------- parse_api_path


def test_manifest_by_tag() -> None:
    assert parse_api_path("/v2/library/alpine/manifests/3.20") == ApiPath(
        "library/alpine", "manifests", "3.20"
    )


def test_manifest_by_digest() -> None:
    assert parse_api_path(f"/v2/alpine/manifests/{SHA256}") == ApiPath(
        "alpine", "manifests", SHA256, parse(SHA256)
    )


def test_blob() -> None:
    assert parse_api_path(f"/v2/a/b/c/blobs/{SHA512}") == ApiPath(
        "a/b/c", "blobs", SHA512, parse(SHA512)
    )


def test_a_digest_of_another_algorithm_is_a_reference_without_a_digest() -> None:
    """The grammar accepts it (it is relayed); only known algorithms become a Digest."""
    reference = "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46"
    api = parse_api_path(f"/v2/alpine/manifests/{reference}")
    assert (api.reference, api.digest) == (reference, None)
    assert parse_api_path("/v2/alpine/manifests/latest").digest is None
    assert parse_api_path(f"/v2/alpine/blobs/{SHA384}").digest == parse(SHA384)


def test_tags_list() -> None:
    assert parse_api_path("/v2/library/alpine/tags/list") == ApiPath("library/alpine", "tags")


def test_referrers() -> None:
    """OCI 1.1: the referrers of a manifest, named by its digest."""
    assert parse_api_path(f"/v2/library/alpine/referrers/{SHA256}") == ApiPath(
        "library/alpine", "referrers", SHA256, parse(SHA256)
    )
    assert parse_api_path(f"/v2/a/referrers/b/referrers/{SHA512}") == ApiPath(
        "a/referrers/b", "referrers", SHA512, parse(SHA512)
    )


@pytest.mark.parametrize(
    "reference",
    ["latest", "sha256:" + "a" * 63, "sha256:" + "A" * 64, "..", "sha256%3A" + "a" * 64],
)
def test_bad_referrers_digests_are_digest_invalid(reference: str) -> None:
    error = api_error(f"/v2/alpine/referrers/{reference}")
    assert (error.status, error.code) == (400, "DIGEST_INVALID")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/alpine/blobs/uploads",
        "/v2/alpine/blobs/uploads/",
        "/v2/alpine/blobs/uploads/0b1f-uuid",
        "/v2/a/b/blobs/uploads/uuid/extra",
    ],
)
def test_uploads(path: str) -> None:
    api = parse_api_path(path)
    assert api.kind == "uploads"
    assert api.reference is None


def test_uploads_name() -> None:
    assert parse_api_path("/v2/a/b/blobs/uploads/x").name == "a/b"


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/_catalog/"])
def test_catalog_is_unsupported(path: str) -> None:
    error = api_error(path)
    assert (error.status, error.code) == (405, "UNSUPPORTED")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/manifests/manifests/latest", ApiPath("manifests", "manifests", "latest")),
        ("/v2/a/manifests/b/manifests/latest", ApiPath("a/manifests/b", "manifests", "latest")),
        ("/v2/blobs/tags/list", ApiPath("blobs", "tags")),
        ("/v2/tags/list/tags/list", ApiPath("tags/list", "tags")),
        (f"/v2/x/blobs/y/blobs/{SHA256}", ApiPath("x/blobs/y", "blobs", SHA256, parse(SHA256))),
        ("/v2/org/manifests/manifests/v1", ApiPath("org/manifests", "manifests", "v1")),
    ],
)
def test_names_containing_api_words(path: str, expected: ApiPath) -> None:
    assert parse_api_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/v2/Library/alpine/manifests/latest",
        "/v2/library//alpine/manifests/latest",
        "/v2//alpine/manifests/latest",
        "/v2/library/../alpine/manifests/latest",
        "/v2/library%2Falpine/manifests/latest",
        "/v2/-x/tags/list",
        "/v2/" + "a" * 256 + "/manifests/latest",
        "/v2/a b/blobs/uploads/",
    ],
)
def test_bad_names_are_name_invalid(path: str) -> None:
    error = api_error(path)
    assert (error.status, error.code) == (400, "NAME_INVALID")


def test_name_invalid_detail_names_the_name() -> None:
    assert api_error("/v2/Bad/manifests/latest").detail == {"name": "Bad"}


@pytest.mark.parametrize(
    "reference",
    ["-latest", ".latest", "A" * 129, "la%20test", ".INVALID_MANIFEST_NAME"],
)
def test_bad_tags_are_unknown_manifests(reference: str) -> None:
    error = api_error(f"/v2/alpine/manifests/{reference}")
    assert (error.status, error.code) == (404, "MANIFEST_UNKNOWN")
    assert error.detail == {"reference": reference}


@pytest.mark.parametrize(
    "reference",
    ["sha256:" + "A" * 64, "sha256:abc", "sha512:" + "a" * 64, "sha256:" + "a" * 63 + "%"],
)
def test_bad_manifest_digests_are_unknown_manifests(reference: str) -> None:
    error = api_error(f"/v2/alpine/manifests/{reference}")
    assert (error.status, error.code) == (404, "MANIFEST_UNKNOWN")
    assert error.detail == {"reference": reference}


@pytest.mark.parametrize(
    "reference",
    ["latest", "sha256:" + "a" * 63, "sha256:" + "A" * 64, "..", "sha256%3A" + "a" * 64],
)
def test_bad_blob_digests_are_digest_invalid(reference: str) -> None:
    error = api_error(f"/v2/alpine/blobs/{reference}")
    assert (error.status, error.code) == (400, "DIGEST_INVALID")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/",
        "/v2/alpine",
        "/v2/alpine/manifests",
        "/v2/alpine/manifests/",
        "/v2/alpine/manifests/latest/extra",
        "/v2/alpine/tags",
        "/v2/alpine/tags/list/",
        "/v2/alpine/tags/other",
        "/v2/alpine/referrers",
        "/v2/alpine/referrers/",
        f"/v2/alpine/referrers/{SHA256}/extra",
        "/v3/alpine/manifests/latest",
        "/alpine/manifests/latest",
    ],
)
def test_unknown_api_paths_are_404(path: str) -> None:
    error = api_error(path)
    assert (error.status, error.code) == (404, "NOT_FOUND")
    assert error.detail == {"path": path}


def test_error_body_is_registry_json() -> None:
    error = api_error("/v2/Bad/manifests/latest")
    assert error.body() == (
        b'{"errors": [{"code": "NAME_INVALID", "message": "invalid repository name", '
        b'"detail": {"name": "Bad"}}]}\n'
    )
