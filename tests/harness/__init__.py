"""Integration-test harness: real upstream registries, a token server and a CDN, all on loopback.

Every server runs as a separate process in its own process group (see ``procs``) so that a
failing or interrupted test never leaves anything listening.
"""
