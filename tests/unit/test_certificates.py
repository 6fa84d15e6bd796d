"""ssl: listeners whose certificate a reload replaces: the endpoint string parsed as
Twisted parses it, the files loaded, and real handshakes over memory BIOs showing which
certificate a connection gets before and after a reload."""

from __future__ import annotations

import shutil
from pathlib import Path

from OpenSSL import crypto
from twisted.internet.error import VerifyError
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.certificates import (
    ServerCertificates,
    TLSListen,
    is_tls,
    load_options,
    parse_tls,
    split_description,
)
from dockerproxy.listeners import describe
from tests.unit.fakes import scratch_dir
from tests.unit.tlsfiles import Issued, issue, served_chain

BROKEN = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"


class ParseTests(SynchronousTestCase):
    def test_twisteds_syntax_colons_equals_and_backslash_escapes(self) -> None:
        self.assertEqual(
            split_description(r"ssl:443:interface=\:\:1:privateKey=/k\:x.pem:certKey=a=b"),
            (["ssl", "443"], {"interface": "::1", "privateKey": "/k:x.pem", "certKey": "a=b"}),
        )

    def test_the_options_of_twisteds_ssl_endpoint(self) -> None:
        listen = parse_tls(
            "ssl:5443:interface=127.0.0.1:backlog=7:privateKey=/etc/k.pem:"
            "certKey=/etc/c.pem:extraCertChain=/etc/chain.pem:dhParameters=/etc/dh.pem"
        )
        self.assertEqual(
            (listen.port, listen.interface, listen.backlog, listen.private_key),
            (5443, "127.0.0.1", 7, "/etc/k.pem"),
        )
        self.assertEqual(
            (listen.certificate_file, listen.extra_cert_chain, listen.dh_parameters),
            ("/etc/c.pem", "/etc/chain.pem", "/etc/dh.pem"),
        )

    def test_defaults_as_twisted_has_them(self) -> None:
        listen = parse_tls("SSL:port=443")
        self.assertEqual((listen.port, listen.interface, listen.backlog), (443, "", 50))
        self.assertEqual(listen.certificate_file, "server.pem", "certKey defaults to the key")

    def test_what_it_does_not_know_is_refused(self) -> None:
        for description, why in [
            ("ssl:443:sslmethod=TLSv1_2_METHOD", "unknown option 'sslmethod'"),
            ("ssl:https", "must be numbers"),
            ("ssl:443:backlog=many", "must be numbers"),
            ("ssl:443:server.pem", "takes the port (or systemd=N), then name=value options"),
            ("ssl:privateKey=k.pem", "takes the port"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_tls(description)
            self.assertIn(why, str(caught.exception), description)

    def test_tls_over_the_socket_systemd_passes(self) -> None:
        listen = parse_tls("ssl:systemd=1:domain=INET6:privateKey=/k.pem:certKey=/c.pem")
        self.assertEqual(
            (listen.systemd_index, listen.domain, listen.private_key, listen.certificate_file),
            (1, "INET6", "/k.pem", "/c.pem"),
        )
        self.assertEqual(parse_tls("ssl:systemd=0:privateKey=k").domain, "INET")
        self.assertIsNone(parse_tls("ssl:443:privateKey=k").systemd_index)
        for description, why in [
            ("ssl:systemd=0:port=443", "takes no port"),
            ("ssl:443:systemd=0", "takes no port"),
            ("ssl:systemd=0:interface=127.0.0.1", "takes no port, interface or backlog"),
            ("ssl:systemd=x", "N is a number"),
            ("ssl:systemd=0:domain=AF_INET", "domain= INET, INET6 or UNIX"),
            ("ssl:systemd=0:sslmethod=TLS", "takes no port"),
            ("ssl:port=443:domain=INET", "unknown option 'domain'"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_tls(description)
            self.assertIn(why, str(caught.exception), description)

    def test_only_ssl_endpoints_are_tls(self) -> None:
        self.assertTrue(is_tls("ssl:443"))
        self.assertFalse(is_tls("tcp:443"))
        self.assertFalse(is_tls("systemd:domain=INET:index=0"))


class CertificatesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = scratch_dir(self)
        self.served = issue(self.dir, "served")
        self.listen = TLSListen(
            "ssl:5443", 5443, private_key=str(self.served.key), cert_key=str(self.served.cert)
        )

    def renew(self, name: str, intermediate: bool = False) -> Issued:
        """A new key and certificate written over the served files, as certbot does."""
        renewed = issue(self.dir / name, name, intermediate)
        shutil.copy(renewed.key, self.served.key)
        shutil.copy(renewed.cert, self.served.cert)
        return renewed

    def test_a_connection_gets_the_certificate_in_the_files(self) -> None:
        certificates = ServerCertificates(self.listen)
        chain = served_chain(certificates.serverConnectionForTLS(None))
        self.assertEqual(chain, [self.served.fingerprint])

    def test_after_a_reload_new_connections_get_the_renewed_certificate(self) -> None:
        certificates = ServerCertificates(self.listen)
        before = certificates.serverConnectionForTLS(None)  # accepted before the reload
        renewed = self.renew("renewed")
        self.assertEqual(
            served_chain(certificates.serverConnectionForTLS(None)),
            [self.served.fingerprint],
            "the files are read again only on a reload",
        )
        self.assertEqual(certificates.reload(), (self.served.fingerprint, renewed.fingerprint))
        self.assertEqual(
            served_chain(certificates.serverConnectionForTLS(None)), [renewed.fingerprint]
        )
        self.assertEqual(
            served_chain(before), [self.served.fingerprint], "an open connection keeps its own"
        )

    def test_a_renewal_that_does_not_load_keeps_the_old_certificate(self) -> None:
        certificates = ServerCertificates(self.listen)
        self.served.cert.write_text(BROKEN)
        with self.assertRaises(crypto.Error):
            certificates.reload()
        self.assertEqual(
            served_chain(certificates.serverConnectionForTLS(None)), [self.served.fingerprint]
        )

    def test_a_key_that_does_not_match_the_certificate_is_refused(self) -> None:
        other = issue(self.dir / "other", "other")
        shutil.copy(other.key, self.served.key)
        with self.assertRaises(VerifyError) as caught:
            load_options(self.listen)
        self.assertEqual(
            describe(caught.exception), "Certificate public and private keys do not match."
        )

    def test_missing_files_are_refused_naming_them(self) -> None:
        self.served.cert.unlink()
        with self.assertRaises(OSError) as caught:
            load_options(self.listen)
        self.assertEqual(caught.exception.filename, str(self.served.cert))

    def test_a_fullchain_certificate_file_sends_its_chain(self) -> None:
        """Let's Encrypt's fullchain.pem: the leaf, then the intermediate, both sent."""
        renewed = self.renew("chained", intermediate=True)
        certificates = ServerCertificates(self.listen)
        self.assertEqual(len(renewed.chain), 2)
        self.assertEqual(
            served_chain(certificates.serverConnectionForTLS(None)), list(renewed.chain)
        )

    def test_extra_cert_chain_is_sent_after_the_leaf(self) -> None:
        chained = issue(self.dir / "chained", "chained", intermediate=True)
        leaf, middle = chained.cert.read_text().split("-----END CERTIFICATE-----\n")[:2]
        (self.dir / "leaf.crt").write_text(leaf + "-----END CERTIFICATE-----\n")
        (self.dir / "middle.crt").write_text(middle + "-----END CERTIFICATE-----\n")
        listen = TLSListen(
            "ssl:5443",
            5443,
            private_key=str(chained.key),
            cert_key=str(self.dir / "leaf.crt"),
            extra_cert_chain=str(self.dir / "middle.crt"),
        )
        chain = served_chain(ServerCertificates(listen).serverConnectionForTLS(None))
        self.assertEqual(chain, list(chained.chain))

    def test_key_and_certificate_in_one_file(self) -> None:
        both = self.dir / "both.pem"
        both.write_bytes(self.served.key.read_bytes() + self.served.cert.read_bytes())
        listen = TLSListen("ssl:5443", 5443, private_key=str(both))
        chain = served_chain(ServerCertificates(listen).serverConnectionForTLS(None))
        self.assertEqual(chain, [self.served.fingerprint])


def test_a_path_with_a_colon_is_escaped_as_twisted_escapes_it(tmp_path: Path) -> None:
    served = issue(tmp_path / "a:b", "served")
    key, cert = (str(path).replace(":", "\\:") for path in (served.key, served.cert))
    listen = parse_tls(f"ssl:5443:privateKey={key}:certKey={cert}")
    assert listen.private_key == str(served.key)
    assert served_chain(ServerCertificates(listen).serverConnectionForTLS(None)) == [
        served.fingerprint
    ]
