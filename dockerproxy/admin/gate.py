"""Admins only, on an admin listener beyond loopback.

Every request needs HTTP Basic credentials of an admin. They are checked off the
reactor thread (C{check_admin}: bcrypt on the thread pool; a failure costs the
login delay and counts towards its address's lockout, as a failed login to the
registry does), and those that passed are remembered for a minute by their digest,
never in clear, so a scrape every few seconds pays for one check a minute. A missing
or wrong credential gets a 401 with a challenge, and a wrong one a log line naming
the user and the client, never the password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

log = Logger()

# (client address, user, password) -> whether they are an admin's.
CheckAdmin = Callable[[str, str, str], Awaitable[bool]]
REMEMBER_ADMIN = 60.0  # seconds an admin's credentials that passed are not checked again
MAX_REMEMBERED = 16
REALM = b'Basic realm="dockerproxy admin", charset="UTF-8"'


class Admission:
    """Which requests carry an admin's credentials."""

    def __init__(self, check_admin: CheckAdmin, clock: IReactorTime) -> None:
        self.check_admin = check_admin
        self.clock = clock
        self._admitted_until: dict[bytes, float] = {}  # sha256 of an Authorization -> until

    def remembered(self, request: Request) -> bool:
        header = _authorization(request)
        if header is None:
            return False
        return self._admitted_until.get(_key(header), 0.0) > self.clock.seconds()

    async def admit(self, request: Request) -> bool:
        header = _authorization(request)
        credentials = basic_credentials(header)
        if credentials is None or header is None:
            return False
        user, password = credentials
        client = str(getattr(request.getClientAddress(), "host", "-"))
        if await self.check_admin(client, user, password):
            if len(self._admitted_until) >= MAX_REMEMBERED:
                self._admitted_until.clear()
            self._admitted_until[_key(header)] = self.clock.seconds() + REMEMBER_ADMIN
            return True
        log.warn("admin: refused credentials of {user!r} from {client}", user=user, client=client)
        return False


class Gated(Resource):
    """C{page} for an admin, L{Unauthorized} for anyone else."""

    isLeaf = True

    def __init__(self, admission: Admission, page: Resource) -> None:
        super().__init__()
        self.admission = admission
        self.page = page

    def render(self, request: Request) -> bytes | int:
        if self.admission.remembered(request):
            return self.page.render(request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(admitted: bool) -> None:
            if gone:
                return
            body = (self.page if admitted else Unauthorized()).render(request)
            if isinstance(body, bytes):
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            log.failure("admin credentials check", failure)
            answer(False)

        ensureDeferred(self.admission.admit(request)).addCallbacks(answer, failed)
        return NOT_DONE_YET


class Unauthorized(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        body = b"authentication required\n"
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", REALM)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


def _authorization(request: Request) -> bytes | None:
    """The one Authorization header; none when there are several (which one a check
    would read is a guess, so there is no guessing)."""
    values = request.requestHeaders.getRawHeaders(b"authorization") or []
    return values[0] if len(values) == 1 else None


def _key(header: bytes) -> bytes:
    return hashlib.sha256(header).digest()


def basic_credentials(header: bytes | None) -> tuple[str, str] | None:
    """C{(user, password)} from C{Authorization: Basic ...}, or None."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None
