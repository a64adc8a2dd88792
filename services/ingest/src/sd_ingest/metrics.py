"""Prometheus metrics of the ingest service (served on its metrics port with the gRPC ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from sd_common.metrics import LATENCY_BUCKETS_S

EVENTS_RECEIVED = Counter(
    "sd_ingest_events_received_total",
    "Object-created records delivered by the event queue (redeliveries included)",
)
EVENTS_PROCESSED = Counter(
    "sd_ingest_events_processed_total",
    "Object-created records handled and acknowledged, by outcome "
    "(new, duplicate, stale, replaced, late_change, ignored)",
    ["outcome"],
)
EVENTS_DUPLICATE = Counter(
    "sd_ingest_events_duplicate_total",
    "Records for an object already recorded with the same ETag (redelivered or repeated events)",
)
EVENTS_DEAD_LETTERED = Counter(
    "sd_ingest_events_dead_lettered_total",
    "Queue messages set aside after failing too often, or unparseable",
    ["reason"],
)
SESSIONS = Gauge("sd_ingest_sessions", "Sessions in the catalog, by state", ["state"])
# What the processor autoscaler reads (the chart's KEDA ScaledObject): every replica reports the same
# catalog-wide number, so it is read with max(), not sum().
DISPATCH_BACKLOG = Gauge(
    "sd_ingest_dispatch_backlog",
    "Sessions that want a processor now, catalog-wide: VALIDATED (waiting) plus PROCESSING",
)
SESSION_TRANSITIONS = Counter(
    "sd_ingest_session_transitions_total", "Sessions moved into a state by this replica", ["state"],
)
DISPATCH_SECONDS = Histogram(
    "sd_ingest_dispatch_seconds",
    "Time from dispatch to the processor's final answer, by outcome (processed, retry, failed)",
    ["outcome"],
    buckets=(*LATENCY_BUCKETS_S, 300, 900, 1800, 3600),
)
VALIDATION_SECONDS = Histogram(
    "sd_ingest_validation_seconds", "Time to check a complete session against the session format",
    buckets=(*LATENCY_BUCKETS_S, 300, 900),
)
DISPATCH_IN_FLIGHT = Gauge("sd_ingest_dispatch_in_flight", "ProcessSession calls open on this replica")
DISPATCHES = Counter(
    "sd_ingest_dispatches_total",
    "ProcessSession calls by processor pod and how they ended (answered, retry, failed)", ["pod", "outcome"],
)
POD_IN_FLIGHT = Gauge("sd_ingest_processor_pod_in_flight", "Sessions this replica has on each processor pod", ["pod"])
PODS_PASSED = Counter(
    "sd_ingest_processor_pods_passed_total",
    "Times a processor pod was passed over for a backoff (unreachable, or its stream broke)", ["pod"],
)
