"""Turn exceptions raised in the worker into ``ErrorInfo`` data for the host."""

from __future__ import annotations

from types import TracebackType

from ..protocol.messages import ErrorInfo

_MAX_CHAIN = 16
#: Sub-exceptions of a group that are described (the rest are counted in its message).
_MAX_GROUP = 64
#: Bytes of str/bytes arguments a builtin exception may carry to the host.
_MAX_ARGS = 1 << 16
_PLAIN = (str, bytes, int, float, bool, type(None))


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
    subs = None
    if isinstance(exc, BaseExceptionGroup) and _depth < _MAX_CHAIN:
        subs = [error_info(e, _depth=_depth + 1) for e in exc.exceptions[:_MAX_GROUP]]
    return ErrorInfo(type_name(exc), _message(exc), text, cause, context, kind, problems,
                     _plain_args(exc), subs)


def _plain_args(exc: BaseException) -> list | None:
    """The arguments of a builtin exception, if they are plain and small: the host builds
    its twin with them. A group's sub-exceptions travel on their own."""
    if type(exc).__module__ != "builtins":
        return None
    args = exc.args
    if isinstance(exc, BaseExceptionGroup):
        args = args[:1]
    elif isinstance(exc, OSError) and exc.filename is not None:
        # The file names are not in args: OSError's five-argument form carries them.
        args = (exc.errno, exc.strerror, exc.filename, None, exc.filename2)
    flat = [x for a in args for x in (a if type(a) is tuple else (a,))]
    if not args or not all(type(x) in _PLAIN for x in flat):
        return None  # (a SyntaxError's location is a tuple of plain values: kept)
    if sum(len(x) for x in flat if isinstance(x, (str, bytes))) > _MAX_ARGS:
        return None
    from ..protocol.values import to_wire

    return [to_wire(a) if type(a) is tuple else a for a in args]
