"""Tag lists as the client named the repository (L{dockerproxy.taglist}): the body and the
paging links say the client's name and come back to the proxy."""

from __future__ import annotations

from tests.unit.proxysite import HUB_HOST, ProxyTestCase, reply


class TagListLinkTests(ProxyTestCase):
    def test_paging_links_name_the_repository_as_the_client_does(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/tags/list",
            reply(
                200,
                b'{"name":"library/busybox","tags":["1"]}',
                content_type="application/json",
                link='</v2/library/busybox/tags/list?last=1&n=1>; rel="next"',
            ),
        )
        response = self.fetch("GET", "/v2/busybox/tags/list?n=1")
        self.assertEqual(response.header("link"), '</v2/busybox/tags/list?last=1&n=1>; rel="next"')

    def test_an_absolute_link_comes_back_to_the_proxy(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/tags/list",
            reply(
                200,
                b'{"name":"library/busybox","tags":["1"]}',
                content_type="application/json",
                link=f'<https://{HUB_HOST}/v2/library/busybox/tags/list?last=1&n=1>; rel="next"',
            ),
        )
        response = self.fetch("GET", "/v2/busybox/tags/list?n=1")
        self.assertEqual(response.header("link"), '</v2/busybox/tags/list?last=1&n=1>; rel="next"')
        self.assertNotIn(HUB_HOST, response.raw.decode("latin-1"))

    def test_the_body_names_the_repository_as_the_client_does(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/tags/list",
            reply(
                200, b'{"name":"library/busybox","tags":["1","2"]}', content_type="application/json"
            ),
        )
        response = self.fetch("GET", "/v2/busybox/tags/list")
        self.assertEqual(response.json(), {"name": "busybox", "tags": ["1", "2"]})
        self.assertEqual(response.header("content-type"), "application/json")
        head = self.fetch("HEAD", "/v2/busybox/tags/list")
        self.assertEqual((head.status, head.body), (200, b""))

    def test_links_elsewhere_are_dropped_and_ns_is_kept(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/tags/list",
            reply(
                200,
                b'{"name":"library/busybox","tags":[]}',
                content_type="application/json",
                link='<https://evil.test/x>; rel="next", '
                '</v2/library/busybox/tags/list?last=b&n=2&x=y>; rel="next"',
            ),
        )
        response = self.fetch("GET", "/v2/busybox/tags/list?ns=docker.io")
        self.assertEqual(
            response.header("link"), '</v2/busybox/tags/list?last=b&n=2&ns=docker.io>; rel="next"'
        )
