"""The ``inferlet`` module as a PIE program sees it inside a corral worker.

``from inferlet import session`` works as under PIE: ``session.send(text)`` emits a
``message`` event, ``await session.receive()`` returns the next ``signal_process`` message,
``await session.receive_file()`` the next ``transfer_file`` payload (files sent before the
program asks are kept, not dropped), ``session.send_file(data, name=None)`` sends a ``file``
to the client. PIE's LLM modules (``model``, ``chat``, ``tokenizer``, ...) exist, so that a
program imports cleanly, but using any of them raises :class:`NoLLMEngine`: corral runs the
program's Python, not an inference engine.

The guest (guest.py) installs this module as ``sys.modules["inferlet"]`` and binds
``session`` to the running program.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["NoLLMEngine", "Session", "session"]

#: PIE's inferlet SDK modules that need its LLM engine.
LLM_MODULES = ("model", "chat", "tokenizer", "grammar", "context", "sampler", "forward",
               "runtime", "adapter", "kvcache", "generate", "messages", "mcp", "zo")


class NoLLMEngine(RuntimeError):
    """A program used a part of PIE's inferlet SDK that needs an LLM engine."""


def _no_engine(what: str) -> NoLLMEngine:
    return NoLLMEngine(
        f"inferlet.{what}: corral runs PIE programs as Python processes and has no LLM "
        "engine; only inferlet.session (send, receive, receive_file, send_file) works here")


class _EngineModule(types.ModuleType):
    """A module whose every attribute needs the LLM engine."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise _no_engine(f"{self.__name__.split('.', 1)[-1]}.{name}")


class Session:
    """The running program's link to its client (bound by the guest)."""

    def __init__(self) -> None:
        self._guest: Any = None

    def _bound(self) -> Any:
        if self._guest is None:
            raise RuntimeError("inferlet.session is only usable inside a running program")
        return self._guest

    def send(self, message: Any) -> None:
        """Send ``message`` (made a str) to the client as a ``message`` event."""
        self._bound().emit("message", message if isinstance(message, str) else str(message))

    async def receive(self) -> str:
        """The next message the client sent with ``signal_process``."""
        return await self._bound().signals.get()

    async def receive_file(self) -> bytes:
        """The next file the client sent with ``transfer_file`` (checked against its hash)."""
        return await self._bound().files.get()

    def send_file(self, data: bytes | bytearray | memoryview, name: str | None = None) -> None:
        """Send ``data`` to the client as a ``file`` (``name`` is a suggestion it may use)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_file takes bytes, not {type(data).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"send_file's name must be a str or None, not {type(name).__name__}")
        self._bound().emit_file(bytes(data), name)

    def send_file_as(self, data: bytes | bytearray | memoryview, name: str) -> None:
        """``send_file`` with a name."""
        self.send_file(data, name)


session = Session()


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise _no_engine(name)


def install() -> None:
    """Make ``import inferlet`` (and ``import inferlet.chat`` ...) find this module."""
    me = sys.modules[__name__]
    sys.modules["inferlet"] = me
    for sub in LLM_MODULES:
        module = _EngineModule(f"inferlet.{sub}")
        setattr(me, sub, module)
        sys.modules[f"inferlet.{sub}"] = module
