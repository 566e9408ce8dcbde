"""Turn exceptions raised in the worker into ``ErrorInfo`` data for the host."""

from __future__ import annotations

from types import TracebackType

from ..protocol.messages import ErrorInfo

_MAX_CHAIN = 16


def type_name(exc: BaseException) -> str:
    t = type(exc)
    return f"{t.__module__}.{t.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break error reporting
        return f"<unprintable {type(exc).__name__}>"


def error_info(exc: BaseException, *, skip_frames: int = 0, kind: str = "user",
               _depth: int = 0) -> ErrorInfo:
    """Describe ``exc`` with its traceback and cause chain. ``skip_frames`` drops corral's
    own frames from the top of the traceback so the user sees their code first."""
    tb: TracebackType | None = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    import traceback  # only when something failed: keeps worker start-up lean

    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # noqa: BLE001
        text = f"{type_name(exc)}: {_message(exc)}\n"
    cause = context = None
    if _depth < _MAX_CHAIN:
        if exc.__cause__ is not None:
            cause = error_info(exc.__cause__, _depth=_depth + 1)
        elif exc.__context__ is not None and not exc.__suppress_context__:
            context = error_info(exc.__context__, _depth=_depth + 1)
    problems = getattr(exc, "problems", None) if kind in ("arguments", "config") else None
    return ErrorInfo(type_name(exc), _message(exc), text, cause, context, kind, problems)
