"""Failed logins (L{dockerproxy.logins}): the delay each costs, on the clock and without
blocking; the lockout after ten in a minute and its end; the bounded memory."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.logins import LoginGuard, client_key


class LoginGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = LoginGuard(self.clock, fail_delay=1.0)

    def fail(self, address: str = "192.0.2.1") -> Deferred[None]:
        return Deferred.fromCoroutine(self.guard.failed(address))

    def fail_now(self, address: str = "192.0.2.1", times: int = 1) -> None:
        for _ in range(times):
            done = self.fail(address)
            self.clock.advance(self.guard.fail_delay)
            self.successResultOf(done)

    def test_each_failure_waits_the_delay_on_the_clock(self) -> None:
        done = self.fail()
        self.assertNoResult(done)  # the reactor is free meanwhile: nothing blocked
        self.clock.advance(0.999)
        self.assertNoResult(done)
        self.clock.advance(0.001)
        self.successResultOf(done)

    def test_a_waiting_failure_can_be_cancelled_when_its_client_leaves(self) -> None:
        done = self.fail()
        done.cancel()
        self.failureResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_delay_when_configured_so(self) -> None:
        self.guard.fail_delay = 0
        self.successResultOf(self.fail())

    def test_ten_failures_in_a_minute_lock_the_address_out_for_five_minutes(self) -> None:
        self.fail_now(times=9)
        self.assertIsNone(self.guard.locked_for("192.0.2.1"))
        self.fail_now()
        self.assertEqual(self.guard.locked_for("192.0.2.1"), 299.0)
        self.assertIsNone(self.guard.locked_for("192.0.2.2"))  # others are not
        self.clock.advance(298.5)
        self.assertEqual(self.guard.locked_for("192.0.2.1"), 0.5)
        self.clock.advance(0.5)
        self.assertIsNone(self.guard.locked_for("192.0.2.1"))
        # The count starts again from nothing.
        self.fail_now(times=9)
        self.assertIsNone(self.guard.locked_for("192.0.2.1"))

    def test_failures_spread_over_more_than_a_minute_do_not_lock_out(self) -> None:
        for _ in range(30):
            self.fail_now()
            self.clock.advance(6.0)  # 7 s apart: at most 9 within any minute
        self.assertIsNone(self.guard.locked_for("192.0.2.1"))

    def test_ipv6_is_counted_by_its_64(self) -> None:
        for host in range(10):
            self.fail_now(f"2001:db8:1:2::{host + 1:x}")
        self.assertIsNotNone(self.guard.locked_for("2001:db8:1:2:ffff::1"))
        self.assertIsNone(self.guard.locked_for("2001:db8:1:3::1"))
        self.assertEqual(client_key("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(client_key("-"), "-")

    def test_memory_is_bounded(self) -> None:
        guard = LoginGuard(self.clock, fail_delay=0, max_failures=2, max_clients=100)
        for n in range(1000):
            self.successResultOf(Deferred.fromCoroutine(guard.failed(f"10.0.{n // 256}.{n % 256}")))
        self.assertLessEqual(guard.remembered, 200)
        for n in range(1000):
            address = f"10.1.{n // 256}.{n % 256}"
            for _ in range(2):
                self.successResultOf(Deferred.fromCoroutine(guard.failed(address)))
        self.assertLessEqual(guard.remembered, 200)
        # The most recent lockouts are the ones kept.
        self.assertIsNotNone(guard.locked_for("10.1.3.231"))
        self.assertIsNone(guard.locked_for("10.1.0.0"))
