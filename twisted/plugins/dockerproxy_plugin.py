"""Makes C{twistd dockerproxy} available; the real work is in L{dockerproxy.tap}."""

from twisted.application.service import ServiceMaker

dockerproxy = ServiceMaker(
    "dockerproxy",
    "dockerproxy.tap",
    "A Docker / OCI registry pull proxy and pull-through mirror.",
    "dockerproxy",
)
