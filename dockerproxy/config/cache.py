"""The cache's settings: C{[cache]}, C{[cache.s3]} and the C{--cache-*} options."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from dockerproxy.cachedir import default_cache_dir
from dockerproxy.config.checks import (
    ConfigError,
    check_bool,
    check_seconds,
    check_size,
    check_table,
    check_url,
)
from dockerproxy.config.settings import DEFAULT_S3_REGION, MIN_PART_SIZE, CacheConfig, S3Config


def cache_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> CacheConfig:
    table = toml.get("cache", {})
    table = check_table(
        "cache",
        table,
        {
            "enabled",
            "dir",
            "max_size",
            "max_blob_size",
            "tag_ttl",
            "stale_max_age",
            "s3",
        },
    )
    enabled = check_bool("cache.enabled", table.get("enabled", True))
    if cli.get("cache_enabled") is False:
        enabled = False
    directory = table.get("dir")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ConfigError("cache.dir", "must be a directory path")
    if cli.get("cache_dir"):
        directory = cli["cache_dir"]
    max_size: int | None = CacheConfig.max_size
    if "max_size" in table:
        max_size = check_size("cache.max_size", table["max_size"])
    if cli.get("cache_max_size") is not None:
        max_size = check_size("--cache-max-size", cli["cache_max_size"])
    max_blob_size = CacheConfig.max_blob_size
    if "max_blob_size" in table:
        max_blob_size = check_size("cache.max_blob_size", table["max_blob_size"])
    if cli.get("max_blob_size") is not None:
        max_blob_size = check_size("--max-blob-size", cli["max_blob_size"])
    tag_ttl = _seconds_setting(table, cli, "tag_ttl", CacheConfig.tag_ttl)
    stale = _seconds_setting(table, cli, "stale_max_age", CacheConfig.stale_max_age)
    s3 = _cache_s3(table.get("s3", {}), cli)
    if s3 is not None and not enabled:
        raise ConfigError(
            "--no-cache" if cli.get("cache_enabled") is False else "cache.enabled",
            "the S3 cache needs the local cache, which stages its uploads",
        )
    return CacheConfig(
        directory=(directory or default_cache_dir()) if enabled else None,
        max_size=max_size,
        max_blob_size=max_blob_size,
        tag_ttl=tag_ttl,
        stale_max_age=stale,
        s3=s3,
    )


_S3_KEYS = {
    "endpoint",
    "bucket",
    "prefix",
    "region",
    "access_key_id",
    "secret_access_key",
    "redirect",
    "part_size",
}


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


_PREFIX_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


_REGION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _cache_s3(
    table: Any, cli: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> S3Config | None:
    """[cache.s3] and --cache-s3-*: the shared S3 tier, None without endpoint and bucket.

    Credentials come from the file, else from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    (and AWS_SESSION_TOKEN); the region from the file or option, else AWS_REGION or
    AWS_DEFAULT_REGION, else us-east-1.
    """
    table = check_table("cache.s3", table, _S3_KEYS)
    given: dict[str, tuple[str, Any]] = {}  # name -> (key as the operator wrote it, value)
    for name in ("endpoint", "bucket", "prefix", "region"):
        if cli.get(f"cache_s3_{name}") is not None:
            given[name] = (f"--cache-s3-{name}", cli[f"cache_s3_{name}"])
        elif name in table:
            given[name] = (f"cache.s3.{name}", table[name])
    if "endpoint" not in given and "bucket" not in given:
        if table or cli.get("cache_s3_redirect"):
            raise ConfigError("--cache-s3-endpoint", "is required to use an S3 cache")
        return None
    for name, other in (("endpoint", "bucket"), ("bucket", "endpoint")):
        if name not in given:
            other_key = given[other][0]
            key = f"--cache-s3-{name}" if other_key.startswith("--") else f"cache.s3.{name}"
            raise ConfigError(key, f"is required with {other_key}")
    endpoint_key, endpoint = given["endpoint"]
    endpoint = check_url(endpoint_key, endpoint)
    bucket_key, bucket = given["bucket"]
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(bucket_key, f"must be an S3 bucket name, got {bucket!r}")
    prefix_key, prefix = given.get("prefix", ("", ""))
    prefix = prefix.strip("/") if isinstance(prefix, str) else prefix
    if prefix and (not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix)):
        raise ConfigError(
            prefix_key,
            "must be /-separated names of letters, digits, '.', '_' "
            f"and '-', got {given['prefix'][1]!r}",
        )
    region_key, region = given.get(
        "region",
        (
            "AWS_REGION",
            environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_S3_REGION,
        ),
    )
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise ConfigError(region_key, f"must be a region name such as us-east-1, got {region!r}")
    key_id, secret, token = table.get("access_key_id"), table.get("secret_access_key"), None
    for name, value in (("access_key_id", key_id), ("secret_access_key", secret)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"cache.s3.{name}", "must be a non-empty string")
    if (key_id is None) != (secret is None):
        missing = "access_key_id" if key_id is None else "secret_access_key"
        raise ConfigError(f"cache.s3.{missing}", "is required with the other credential")
    if key_id is None:
        key_id = environ.get("AWS_ACCESS_KEY_ID")
        secret = environ.get("AWS_SECRET_ACCESS_KEY")
        token = environ.get("AWS_SESSION_TOKEN") or None
        if not key_id or not secret:
            raise ConfigError(
                endpoint_key,
                "needs credentials: cache.s3.access_key_id and "
                "secret_access_key, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the environment",
            )
    redirect = check_bool("cache.s3.redirect", table.get("redirect", False))
    if cli.get("cache_s3_redirect"):
        redirect = True
    part_size = S3Config.part_size
    if "part_size" in table:
        part_size = check_size("cache.s3.part_size", table["part_size"])
        if part_size < MIN_PART_SIZE:
            raise ConfigError(
                "cache.s3.part_size",
                f"must be at least 5MiB (S3's smallest part), got {table['part_size']!r}",
            )
    return S3Config(
        endpoint=endpoint,
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        region=region,
        access_key_id=key_id,
        secret_access_key=secret or "",
        session_token=token,
        redirect=redirect,
        part_size=part_size,
    )


def _seconds_setting(
    table: Mapping[str, Any], cli: Mapping[str, Any], name: str, default: float
) -> float:
    value = default
    if name in table:
        value = check_seconds(f"cache.{name}", table[name], maximum=365 * 86400)
    if cli.get(name) is not None:
        value = check_seconds(f"--{name.replace('_', '-')}", cli[name], maximum=365 * 86400)
    return value
