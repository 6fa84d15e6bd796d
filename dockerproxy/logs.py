"""twistd's log observer, in the format the configuration names (text or json).

twistd asks the application for its L{ILogObserver} once, before the proxy
starts, and keeps it: to change the format on a reload, the observer it is
given is this one, which writes each event through the observer of the
current format. Both write to the standard output as it was when the service
was built (twistd sends C{sys.stdout} itself to the log once logging starts).
"""

from __future__ import annotations

import sys
from typing import TextIO

from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from dockerproxy.config import LOG_FORMATS, Config

log = Logger()


@implementer(ILogObserver)
class LogFormat:
    """Writes events as text or as one JSON object a line; L{apply} switches."""

    def __init__(self, log_format: str, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.stdout
        self.observers: dict[str, ILogObserver] = {
            "text": textFileLogObserver(stream),
            "json": jsonFileLogObserver(stream, recordSeparator=""),
        }
        assert set(self.observers) == set(LOG_FORMATS)
        self.format = log_format

    def __call__(self, event: LogEvent) -> None:
        self.observers[self.format](event)

    def apply(self, config: Config) -> None:
        if config.log_format != self.format:
            log.info("reload: the log format is now {chosen}", chosen=config.log_format)
            self.format = config.log_format
