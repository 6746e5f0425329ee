"""Metrics (Prometheus), traces (OpenTelemetry) and structured logs (structlog).

Each library sits behind one module here; the rest of the code base talks to
these classes, so the service and the log never import a telemetry library.
"""

from pyproglog.observability.grpc_interceptor import ObservabilityInterceptor
from pyproglog.observability.logging import configure_logging
from pyproglog.observability.metrics import NodeMetrics
from pyproglog.observability.tracing import Tracing

__all__ = ["NodeMetrics", "ObservabilityInterceptor", "Tracing", "configure_logging"]
