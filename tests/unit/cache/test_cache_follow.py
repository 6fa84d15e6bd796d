"""Clients following a fill in progress (L{dockerproxy.cache.senders.Sender}): bytes reach
them as they land, the final byte waits for the commit, followers come and go without
touching the fill, ranges wait for their bytes.
"""

from __future__ import annotations

from twisted.web.iweb import UNKNOWN_LENGTH

from tests.unit.cache.blobharness import BODY, CacheTestCase, dechunk, sha256


class FollowTests(CacheTestCase):
    def test_bytes_reach_the_follower_before_the_fill_completes(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        self.assertEqual(client.body(), BODY[:100])
        self.assertEqual(client.header(b"content-length"), b"%d" % len(BODY))
        up.sends(BODY[100:500])
        self.assertEqual(client.body(), BODY[:500])

    def test_the_final_byte_waits_for_the_commit(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY)
        self.assertEqual(client.body(), BODY[:-1])
        self.assertFalse(client.request.finished)
        self.assertEqual(client.outcome, [])
        up.ends()
        self.assertEqual(client.body(), BODY)
        self.assertTrue(client.request.finished)
        self.assertEqual(client.outcome, [True])
        self.assertFalse(client.transport.aborted)

    def test_two_followers_the_second_joining_midway(self) -> None:
        up = self.h.upstream(BODY)
        first = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:400])
        fill = self.cache.fill_for(sha256(BODY))
        self.assertIs(fill, up.fill)
        second = self.h.client().served(self.cache, sha256(BODY))
        self.assertEqual(second.body(), BODY[:400])
        up.sends(BODY[400:])
        up.ends()
        for client in (first, second):
            self.assertEqual(client.body(), BODY)
            self.assertEqual(client.outcome, [True])
        self.assertEqual(self.cache.coalesced, 2)
        self.assertEqual(self.cache.fills, 1)

    def test_a_follower_leaving_does_not_stop_the_fill(self) -> None:
        up = self.h.upstream(BODY)
        leaving = self.h.client().served(self.cache, sha256(BODY))
        staying = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        leaving.goes_away()
        self.assertEqual(leaving.outcome, [False])
        self.assertEqual(up.transport.producerState, "producing")
        self.assertEqual(up.fill.followers, 1)
        up.sends(BODY[100:])
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertEqual(staying.body(), BODY)
        self.assertEqual(leaving.body(), BODY[:100])
        self.assertEqual(self.cache.stats()["pinned"], 0)

    def test_the_fill_completes_when_every_follower_has_left(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        client.goes_away()
        up.sends(BODY[100:])
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertIsNotNone(self.cache.lookup(sha256(BODY)))

    def test_transport_stop_stops_only_that_follower(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        client.channel.stopProducing()  # what a TCP transport does when it loses the connection
        self.assertEqual(client.outcome, [False])
        up.sends(BODY)
        self.assertEqual(client.body(), b"")
        self.assertEqual(up.transport.producerState, "producing")

    def test_unknown_length_is_chunked_and_holds_back_the_last_byte(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        self.assertEqual(dechunk(client.body()), (BODY[:99], False))
        up.sends(BODY[100:])
        self.assertEqual(dechunk(client.body()), (BODY[:-1], False))
        up.ends()
        self.assertEqual(dechunk(client.body()), (BODY, True))
        self.assertEqual(client.outcome, [True])

    def test_a_range_waits_for_its_bytes(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY), (500, 599))
        up.sends(BODY[:450])
        self.assertEqual(client.body(), b"")
        up.sends(BODY[450:550])
        self.assertEqual(client.body(), BODY[500:550])
        up.sends(BODY[550:700])
        self.assertEqual(client.body(), BODY[500:599])  # the range's last byte waits too
        up.sends(BODY[700:])
        up.ends()
        self.assertEqual(client.status(), 206)
        self.assertEqual(client.header(b"content-range"), b"bytes 500-599/1024")
        self.assertEqual(client.body(), BODY[500:600])
        self.assertEqual(client.outcome, [True])

    def test_a_range_of_unknown_length_waits_for_the_commit(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        client = self.h.client().served(self.cache, sha256(BODY), (1000, None))
        up.sends(BODY)
        self.assertEqual(client.transport.value(), b"")
        up.ends()
        self.assertEqual(client.status(), 206)
        self.assertEqual(client.header(b"content-range"), b"bytes 1000-1023/1024")
        self.assertEqual(client.body(), BODY[1000:])

    def test_head_of_a_fill(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client(method=b"HEAD").served(self.cache, sha256(BODY))
        self.assertEqual(client.header(b"content-length"), b"1024")
        self.assertEqual(client.body(), b"")
        self.assertEqual(client.outcome, [True])
        up.sends(BODY)
        up.ends()
        self.assertEqual(client.body(), b"")
