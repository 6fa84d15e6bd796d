"""Integration tests: start real processes (docker-registry, skopeo, the proxy) on 127.0.0.1."""
