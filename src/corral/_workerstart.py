"""Import-time trims that apply only inside a worker process (issue 19: cold start).

The host starts every worker as ``python -X corral-worker -m corral.worker`` (host/process.py),
so ``sys._xoptions`` says which interpreter this is before anything is imported: the host's
own imports are never touched.
"""

from __future__ import annotations

import os
import sys
import types

#: The ``-X`` option that marks a worker interpreter.
XOPTION = "corral-worker"


def in_worker() -> bool:
    return XOPTION in sys._xoptions


def import_msgspec() -> None:
    """Import msgspec without what it drags in and never uses here: about 10 ms of a
    60-70 ms start on these machines.

    - typing_extensions (and the ``inspect`` it pulls in): msgspec takes only
      ``get_type_hints``, ``Required`` and ``NotRequired`` from it, and falls back to
      ``typing``'s own, which has all three from Python 3.11. typing_extensions stays
      importable, for the target's own code, as soon as msgspec is in.
    - ``platform`` (its dozen regexes compiled at import: ~2.7 ms): msgspec's C core imports
      ``uuid``, which on Python 3.11 imports ``platform`` only to call ``platform.system()``
      once, at import. A stand-in answers that one call (``os.uname().sysname``, which is
      what ``platform.system()`` returns on Linux) and is gone from ``sys.modules`` again
      straight after, so that the target's ``import platform`` gets the real module.
    Should either stand-in ever not fit (a later uuid asks it for more), msgspec is
    imported again the plain way."""
    if sys.version_info < (3, 11) or "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    stand_ins: dict[str, object] = {"typing_extensions": None}  # import raises ImportError
    if sys.platform == "linux" and "uuid" not in sys.modules and "platform" not in sys.modules:
        stand_ins["platform"] = _PlatformStandIn("platform")
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        import msgspec  # noqa: F401
    except Exception:  # noqa: BLE001 - a stand-in did not fit: the plain import, below
        for name in [n for n in sys.modules if n == "msgspec" or n.startswith("msgspec.")]:
            del sys.modules[name]
        sys.modules.pop("uuid", None)
    finally:
        for name in stand_ins:
            del sys.modules[name]
    import msgspec  # noqa: F401, F811 - (a no-op when the trimmed import worked)


class _PlatformStandIn(types.ModuleType):
    """Answers the one question uuid asks ``platform`` at import on Python 3.11."""

    @staticmethod
    def system() -> str:
        return os.uname().sysname
