"""twistd's observer writes text or JSON lines, and a reload switches between them."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import build_config
from dockerproxy.logs import LogFormat
from tests.unit.fakes import lines_logged


class LogFormatTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stream = io.StringIO()
        self.observer = LogFormat("text", self.stream)
        self.log = Logger(namespace="dockerproxy.access", observer=self.observer)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def test_text_then_json_after_a_reload(self) -> None:
        self.log.info("GET {path} {status}", path="/v2/", status=401)
        self.observer.apply(build_config({"log_format": "json"}, {}))
        self.log.info("GET {path} {status}", path="/v2/", status=200)
        first, *_, last = self.lines()
        self.assertTrue(first.endswith("GET /v2/ 401"), first)
        event = json.loads(last)
        self.assertEqual((event["path"], event["status"]), ("/v2/", 200))
        self.assertEqual(event["log_namespace"], "dockerproxy.access")

    def test_the_switch_is_said_once_and_an_unchanged_format_says_nothing(self) -> None:
        logged = lines_logged(self)
        self.observer.apply(build_config({"log_format": "text"}, {}))
        self.assertEqual(logged, [])
        self.observer.apply(build_config({"log_format": "json"}, {}))
        self.observer.apply(build_config({"log_format": "json"}, {}))
        self.assertEqual(self.observer.format, "json")
        self.assertEqual(logged, ["reload: the log format is now json"])

    def test_json_back_to_text(self) -> None:
        observer = LogFormat("json", self.stream)
        log = Logger(observer=observer)
        log.info("one")
        observer.apply(build_config({}, {}))
        log.info("two")
        first, second = self.lines()
        self.assertEqual(json.loads(first)["log_format"], "one")
        self.assertTrue(second.endswith(" two"), second)
