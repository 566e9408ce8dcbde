"""Structured access logs: one JSON line per request on the ``corral.access`` logger.

Each line has ``method``, ``path`` (never the query string), ``status``, ``duration_ms``
(to the last byte of the answer), ``client`` (host:port) and ``prediction_id`` when the
request concerns one (from the path, or set by the app in ``scope[PREDICTION_ID]`` for a
new one). No header is ever logged, so neither is the Authorization header or its token.
The same fields ride on the record as ``record.access`` for handlers that want them.
The middleware that writes them is ``instrument.Instrument`` (with the metrics).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

log = logging.getLogger("corral.access")

PREDICTION_ID = "corral.prediction_id"
_encode = msgspec.json.Encoder().encode


def write(logger: logging.Logger, fields: dict[str, Any]) -> None:
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
