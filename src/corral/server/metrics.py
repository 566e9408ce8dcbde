"""Prometheus metrics, in a registry of the app's own (two apps in one process never
share counters): requests and their latency per route, and the runner's queue depth, busy
slots and worker restarts read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from ..host.caller import Runner

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RunnerCollector:
    def __init__(self, runner: Runner):
        self.runner = runner

    def collect(self) -> Any:
        queued = busy = restarts = 0
        slots = self.runner.slots
        try:
            usage = self.runner.usage()
        except Exception:  # noqa: BLE001 - a scrape never fails for it
            usage = None
        if usage is not None:
            queued, busy, restarts = usage.queued, usage.busy, usage.restarts
        yield GaugeMetricFamily("corral_queue_depth", "Predictions waiting for a slot",
                                value=queued)
        yield GaugeMetricFamily("corral_busy_slots", "Slots running a prediction", value=busy)
        yield GaugeMetricFamily("corral_slots", "Slots of all workers", value=slots)
        yield CounterMetricFamily("corral_worker_restarts", "Worker restarts after crashes",
                                  value=restarts)


class Metrics:
    def __init__(self, runner: Runner):
        self.registry = CollectorRegistry()
        self.requests = Counter("corral_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("corral_http_request_duration_seconds",
                                 "Time to answer an HTTP request (to its first byte for "
                                 "streams)", ["method", "route"], registry=self.registry)
        self.registry.register(RunnerCollector(runner))
        # labels() parses its arguments on every call; routes and methods are few.
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}

    def observe(self, method: str, route: str, seconds: float) -> None:
        child = self._latency.get((method, route))
        if child is None:
            child = self._latency[method, route] = self.latency.labels(method, route)
        child.observe(seconds)

    def count(self, method: str, route: str, status: int) -> None:
        child = self._requests.get((method, route, status))
        if child is None:
            child = self._requests[method, route, status] = self.requests.labels(
                method, route, str(status))
        child.inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def route_of(scope: dict) -> str:
    """The route template that answered (set by the router), never the raw path: ids
    would make a label per prediction."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if path else "other"
