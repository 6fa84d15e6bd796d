"""Private Twisted attributes are checked at import: a missing one turns its feature off
with one log line, and the proxy falls back to Twisted's own behaviour."""

from __future__ import annotations

import importlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import abstract, base, tcp
from twisted.logger import LogEvent, globalLogPublisher
from twisted.web import _http2, http

from dockerproxy import internals
from dockerproxy.cache.sendfile import Sendfile

FEATURES = (
    "SIZED_READS",
    "WHOLE_SENDS",
    "WRITABLE_WAIT",
    "SENDFILE",
    "CHANNEL_WAITING",
    "REQUEST_LINE",
    "CHANNEL_INPUT",
    "JSON_BAD_REQUEST",
    "EXIT_SIGNAL",
    "H2_HOOKS",
)


@pytest.fixture
def reload(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LogEvent]]:
    """Reload internals after the test changed Twisted, and again once it is restored."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
    monkeypatch.undo()
    importlib.reload(internals)


def warnings(events: list[LogEvent]) -> list[str]:
    return [
        f"{e.get('missing')}: {e.get('what')}"
        for e in events
        if e.get("log_namespace") == internals.log.namespace
    ]


def test_every_feature_is_on_with_the_pinned_twisted() -> None:
    assert {name: getattr(internals, name) for name in FEATURES} == dict.fromkeys(FEATURES, True)


def test_a_missing_attribute_turns_sendfile_off_with_one_line(
    monkeypatch: pytest.MonkeyPatch, reload: list[LogEvent]
) -> None:
    request = fake_request(object.__new__(tcp.Server))
    assert Sendfile.for_request(request) is not None
    monkeypatch.delattr(abstract.FileDescriptor, "dataBuffer")
    importlib.reload(internals)
    assert not internals.SENDFILE and internals.WRITABLE_WAIT
    assert Sendfile.for_request(request) is None, "cached blobs are copied instead"
    assert warnings(reload) == ["FileDescriptor.dataBuffer: sendfile() for cached blobs"]


def test_a_missing_send_limit_leaves_sends_as_twisted_makes_them(
    monkeypatch: pytest.MonkeyPatch, reload: list[LogEvent]
) -> None:
    monkeypatch.delattr(abstract.FileDescriptor, "SEND_LIMIT")
    importlib.reload(internals)
    transport = Transport()
    internals.enlarge_sends(transport, 1 << 20)
    assert transport.SEND_LIMIT == 128 * 1024
    assert len(warnings(reload)) == 1


def test_twisteds_own_bad_request_hook_and_exit_signal_are_checked(
    monkeypatch: pytest.MonkeyPatch, reload: list[LogEvent]
) -> None:
    monkeypatch.delattr(http.HTTPChannel, "_respondToBadRequestAndDisconnect")
    monkeypatch.delattr(base.ReactorBase, "_exitSignal")
    importlib.reload(internals)
    assert not internals.JSON_BAD_REQUEST and not internals.EXIT_SIGNAL
    reactor = Reactor()
    internals.forget_exit_signal(reactor, signal.SIGTERM)
    assert reactor._exitSignal == signal.SIGTERM, "left alone when it cannot be checked"
    assert len(warnings(reload)) == 2


def test_a_missing_h2_hook_turns_http2_off_with_one_line(
    monkeypatch: pytest.MonkeyPatch, reload: list[LogEvent]
) -> None:
    monkeypatch.delattr(_http2.H2Connection, "_sendPrioritisedData")
    importlib.reload(internals)
    assert not internals.H2_HOOKS
    [line] = warnings(reload)
    assert "H2Connection._sendPrioritisedData" in line and "HTTP/2" in line


def test_the_exit_signal_of_a_completed_stop_is_forgotten() -> None:
    reactor = Reactor()
    internals.forget_exit_signal(reactor, signal.SIGINT)
    assert reactor._exitSignal == signal.SIGTERM
    internals.forget_exit_signal(reactor, signal.SIGTERM)
    assert reactor._exitSignal is None


def test_attributes_assigned_in_methods_count_as_defined() -> None:
    class Example:
        def later(self) -> None:
            self.late = 1

        def reads(self) -> object:
            return self.never  # type: ignore[attr-defined]

    assert internals.assigned(Example, "late") and not internals.assigned(Example, "never")


class Transport:
    SEND_LIMIT = 128 * 1024


class Reactor:
    _exitSignal: Any = signal.SIGTERM


def fake_request(transport: object) -> Any:
    class Channel:
        pass

    class Request:
        channel = Channel()

    Request.channel.transport = transport  # type: ignore[attr-defined]
    return Request()
