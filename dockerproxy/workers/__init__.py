"""Several processes serving the same listeners (C{--workers N}).

With more than one worker the process twistd starts is a supervisor
(L{dockerproxy.workers.supervisor}): it opens every listener once
(L{dockerproxy.workers.opening}), then runs N workers, each the whole proxy
(C{python -m dockerproxy.workers}, the same options) accepting on the sockets it
was handed (L{dockerproxy.workers.adoption}). The kernel spreads the connections
over the workers that accept on a socket; they share the cache directory.
"""
