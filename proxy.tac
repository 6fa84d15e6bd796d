"""Run dockerproxy with ``twistd -ny proxy.tac``; DOCKERPROXY_CONFIG names its TOML config."""

import sys

from twisted.application import service
from twisted.internet import reactor

from dockerproxy.config import ConfigError
from dockerproxy.tap import config_from_environment, service_for

try:
    config = config_from_environment()
except ConfigError as e:
    sys.stderr.write(f"dockerproxy: {e}\n")
    raise SystemExit(2) from None

application = service.Application("dockerproxy")
# Also selects JSON logging on the application when the config asks for it.
# SIGHUP reads DOCKERPROXY_CONFIG's file again.
service_for(config, reactor, load=config_from_environment).setServiceParent(application)
