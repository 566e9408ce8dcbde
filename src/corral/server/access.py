"""Structured access logs: one JSON line per request on the ``corral.access`` logger.

Each line has ``method``, ``path`` (never the query string), ``status``, ``duration_ms``
(to the last byte of the answer), ``client`` (host:port) and ``prediction_id`` when the
request concerns one (from the path, or set by the app in ``scope[PREDICTION_ID]`` for a
new one). No header is ever logged, so neither is the Authorization header or its token.
The same fields ride on the record as ``record.access`` for handlers that want them.
The middleware that writes them is ``instrument.Instrument`` (with the metrics).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import msgspec

log = logging.getLogger("corral.access")

PREDICTION_ID = "corral.prediction_id"
_encode = msgspec.json.Encoder().encode


class Lines(logging.Handler):
    """``corral serve``'s own handler for ``corral.access``: each line as it is, on stderr,
    the lines of one event-loop iteration in one write. While it is the logger's only
    handler, ``write`` hands it the encoded line without a LogRecord: a record, the
    handler's lock and a flush per request were ~8% of a no-op prediction's server CPU."""

    def __init__(self, stream: Any = None):
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.line(record.getMessage())

    def line(self, text: str) -> None:
        self._waiting.append(text)
        if len(self._waiting) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop here: at once
                self.flush()

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        if waiting:
            try:
                self.stream.write("\n".join(waiting) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: nowhere to log to
                pass


def write(logger: logging.Logger, fields: dict[str, Any]) -> None:
    handlers = logger.handlers
    if len(handlers) == 1 and type(handlers[0]) is Lines and not logger.propagate \
            and not logger.filters and not handlers[0].filters \
            and handlers[0].level <= logging.INFO:
        handlers[0].line(_encode(fields).decode())
        return
    logger.info(_encode(fields).decode(), extra={"access": fields})


def entry(scope: dict, status: int, seconds: float) -> dict[str, Any]:
    client = scope.get("client")
    pid = scope.get(PREDICTION_ID) or (scope.get("path_params") or {}).get("prediction_id")
    fields: dict[str, Any] = {
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": f"{client[0]}:{client[1]}" if client else None,
    }
    if pid is not None:
        fields["prediction_id"] = pid
    return fields
