"""Structured logs: JSON lines in the cluster, readable key=value lines locally."""

from __future__ import annotations

import logging
import sys

import structlog

from sd_common.tracing import log_processor as tag_span_with_session


def configure_logging(service: str, fmt: str = "console", level: str = "INFO") -> structlog.stdlib.BoundLogger:
    """Configures structlog and the stdlib root logger once; returns a logger bound to the service."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        tag_span_with_session,  # a line about a session puts its id on the open span (tracing on)
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the stdlib (uvicorn, grpc, botocore) land in the same stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("botocore").setLevel(max(logging.getLevelName(level), logging.WARNING))
    return structlog.get_logger(service=service)
