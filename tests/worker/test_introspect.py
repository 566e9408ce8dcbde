"""worker/introspect.py answers as ``inspect`` does, for every kind of callable a target has."""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import typing

import pytest

import corral
from conftest import fixture_ref
from corral.worker import introspect


def plain(a, b=1, *args, c, d=2, **kw): ...
def annotated(a: int, b: str = "x", *, c: "typing.Optional[int]" = None) -> dict: ...
def posonly(a, b=2, /, c=3): ...
def only_kw(*, a: float = 1.5): ...
def star_only(*args: int): ...
def empty(): ...
def typed(a: typing.List[int], b: list[int], c: typing.Any = None) -> typing.Optional[str]: ...
def classes(a: inspect.Parameter, b: type = int) -> None: ...
async def coro(x): ...
async def agen(x):
    yield x
def gen(x):
    yield x
def doc_one():
    """One line.  """
def doc_many():
    """Summary here.

        Indented body.
    """
def doc_tabs():
    """\tTabbed

\tmore"""


def nested():
    def inner(): ...

    return inner


@functools.wraps(plain)
def wrapper(*a, **k): ...


class Base:
    def inherited_doc(self, x):
        """From the base."""

    @classmethod
    def inherited_class_doc(cls):
        """A classmethod's, from the base."""


class Target(Base):
    def method(self, x: int, y=2) -> int:
        """A method."""
        return x

    def inherited_doc(self, x): ...

    @classmethod
    def inherited_class_doc(cls): ...

    def undocumented(self): ...

    @staticmethod
    def static(a, b=3): ...

    @classmethod
    def klass(cls, a): ...

    def star(*args): ...

    async def acoro(self): ...

    def agen2(self):
        yield 1

    @property
    def prop(self):
        raise AssertionError("a property is never evaluated")

    count = 3
    builtin = len


CALLABLES = [plain, annotated, posonly, only_kw, star_only, empty, typed, classes, coro, agen,
             gen, doc_one, doc_many, doc_tabs, wrapper, functools.partial(plain, 1), len, print,
             Target().method, Target().inherited_doc, Target().static, Target().klass,
             Target.klass, Target().star, Target().acoro, Target().agen2, Target.method,
             Target().undocumented, Target.inherited_class_doc, Target().inherited_class_doc,
             Target.inherited_doc, nested()]


def _inspect_kind(fn):
    if inspect.isasyncgenfunction(fn):
        return "asyncgen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    return "generator" if inspect.isgeneratorfunction(fn) else "sync"


def _inspect_signature(fn):
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


@pytest.mark.parametrize("fn", CALLABLES, ids=lambda f: getattr(f, "__qualname__", repr(f)))
def test_same_answers_as_inspect(fn):
    assert introspect.kind(fn) == _inspect_kind(fn)
    assert introspect.signature_text(fn) == _inspect_signature(fn)
    assert introspect.doc_summary(fn) == (inspect.getdoc(fn) or "").split("\n\n")[0]
    assert introspect.isfunction(fn) == inspect.isfunction(fn)
    assert introspect.isbuiltin(fn) == inspect.isbuiltin(fn)
    assert introspect.ismethoddescriptor(fn) == inspect.ismethoddescriptor(fn)


@pytest.mark.parametrize("name", [n for n in dir(Target) if not n.startswith("__")])
def test_getattr_static_matches(name):
    t = Target()
    t.__dict__["count"] = 4  # an instance attribute shadows a plain class attribute
    assert introspect.getattr_static(t, name) is inspect.getattr_static(t, name)
    assert introspect.getattr_static(Target, name) is inspect.getattr_static(Target, name)


def test_a_stand_in_that_does_not_fit_falls_back_to_the_plain_import():
    """Should a later uuid ask the platform stand-in for more than ``system()``, msgspec is
    imported the plain way instead of failing the worker's start (_workerstart.py)."""
    import corral

    path = os.path.join(os.path.dirname(corral.__file__), "_workerstart.py")
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('ws', {path!r}); "
            "ws = importlib.util.module_from_spec(spec); spec.loader.exec_module(ws); "
            "del ws._PlatformStandIn.system; ws.import_msgspec(); "
            "import msgspec, platform, uuid; "
            "print(msgspec.json.decode(b'[1]'), platform.system() == platform.uname().system, "
            "uuid.uuid4().version)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["[1]", "True", "4"]


def test_a_started_worker_has_not_imported_what_it_does_not_need():
    """Through a whole start (keeper, handshake, loading a target whose methods are listed,
    undocumented ones too), not just the worker's imports."""
    with corral.Worker(fixture_ref("import_probe:Probe")) as w:
        assert w.call("loaded", list(TRIMMED)) == []
        methods = w.methods
    assert methods["inherited"].doc == "Documented on the base."
    assert methods["undocumented"].doc == ""


def test_a_property_shadowed_by_the_instance_stays_the_property():
    t = Target()
    t.__dict__["prop"] = 1
    assert introspect.getattr_static(t, "prop") is inspect.getattr_static(t, "prop")
    assert introspect.getattr_static(t, "missing", "d") == "d"


#: What a worker does without at start (issue 19, cold start): each is imported by something
#: the worker uses, or was, and costs 1-6 ms (``inspect``: ast, dis, tokenize).
TRIMMED = ("inspect", "typing_extensions", "dataclasses", "platform", "socket", "queue")


def test_a_worker_starts_without_inspect_or_typing_extensions():
    """The cold-start path (issue 19): a worker interpreter imports none of TRIMMED, and
    typing_extensions and platform still import, the real modules, for the target's own
    code afterwards."""
    code = (f"import sys, corral.worker.main; print(sorted(m for m in {TRIMMED!r} "
            "if m in sys.modules)); import typing_extensions, platform, uuid; "
            "print(typing_extensions.__name__, platform.system() == platform.uname().system, "
            "platform.__file__ is not None, uuid.uuid4().version)")
    out = subprocess.run([sys.executable, "-X", "corral-worker", "-c", code], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["[]", "typing_extensions", "True", "True", "4"]
    host = subprocess.run([sys.executable, "-c", "import sys, corral, msgspec; "
                           "print('typing_extensions' in sys.modules)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    import importlib.util

    # the host's imports are untouched: msgspec pulls typing_extensions in where it is installed
    assert host == str(importlib.util.find_spec("typing_extensions") is not None)
