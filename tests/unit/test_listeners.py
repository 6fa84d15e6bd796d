"""The Listeners service with ssl: endpoints: listened on with a certificate a reload can
replace (on a MemoryReactorClock), and the reload's one line for a refused certificate."""

from __future__ import annotations

import shutil

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.certificates import ServerCertificates
from dockerproxy.listeners import Listeners, ListenFailed
from dockerproxy.site import ProxySite
from tests.unit.fakes import lines_logged, scratch_dir
from tests.unit.tlsfiles import issue, served_chain


class TLSListenersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = scratch_dir(self)
        self.served = issue(self.dir, "served")
        self.description = (
            f"ssl:5443:interface=127.0.0.1:backlog=9:privateKey={self.served.key}"
            f":certKey={self.served.cert}"
        )
        self.reactor = MemoryReactorClock()
        self.site = ProxySite.__new__(ProxySite)
        self.listeners = Listeners(self.reactor, ["tcp:5000", self.description], self.site)
        self.logged = lines_logged(self)

    def tls_port(self) -> ServerCertificates:
        [(port, factory, contexts, backlog, interface)] = self.reactor.sslServers
        self.assertEqual((port, factory, backlog, interface), (5443, self.site, 9, "127.0.0.1"))
        assert isinstance(contexts, ServerCertificates)
        return contexts

    def test_an_ssl_endpoint_listens_with_replaceable_certificates(self) -> None:
        self.listeners.privilegedStartService()
        self.assertEqual([port for port, *_ in self.reactor.tcpServers], [5000])
        contexts = self.tls_port()
        self.assertEqual(self.listeners.certificates, [contexts])
        self.assertEqual(
            served_chain(contexts.serverConnectionForTLS(None)), [self.served.fingerprint]
        )

    def test_apply_serves_renewed_files_and_says_so_once(self) -> None:
        self.listeners.privilegedStartService()
        contexts = self.tls_port()
        self.listeners.apply()
        self.assertEqual(self.logged, [], "the same certificate: nothing to say")
        renewed = issue(self.dir / "renewed", "renewed")
        shutil.copy(renewed.key, self.served.key)
        shutil.copy(renewed.cert, self.served.cert)
        self.listeners.apply()
        self.assertEqual(served_chain(contexts.serverConnectionForTLS(None)), [renewed.fingerprint])
        self.assertEqual(
            self.logged,
            [
                f"reload: {self.description} serves a new certificate to new connections "
                f"(sha256 {renewed.fingerprint})"
            ],
        )

    def test_a_renewal_that_does_not_load_is_refused_in_one_line(self) -> None:
        self.listeners.privilegedStartService()
        contexts = self.tls_port()
        self.served.key.write_text("not a key\n")
        self.listeners.apply()
        self.assertEqual(
            served_chain(contexts.serverConnectionForTLS(None)), [self.served.fingerprint]
        )
        [line] = self.logged
        self.assertTrue(
            line.startswith(
                f"reload: the certificate of {self.description} is refused, the old one stays: "
            ),
            line,
        )
        self.assertNotIn("Traceback", line)

    def test_unreadable_files_stop_the_start_naming_the_endpoint(self) -> None:
        self.served.cert.unlink()
        with self.assertRaises(ListenFailed) as caught:
            self.listeners.privilegedStartService()
        self.assertEqual(
            str(caught.exception),
            f"--listen: cannot listen on {self.description!r}: "
            f"No such file or directory: {self.served.cert}",
        )

    def test_a_restart_forgets_the_old_ports_certificates(self) -> None:
        self.listeners.privilegedStartService()
        self.listeners.stopService()
        self.listeners.privilegedStartService()
        self.assertEqual(len(self.listeners.certificates), 1)
