"""A misbehaving upstream, driven through a running proxy in relay and in cache mode.

Each fault has its client-visible outcome written down in OUTCOMES: a registry JSON error
with a status and code, a complete body, or a response cut short (the connection closed before
the promised bytes, so a client can never take it for complete). The proxy runs with
``--no-presets``, its only upstream on 127.0.0.1 (and a redirect target on 127.0.0.2), and
short timeouts so stalls are cut within seconds.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.misbehaving import (
    BLOB,
    BLOB_DIGEST,
    MANIFEST,
    MANIFEST_DIGEST,
    MANIFEST_TYPE,
    OTHER,
    Misbehaving,
)
from tests.harness.polling import wait_until
from tests.harness.proxy import ProxyProcess, StartProxy

TIMEOUT = 2  # --headers-timeout and --idle-timeout, seconds


@dataclass(frozen=True)
class Outcome:
    """What the client sees: C{status} and, for errors, the registry error C{code}; C{body}
    is the complete body expected, or None when the response must be cut short."""

    status: int
    code: str | None = None
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


def complete(body: bytes) -> Outcome:
    return Outcome(200, body=body)


CUT = Outcome(200)
GATEWAY_TIMEOUT = Outcome(504, "UNAVAILABLE")
HTML_500 = Outcome(500, "UNAVAILABLE")
TOO_MANY = Outcome(429, "TOOMANYREQUESTS", headers=(("retry-after", "7"),))
LOOP = Outcome(502, "UNAVAILABLE")

# (behaviour, kind, mode) -> outcome; "either" means both modes. wrong-digest answers a
# request for BLOB (or MANIFEST) with the bytes of OTHER.
OUTCOMES: dict[tuple[str, str, str], Outcome] = {
    ("ok", "blobs", "either"): complete(BLOB),
    ("ok", "manifests", "either"): complete(MANIFEST),
    ("stall-before-headers", "blobs", "either"): GATEWAY_TIMEOUT,
    ("stall-before-headers", "manifests", "either"): GATEWAY_TIMEOUT,
    # Relayed bodies stream: headers are out before the stall, so the connection is cut.
    ("stall-after-headers", "blobs", "either"): CUT,
    ("stall-after-headers", "manifests", "relay"): CUT,
    # The cache reads a manifest whole before answering: a stall is a 504.
    ("stall-after-headers", "manifests", "cache"): GATEWAY_TIMEOUT,
    ("truncated", "blobs", "either"): CUT,
    ("truncated", "manifests", "relay"): CUT,
    ("truncated", "manifests", "cache"): Outcome(502, "UNAVAILABLE"),
    # Relay mode does not verify (the client does); the cache never lets it look complete.
    ("wrong-digest", "blobs", "relay"): complete(OTHER),
    ("wrong-digest", "blobs", "cache"): CUT,
    ("wrong-digest", "manifests", "relay"): complete(OTHER),
    ("wrong-digest", "manifests", "cache"): Outcome(502, "UNAVAILABLE"),
    ("html-500", "blobs", "either"): HTML_500,
    ("html-500", "manifests", "either"): HTML_500,
    ("429", "blobs", "either"): TOO_MANY,
    ("429", "manifests", "either"): TOO_MANY,
    ("redirect-loop", "blobs", "either"): LOOP,
    ("redirect-loop", "manifests", "either"): LOOP,
    ("redirect-away", "blobs", "either"): complete(BLOB),
    ("redirect-away", "manifests", "either"): complete(MANIFEST),
    # The cache reads at most 4 MiB of a manifest (endless blobs: the tests below).
    ("endless", "manifests", "cache"): Outcome(502, "UNAVAILABLE"),
}


def outcome(behaviour: str, kind: str, mode: str) -> Outcome | None:
    return OUTCOMES.get((behaviour, kind, mode)) or OUTCOMES.get((behaviour, kind, "either"))


CASES = sorted(
    {
        (b, k, m)
        for b, k, mode in OUTCOMES
        for m in (("relay", "cache") if mode == "either" else (mode,))
    }
)


def proxy_in(
    mode: str, start_proxy: StartProxy, misbehaving: Misbehaving, tmp: Path
) -> ProxyProcess:
    options = ["--no-cache"] if mode == "relay" else ["--cache-dir", str(tmp / "cache")]
    started = start_proxy(
        "--upstream",
        misbehaving.url,
        "--no-presets",
        "--headers-timeout",
        str(TIMEOUT),
        "--idle-timeout",
        str(TIMEOUT),
        *options,
    )
    started.mode = mode  # type: ignore[attr-defined]
    return started


@pytest.fixture(params=["relay", "cache"])
def proxy(
    request: pytest.FixtureRequest, start_proxy: StartProxy, misbehaving: Misbehaving, tmp: Path
) -> ProxyProcess:
    return proxy_in(request.param, start_proxy, misbehaving, tmp)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool


def get(proxy: ProxyProcess, path: str, headers: dict[str, str] | None = None) -> Answer:
    """GET through the proxy; C{complete} is False when the connection was cut short."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept": MANIFEST_TYPE, **(headers or {})})
        try:
            response = connection.getresponse()
        except ConnectionResetError:
            # Aborted so fast that the reset overtook the status line: cut as well.
            return Answer(0, {}, b"", False)
        received = {k.lower(): v for k, v in response.getheaders()}
        try:
            body, whole = response.read(), True
        except (http.client.IncompleteRead, ConnectionError) as e:
            body, whole = getattr(e, "partial", b""), False
        return Answer(response.status, received, body, whole)
    finally:
        connection.close()


