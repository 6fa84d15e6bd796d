"""Client addresses and networks."""

from __future__ import annotations

import pytest

from dockerproxy.networks import contains, parse_address, parse_network


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:4711", "192.0.2.1"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


def test_contains() -> None:
    networks = (parse_network("10.0.0.0/8"), parse_network("2001:db8::/32"))
    assert contains(networks, "10.1.2.3") and contains(networks, "2001:db8::5")
    assert not contains(networks, "11.0.0.1") and not contains(networks, "-")
    assert contains((parse_network("127.0.0.1"),), "::ffff:127.0.0.1")
