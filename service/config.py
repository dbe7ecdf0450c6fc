"""Settings from the environment, with working defaults (SPEC section 6)."""

from __future__ import annotations

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
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value
