"""Request bodies as JSON, strictly: ``NaN``, ``Infinity`` and ``-Infinity`` are refused.

Python's json module takes them by default, but they are not JSON: a record holding one
could not be answered as valid JSON later (and Starlette's encoder raises on it, a 500
after the prediction has started). They are refused up front, as 422.
"""

from __future__ import annotations

import json
from typing import Any


class NonFiniteNumber(ValueError):
    """The body holds NaN or an infinity."""


def _refuse(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not valid JSON (the body holds a non-finite number)")


_decoder = json.JSONDecoder(parse_constant=_refuse)


def strict_json(raw: bytes | str) -> Any:
    """``raw`` decoded; an empty body is None. Raises NonFiniteNumber for NaN/Infinity,
    ValueError (or UnicodeDecodeError, RecursionError) for anything else malformed."""
    if isinstance(raw, bytes):
        if not raw:
            return None
        raw = raw.decode("utf-8")
    return _decoder.decode(raw)
