"""A worker: C{python -m dockerproxy.workers [options]} runs C{twistd --nodaemon --pidfile=
dockerproxy [options]} in this process, started by the supervisor with the sockets it
hands over (L{dockerproxy.workers.adoption}). The options are the supervisor's own,
already checked."""

import sys

from twisted.scripts.twistd import ServerOptions, runApp

options = ServerOptions()
options.parseOptions(["--nodaemon", "--pidfile=", "dockerproxy", *sys.argv[1:]])
runApp(options)
