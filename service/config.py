"""Settings from the environment, with working defaults (SPEC section 6)."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .accounts import MAX_KEYS_PER_USER


class ConfigError(Exception):
    """A one-line reason why an environment variable cannot be used."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db_path: Path
    rate_limit: float
    query_timeout_ms: int
    duckdb_threads: int
    duckdb_memory_limit: str
    refresh_memory_limit: str
    keep_snapshots: int
    trusted_proxies: tuple[str, ...]  # empty: no forwarded header is believed
    header_timeout_s: float
    keep_alive_s: float
    max_connections: int
    max_keys_per_user: int
    max_exports_per_user: int
    max_exports: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        data_dir = Path(environ.get("QUARRY_DATA_DIR") or "data").resolve()
        db_path = Path(environ.get("QUARRY_DB") or data_dir / "quarry.db").resolve()
        return cls(
            data_dir=data_dir,
            db_path=db_path,
            rate_limit=_number(environ, "QUARRY_RATE_LIMIT", "20", float, minimum=0.001),
            query_timeout_ms=_number(environ, "QUARRY_QUERY_TIMEOUT_MS", "5000", int, minimum=1),
            duckdb_threads=_number(
                environ, "QUARRY_DUCKDB_THREADS", str(os.cpu_count() or 2), int, minimum=1
            ),
            duckdb_memory_limit=environ.get("QUARRY_DUCKDB_MEMORY_LIMIT") or "1GB",
            refresh_memory_limit=environ.get("QUARRY_REFRESH_MEMORY_LIMIT") or "3GB",
            keep_snapshots=_number(environ, "QUARRY_KEEP_SNAPSHOTS", "3", int, minimum=1),
            trusted_proxies=_networks(environ, "QUARRY_TRUSTED_PROXIES"),
            header_timeout_s=_number(
                environ, "QUARRY_HEADER_TIMEOUT_S", "10", float, minimum=0.1),
            keep_alive_s=_number(environ, "QUARRY_KEEP_ALIVE_S", "5", float, minimum=0.1),
            max_connections=_number(environ, "QUARRY_MAX_CONNECTIONS", "1000", int, minimum=1),
            max_keys_per_user=_number(environ, "QUARRY_MAX_KEYS_PER_USER",
                                      str(MAX_KEYS_PER_USER), int, minimum=1),
            max_exports_per_user=_number(environ, "QUARRY_MAX_EXPORTS_PER_USER", "4", int,
                                         minimum=1),
            max_exports=_number(environ, "QUARRY_MAX_EXPORTS", "8", int, minimum=1),
        )


def _number(environ: Mapping[str, str], name: str, default: str, kind: type, minimum: float):
    raw = environ.get(name) or default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__} number, got {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf"
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _networks(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks, each checked here and written the one way
    uvicorn reads it: uvicorn itself would take a typo, or 10.0.0.1/8, as a literal host name
    that never matches, and so silently believe no proxy."""
    raw = environ.get(name) or ""
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name} must list IP addresses or networks (CIDR) separated by "
                              f"commas, got {item!r}") from None
        networks.append(str(network.network_address) if network.num_addresses == 1
                        else str(network))
    return tuple(networks)
