"""`GET /metrics` (SPEC 5): the server's counters in Prometheus text format, through the
prometheus-client library.

- `quarry_http_requests_total{route, method, status}` and
  `quarry_http_request_duration_seconds{route}` (a histogram) for every answer, recorded by the
  access log (`service.access_log.AccessLog`), the one layer that sees every answer, the key
  gate's included. `route` is the path template the router matched (`/v1/contacts/{record_id}`),
  the template a /v1 path would match for an answer given before routing (a 401), or
  `unmatched`: never the raw path, so that a client cannot make a series per path it invents.
  `method` is one of the HTTP methods or `other`, for the same reason.
- `quarry_records_served_total{route}`: the records of search pages and lookups, and those an
  export streamed.
- `quarry_exports_running`: exports streaming now.
- `quarry_dataset_info{version}` (always 1) and `quarry_dataset_age_seconds`: the current
  snapshot and the time since its refresh, read at each scrape.
- `process_resident_memory_bytes` and the library's other `process_*` series, and
  `quarry_process_peak_resident_memory_bytes` (VmHWM).

Several worker processes: when `PROMETHEUS_MULTIPROC_DIR` names an empty folder before the
server starts, the library keeps every process's values in files there and each scrape adds
them up (`livesum` for the exports running: the processes alive). The process series then
describe the process that answers the scrape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from litestar import Litestar
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from .snapshots import NoSnapshot, ServingSnapshots

MEDIA_TYPE = "text/plain; version=0.0.4"  # Litestar adds "; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# Seconds. Searches take milliseconds; an export's answer lasts as long as its stream.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def route_template(router: Litestar, path: str) -> str | None:
    """The route template `path` routes to, whatever the method (a 401 is answered before
    routing, a 405 has no handler), or None for a path no route takes."""
    methods = ("GET",)
    for _ in range(2):
        try:
            _, handler, _, _, template = router.asgi_router.handle_routing(
                path=path, method=methods[0])  # type: ignore[arg-type]
        except MethodNotAllowedException as exc:  # route again with a method the path takes
            methods = [m.strip() for m in (exc.headers or {}).get("allow", "").split(",")
                       if m.strip() not in ("", "OPTIONS")] or ["POST"]
            continue
        except NotFoundException:
            return None
        # a mount (the static files) has no template of its own: its path is the route
        return template or min(handler.paths)
    return None


class Metrics:
    """The metrics of one app; `route_of(path)` gives the route template a path routes to, or
    None (`route_template`)."""

    def __init__(self, snapshots: ServingSnapshots, route_of: Callable[[str], str | None]):
        self.route_of = route_of
        self.registry = CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode the values live in files and a MultiProcessCollector reads
        # them all; the metric objects then must not be registered too.
        own = None if self.multiprocess else self.registry
        if self.multiprocess:
            MultiProcessCollector(self.registry)
        self.requests = Counter("quarry_http_requests", "HTTP answers, by route and status",
                                ["route", "method", "status"], registry=own)
        self.latency = Histogram("quarry_http_request_duration_seconds",
                                 "Time from a request to the end of its answer, by route",
                                 ["route"], buckets=BUCKETS, registry=own)
        self.records = Counter("quarry_records_served",
                               "Records answered by searches and lookups, and streamed by "
                               "exports", ["route"], registry=own)
        self.exports = Gauge("quarry_exports_running", "Exports streaming now", registry=own,
                             multiprocess_mode="livesum")
        ProcessCollector(registry=self.registry)
        self.registry.register(_SnapshotCollector(snapshots))

    def observe(self, scope: dict, status: int, seconds: float, rows: int | None) -> None:
        """One answer, as the access log saw it."""
        route = scope.get("path_template") or self.route_of(scope.get("path", "")) or UNMATCHED
        method = scope.get("method", "")
        self.requests.labels(route, method if method in METHODS else "other", str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if rows:
            self.records.labels(route).inc(rows)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        if self.multiprocess:  # the live gauges of this process no longer count
            mark_process_dead(os.getpid())


class _SnapshotCollector(Collector):
    """The current snapshot's version and age, and the peak memory, read when scraped."""

    def __init__(self, snapshots: ServingSnapshots):
        self.snapshots = snapshots

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            snapshot = self.snapshots.current()
        except NoSnapshot:
            snapshot = None
        if snapshot is not None:
            info = GaugeMetricFamily("quarry_dataset_info", "The current snapshot (always 1)",
                                     labels=["version"])
            info.add_metric([snapshot.version], 1)
            yield info
            created = datetime.strptime(snapshot.manifest["created_at"],
                                        "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            yield GaugeMetricFamily("quarry_dataset_age_seconds",
                                    "Seconds since the current snapshot was refreshed",
                                    value=max(0.0, time.time() - created.timestamp()))
        peak = _peak_resident_bytes()
        if peak is not None:
            yield GaugeMetricFamily("quarry_process_peak_resident_memory_bytes",
                                    "The most resident memory this process has had (VmHWM)",
                                    value=peak)


def _peak_resident_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
