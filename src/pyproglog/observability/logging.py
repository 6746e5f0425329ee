"""Structured logs: one pipeline (structlog) for our loggers and every library's.

The code base logs through the standard library (`logging.getLogger("pyproglog.…")`),
as do grpc, uvicorn and casbin. `configure_logging` puts a single handler on
the root logger whose formatter is structlog's ProcessorFormatter, so every
record, ours or a library's, gets the same fields and rendering:

* `timestamp` (ISO 8601, UTC), `level`, `event` (the message), `logger`;
* `node` (the node's name), and whatever the code bound for the current task
  (the gRPC interceptor binds `method`);
* `trace_id` and `span_id` when the line is written inside a sampled trace;
* anything passed as `extra={...}` (the request log's `code`, `peer`,
  `subject`, `offset`, `duration_ms`).

Rendering: `console` is for people (aligned, coloured on a terminal), `json`
is one JSON object per line, `auto` picks console on a terminal and JSON
otherwise. Logs go to stderr; stdout belongs to the command's own output
(the "proglog serving: ..." readiness line).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from pyproglog.observability.tracing import trace_ids

# Libraries that are chatty at INFO about things an operator of a log service
# does not need (casbin logs every enforce decision when its logging is on).
_QUIET_LOGGERS = {"casbin": logging.WARNING}

# grpc.aio logs, at error level with a traceback, every response stream whose
# client went away while a message was being sent (cancelled, disconnected,
# deadline): the send fails in grpc's core, outside any handler. A client
# leaving a stream is normal, so it is a debug line here.
_GRPC_AIO_LOGGER = "grpc._cython.cygrpc"
_CLIENT_GONE_PREFIX = "ExecuteBatchError raised in core"


class _ClientGoneFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not str(record.msg).startswith(_CLIENT_GONE_PREFIX):
            return True
        method = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "stream ended: the client went away during a send [%s]"
        record.args = (method,)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class _Ours(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so a second call replaces it."""


def _add_node(node: str) -> Processor:
    def add_node(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("node", node)
        return event_dict

    return add_node


def add_trace_ids(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    ids = trace_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def _drop_color_message(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes an ANSI-coloured copy of each message as an `extra`.
    event_dict.pop("color_message", None)
    return event_dict


def resolve_format(fmt: str, stream: TextIO) -> Literal["console", "json"]:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be auto, console or json, got {fmt!r}")
    return "console" if fmt == "console" else "json"


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    node: str | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Route all logging of this process through one structlog pipeline to `stream` (stderr)."""
    out = sys.stderr if stream is None else stream
    rendering = resolve_format(fmt, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if node:
        shared.append(_add_node(node))
    shared.append(add_trace_ids)

    renderer: Processor
    if rendering == "json":
        final: list[Processor] = [structlog.processors.format_exc_info]
        renderer = structlog.processors.JSONRenderer()
    else:
        final = []
        isatty = getattr(out, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(colors=isatty is not None and isatty())

    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from `logging` calls (ours and libraries'): `extra=` fields too.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    handler = _Ours(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Ours)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
    logging.captureWarnings(True)
    grpc_aio = logging.getLogger(_GRPC_AIO_LOGGER)
    for old_filter in [f for f in grpc_aio.filters if isinstance(f, _ClientGoneFilter)]:
        grpc_aio.removeFilter(old_filter)
    grpc_aio.addFilter(_ClientGoneFilter())

    # structlog's own loggers (structlog.get_logger()) end in the same handler.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def level_number(name: str) -> int:
    """`"info"` -> logging.INFO."""
    value = logging.getLevelName(name.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}")
    return value
