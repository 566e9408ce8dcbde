"""Outputs as JSON: the helper lives in ``corral._jsonable`` (the CLI needs it without
starlette); re-exported here for the server."""

from .._jsonable import data_url, jsonable

__all__ = ["data_url", "jsonable"]
