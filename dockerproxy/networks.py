"""Client addresses and the networks operators name (C{--allow-ip}, C{--trusted-proxy}).

A leaf: addresses are parsed with the standard library's C{ipaddress}, and anything
that does not parse is no address at all (never a match, never trusted).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = tuple[Network, ...]


def parse_network(text: str) -> Network:
    """A CIDR (C{10.0.0.0/8}, C{2001:db8::/32}) or a single address; C{ValueError} otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address as proxies write it (C{[2001:db8::1]:4711}, C{"192.0.2.1"}), or None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # an IPv4 address with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def contains(networks: Iterable[Network], address: str) -> bool:
    """Whether C{address} (text) is in any of C{networks}; an unparsable one never is."""
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in networks)
