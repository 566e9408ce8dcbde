"""Import-time trims that apply only inside a worker process (issue 19: cold start).

The host starts every worker as ``python -X corral-worker -m corral.worker`` (host/process.py),
so ``sys._xoptions`` says which interpreter this is before anything is imported: the host's
own imports are never touched.
"""

from __future__ import annotations

import sys

#: The ``-X`` option that marks a worker interpreter.
XOPTION = "corral-worker"


def in_worker() -> bool:
    return XOPTION in sys._xoptions


def import_msgspec() -> None:
    """Import msgspec without typing_extensions (and the ``inspect`` it pulls in): about
    8 ms of a 40-50 ms start. msgspec takes only ``get_type_hints``, ``Required`` and
    ``NotRequired`` from it, and falls back to ``typing``'s own, which has all three from
    Python 3.11. Nothing else is affected: typing_extensions stays importable, for the
    target's own code, as soon as msgspec is in."""
    if sys.version_info < (3, 11) or "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import msgspec  # noqa: F401
    finally:
        del sys.modules["typing_extensions"]
