"""The admin side: numbers an operator can watch, on a listener of its own.

C{--admin-listen} serves C{/metrics} (Prometheus, L{metrics} and
L{collectors}), C{/healthz} and C{/readyz} (L{health}), and C{/status} and
C{/status.json} (L{status}, L{statuspage}, L{charts}: the last 24 hours from
L{history}, kept on disk by L{historyfile}). L{pages} is its resource tree and
Site, L{service} builds it all from the settings. Nothing below the wiring
imports this package: the upstream client and the S3 store report through
L{dockerproxy.meters}, requests through the access log's observers.
"""
