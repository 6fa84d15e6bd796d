"""Who may pull what, and how much: the checks a request meets before anything is fetched.

- L{Policy.admit}, before any resource sees the request: the client's network
  (C{--allow-ip}: 403 C{DENIED} for anyone else, on every path), then its request
  rate (C{--rate-limit}, C{--rate-burst}: 429 C{TOOMANYREQUESTS} with C{Retry-After}).
  A client with a C{--bandwidth-limit} has its responses shaped (L{dockerproxy.shaping}).
- L{check_repository}, once a name is routed and before any upstream request (the
  registry API and the token endpoint's scopes): C{--allow} / C{--deny}, deny winning.
- L{start_pull}, for a blob download: C{--max-pulls} at once per client.

Each refusal is a registry JSON error and sets C{request.refusal} (C{ip},
C{repository}, C{rate}, C{pulls}), which the access log and metrics count. A client
is the authenticated user (C{request.user}) when there is one, else its address. The
access settings are the Site's when the request arrives (a reload replaces them as a
whole), and the quotas the policy's (L{Policy.apply}).
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.interfaces import IReactorTime

from dockerproxy.config import AccessSettings, Config
from dockerproxy.config.policy import Quotas
from dockerproxy.edge import ClientRequest
from dockerproxy.errors import RegistryError
from dockerproxy.limits import Clients, ClientState
from dockerproxy.networks import contains
from dockerproxy.patterns import any_matches
from dockerproxy.shaping import ByteBudget


class Policy:
    """The limits' state and the checks made before any resource; one per Site."""

    def __init__(self, clock: IReactorTime, quotas: Quotas | None = None) -> None:
        self.clock = clock
        self.clients = Clients(clock, quotas)

    @property
    def unlimited(self) -> bool:
        """No client has any limit."""
        return self.clients.quotas.unlimited

    def apply(self, config: Config) -> None:
        """Reloaded settings (SIGHUP): the new quotas count for requests from now on."""
        self.clients.apply(config)

    def admit(self, request: Any, access: AccessSettings) -> RegistryError | None:
        """The error to answer instead of any resource, or None to go on.

        Remembers C{access} and this policy on the request for the checks further in.
        """
        request.access = access
        request.policy = self
        address = client_address(request)
        if access.allow_ip and not contains(access.allow_ip, address):
            request.refusal = "ip"
            return RegistryError(403, "DENIED", "this proxy does not serve your network")
        if self.unlimited:
            return None
        quotas = self.clients.quotas
        state = self.client_state(request)
        if state is not None and state.requests is not None:
            wait = state.requests.take(self.clock.seconds())
            if wait > 0:
                request.refusal = "rate"
                request.setHeader(b"retry-after", b"%d" % max(1, math.ceil(wait)))
                return RegistryError(
                    429, "TOOMANYREQUESTS", "too many requests from this client; retry later"
                )
        if quotas.shaped:
            request.budget_for = lambda: self.budget(request)
        return None

    def client_state(self, request: Any) -> ClientState | None:
        return self.clients.state(getattr(request, "user", None), client_address(request))

    def budget(self, request: Any) -> ByteBudget | None:
        """The budget of C{request}'s client as known when its body starts."""
        state = self.client_state(request)
        return None if state is None else state.budget


def client_address(request: Any) -> str:
    """The client's address read at the edge; the peer's when the edge could not read it."""
    read = getattr(request, "client_request", None)
    if isinstance(read, ClientRequest):
        return read.address
    return str(getattr(request.getClientAddress(), "host", "-"))


def check_repository(request: Any, registry: str, repository: str) -> None:
    """A 403 C{DENIED} for a repository outside C{--allow} or inside C{--deny}."""
    access: AccessSettings | None = getattr(request, "access", None)
    if access is None or not (access.allow or access.deny):
        return
    if any_matches(access.deny, registry, repository) or (
        access.allow and not any_matches(access.allow, registry, repository)
    ):
        request.refusal = "repository"
        raise RegistryError(
            403,
            "DENIED",
            "this proxy does not serve this repository",
            {"repository": f"{registry}/{repository}"},
        )


def start_pull(request: Any) -> None:
    """Count a blob download of the client until its response ends; a 429
    C{TOOMANYREQUESTS} beyond C{--max-pulls} at once."""
    policy: Policy | None = getattr(request, "policy", None)
    if policy is None or policy.unlimited:
        return
    state = policy.client_state(request)
    if state is None or state.quota.max_pulls is None:
        return
    if state.pulls >= state.quota.max_pulls:
        request.refusal = "pulls"
        raise RegistryError(
            429,
            "TOOMANYREQUESTS",
            f"at most {state.quota.max_pulls} blob downloads at once per client; retry later",
        )
    state.pulls += 1

    def ended(_: object) -> None:
        state.pulls -= 1

    request.notifyFinish().addBoth(ended)
