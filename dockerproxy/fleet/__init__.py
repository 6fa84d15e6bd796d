"""A fleet of instances behind one load balancer, sharing state through Redis.

What instances share, beyond the blobs of the S3 tier (L{dockerproxy.mirror.s3}):

- tags with the time the upstream last named them, and manifests by digest
  (L{manifests}): an instance that misses locally asks the fleet before the upstream;
- a lock per blob fill (L{locks}): concurrent misses of one blob on N instances
  make one upstream GET, the others take the blob from S3 once it is there;
- the access records (L{records}): public repositories, refusals, content links.

Redis is a help, never a dependency: every call goes through L{client.FleetClient},
which bounds it in time and falls back to the instance's local behaviour when
Redis is down or slow (logged once, counted in the metrics). Nothing secret is
written there (credentials never leave the instance), and every key expires.
"""
