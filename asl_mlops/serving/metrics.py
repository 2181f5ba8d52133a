"""Prometheus metrics of `asl-mlops serve`, summed over its worker processes.
"""

from __future__ import annotations

import os

#: Latency histogram buckets, seconds: single images take ~5-15 ms, batches of 1,024 a few hundred.
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0, 10.0)


# --- the request guard: metrics and the ASGI middleware -------------------------------------------

class Metrics:
    """The server's Prometheus metrics, written to prometheus_client's multiprocess files (one set per worker)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set: the server sets it before starting workers")
        # Not the global registry: the multiprocess collector reads the files, so this one only holds the
        # objects (and a second app in one process must not register the same names twice).
        own = CollectorRegistry()
        self.requests = Counter("asl_http_requests", "HTTP requests answered, by path and status code.",
                                ["method", "path", "status"], registry=own)
        self.latency = Histogram("asl_http_request_duration_seconds",
                                 "Seconds from a request's arrival to the end of its answer.", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=own)
        self.predictions = Counter("asl_predictions", "Predicted letters in 200 answers of /invocations.",
                                   ["letter"], registry=own)
        self.switches = Counter("asl_model_switches", "Times a worker switched to the version its model alias "
                                "moved to, by that version (each worker switches once per move).",
                                ["version"], registry=own)
        self.switch_failures = Counter("asl_model_switch_failures", "Versions a worker failed to load after its "
                                       "model alias moved to them (it kept serving the old one).", ["version"],
                                       registry=own)
        self.refusals = Counter("asl_guard_refusals", "Requests the guard refused before MLflow parsed them.",
                                ["reason"], registry=own)

    @staticmethod
    def exposition() -> tuple[bytes, str]:
        """The metrics of all workers in the text format, and its content type."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