def path_for(behaviour: str, kind: str) -> str:
    """Blobs by digest; manifests by tag, except wrong-digest ones (by the digest whose
    bytes the upstream does not send)."""
    digest = {"blobs": BLOB_DIGEST, "manifests": MANIFEST_DIGEST}[kind]
    reference = digest if kind == "blobs" or behaviour == "wrong-digest" else "tag"
    return f"/v2/fault/{behaviour}/{kind}/{reference}"


@pytest.mark.parametrize(("behaviour", "kind", "mode"), CASES)
def test_each_fault_has_its_written_outcome(
    start_proxy: StartProxy,
    misbehaving: Misbehaving,
    tmp: Path,
    behaviour: str,
    kind: str,
    mode: str,
) -> None:
    proxy = proxy_in(mode, start_proxy, misbehaving, tmp)
    expected = outcome(behaviour, kind, mode)
    assert expected is not None
    started = time.monotonic()
    answer = get(proxy, path_for(behaviour, kind))
    if expected == CUT and answer.status == 0:
        return
    assert answer.status == expected.status, answer
    if expected.code is not None:
        document = json.loads(answer.body)
        assert document["errors"][0]["code"] == expected.code, document
        assert misbehaving.url in document["errors"][0]["message"], document
    elif expected.body is None:
        assert not answer.complete, "a cut response must never look complete"
    else:
        assert answer.complete and answer.body == expected.body
    for name, value in expected.headers:
        assert answer.headers.get(name) == value, answer.headers
    assert time.monotonic() - started < 10 * TIMEOUT, "every stall is cut by a timeout"
    assert "Traceback" not in proxy.log_text()


def test_a_redirect_to_another_host_never_carries_the_clients_authorization(
    proxy: ProxyProcess, misbehaving: Misbehaving
) -> None:
    before = len(misbehaving.seen(misbehaving.away_state))
    answer = get(proxy, path_for("redirect-away", "blobs"), {"Authorization": "Bearer secret"})
    assert (answer.status, answer.body) == (200, BLOB)
    away = misbehaving.seen(misbehaving.away_state)[before:]
    assert away and all("authorization" not in seen.headers for seen in away), away


def test_a_token_realm_that_redirects_is_followed(proxy: ProxyProcess) -> None:
    answer = get(proxy, "/v2/auth?scope=repository:fault/ok:pull")
    assert answer.status == 200, answer
    assert json.loads(answer.body)["token"] == "t"


def test_an_endless_body_is_relayed_until_the_client_leaves(
    start_proxy: StartProxy, misbehaving: Misbehaving, tmp: Path
) -> None:
    proxy = proxy_in("relay", start_proxy, misbehaving, tmp)
    stopped = misbehaving.state.endless_stopped
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    connection.request("GET", path_for("endless", "blobs"))
    response = connection.getresponse()
    assert response.status == 200
    assert len(response.read(8 << 20)) == 8 << 20
    connection.close()
    wait_until(lambda: misbehaving.state.endless_stopped != stopped, 10)
    assert misbehaving.state.endless_stopped > stopped, "the upstream connection was closed"


def test_an_endless_body_is_cut_at_the_bound_in_cache_mode(
    start_proxy: StartProxy, misbehaving: Misbehaving, tmp: Path
) -> None:
    """Past --max-blob-size a fill is abandoned and its client cut: nothing grows on disk."""
    proxy = start_proxy(
        "--upstream",
        misbehaving.url,
        "--no-presets",
        "--cache-dir",
        str(tmp / "cache"),
        "--max-blob-size",
        "4MiB",
        "--idle-timeout",
        str(TIMEOUT),
    )
    stopped = misbehaving.state.endless_stopped
    answer = get(proxy, path_for("endless", "blobs"))
    assert not answer.complete and len(answer.body) <= 4 << 20
    wait_until(lambda: misbehaving.state.endless_stopped != stopped, 10)
    assert misbehaving.state.endless_stopped > stopped, "the upstream connection was closed"
    # The abandoned fill's partial file is unlinked on the disk pool.
    assert wait_until(lambda: list((tmp / "cache" / "tmp").iterdir()) == [])
    assert list((tmp / "cache" / "blobs").rglob("*")) == []
