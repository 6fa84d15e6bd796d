"""The proxy's own tokens (L{dockerproxy.proxytokens}): what it signs, and every way a token
it did not sign, or no longer honours, is refused; the signing key's file."""

from __future__ import annotations

import base64
import json
import os
import stat

import jwt
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.proxytokens import (
    ISSUER,
    KEY_FILE,
    Grant,
    InvalidToken,
    KeyFileError,
    TokenSigner,
    load_or_create_key,
    looks_like_jwt,
)
from tests.unit.fakes import scratch_dir

KEY = b"k" * 64  # long enough for HS512 too, used below to forge
START = 1_800_000_000.0


def part(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class SignerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.signer = TokenSigner(KEY, self.clock, ttl=300)

    def claims(self, token: str) -> dict[str, object]:
        return jwt.decode(token, options={"verify_signature": False})

    def test_issued_tokens_carry_user_and_pull_access(self) -> None:
        token = self.signer.issue("alice", ["library/alpine", "ghcr.io/acme/app", "library/alpine"])
        claims = self.claims(token)
        self.assertEqual(claims["iss"], ISSUER)
        self.assertEqual(claims["aud"], "dockerproxy")
        self.assertEqual(claims["sub"], "alice")
        self.assertEqual(claims["exp"], int(START) + 300)
        self.assertEqual(
            claims["access"],
            [
                {"type": "repository", "name": "ghcr.io/acme/app", "actions": ["pull"]},
                {"type": "repository", "name": "library/alpine", "actions": ["pull"]},
            ],
        )
        self.assertEqual(jwt.get_unverified_header(token)["alg"], "HS256")
        self.assertEqual(
            self.signer.verify(token),
            Grant("alice", frozenset({"library/alpine", "ghcr.io/acme/app"})),
        )
        self.assertTrue(looks_like_jwt(token))

    def test_anonymous_tokens_have_no_user(self) -> None:
        grant = self.signer.verify(self.signer.issue(None, []))
        self.assertEqual(grant, Grant(None, frozenset()))
        self.assertFalse(grant.covers("library/alpine"))
        self.assertTrue(Grant("ci", None).covers("anything"))

    def test_a_token_expires_by_the_proxy_clock(self) -> None:
        token = self.signer.issue("alice", ["library/alpine"])
        self.clock.advance(299)
        self.assertEqual(self.signer.verify(token).user, "alice")
        self.clock.advance(1)
        with self.assertRaisesRegex(InvalidToken, "expired"):
            self.signer.verify(token)

    def test_a_token_signed_with_another_key_is_refused(self) -> None:
        other = TokenSigner(b"o" * 32, self.clock).issue("alice", ["library/alpine"])
        with self.assertRaises(InvalidToken):
            self.signer.verify(other)

    def test_a_tampered_token_is_refused(self) -> None:
        token = self.signer.issue(None, ["library/alpine"])
        header, payload, signature = token.split(".")
        claims = self.claims(token)
        claims["sub"] = "admin"
        claims["access"] = [{"type": "repository", "name": "private/secret", "actions": ["pull"]}]
        with self.assertRaises(InvalidToken):
            self.signer.verify(f"{header}.{part(claims)}.{signature}")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        with self.assertRaises(InvalidToken):
            self.signer.verify(f"{header}.{payload}.{flipped}")

    def test_other_algorithms_are_refused_even_with_the_key(self) -> None:
        claims = self.claims(self.signer.issue("alice", ["library/alpine"]))
        unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
        with self.assertRaises(InvalidToken):
            self.signer.verify(unsigned)
        hs512 = jwt.encode(claims, KEY, algorithm="HS512")
        with self.assertRaises(InvalidToken):
            self.signer.verify(hs512)

    def test_wrong_audience_issuer_or_missing_claims_are_refused(self) -> None:
        claims = self.claims(self.signer.issue("alice", ["library/alpine"]))
        for change in (
            {"aud": "registry.docker.io"},
            {"iss": "someone-else"},
            {"access": "everything"},
            {"access": [{"type": "repository"}]},
        ):
            with self.assertRaises(InvalidToken, msg=str(change)):
                self.signer.verify(jwt.encode({**claims, **change}, KEY, algorithm="HS256"))
        for missing in ("exp", "aud", "iss", "sub", "access"):
            forged = {k: v for k, v in claims.items() if k != missing}
            with self.assertRaises(InvalidToken, msg=missing):
                self.signer.verify(jwt.encode(forged, KEY, algorithm="HS256"))

    def test_garbage_is_refused(self) -> None:
        for token in ("", "a.b.c", "not a token", "dockerproxy-anonymous"):
            with self.assertRaises(InvalidToken):
                self.signer.verify(token)

    def test_push_access_is_not_honoured(self) -> None:
        claims = self.claims(self.signer.issue("alice", []))
        claims["access"] = [{"type": "repository", "name": "a/b", "actions": ["push"]}]
        grant = self.signer.verify(jwt.encode(claims, KEY, algorithm="HS256"))
        self.assertFalse(grant.covers("a/b"))

    def test_the_key_never_shows(self) -> None:
        self.assertNotIn("kkkk", repr(self.signer))
        self.assertRaises(ValueError, TokenSigner, b"short", self.clock)


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = scratch_dir(self) / "state"

    def test_made_once_private_and_kept(self) -> None:
        key = load_or_create_key(str(self.state))
        self.assertEqual(len(key), 32)
        path = self.state / KEY_FILE
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(self.state.stat().st_mode), 0o700)
        self.assertEqual(load_or_create_key(str(self.state)), key)

    def test_a_key_others_may_read_is_refused(self) -> None:
        load_or_create_key(str(self.state))
        os.chmod(self.state / KEY_FILE, 0o644)
        with self.assertRaisesRegex(KeyFileError, "may be read by others: chmod 600 it"):
            load_or_create_key(str(self.state))

    def test_a_damaged_key_is_refused(self) -> None:
        self.state.mkdir(parents=True)
        path = self.state / KEY_FILE
        path.write_text("abc\n")
        path.chmod(0o600)
        with self.assertRaisesRegex(KeyFileError, "is not a key"):
            load_or_create_key(str(self.state))

    def test_an_unusable_directory_is_one_line(self) -> None:
        blocker = scratch_dir(self) / "blocker"
        blocker.write_text("a file, not a directory")
        with self.assertRaises(KeyFileError) as caught:
            load_or_create_key(str(blocker / "state"))
        self.assertIn(f"{blocker}/state/{KEY_FILE}", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))
