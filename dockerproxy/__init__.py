"""dockerproxy: a Docker / OCI registry pull proxy and pull-through mirror on Twisted."""

__version__ = "0.1.0"
