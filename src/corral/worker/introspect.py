"""What the worker needs to know about a target's methods at start, without ``inspect``.

``inspect`` and what it imports (ast, dis, tokenize, linecache) cost about 5 ms of a worker's
~40 ms cold start, and every start lists the target's methods. The plain cases (functions,
bound methods of functions) are answered here from the code object, exactly as ``inspect``
would answer them (tests/worker/test_introspect.py compares the two over a corpus); anything
else (builtins, ``functools.partial``, ``__wrapped__``, ``__signature__``, callables) falls back
to ``inspect`` itself, imported then.
"""

from __future__ import annotations

import types
from typing import Any, Callable

_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200
_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08

_FunctionType = types.FunctionType
_MethodType = types.MethodType


def isfunction(obj: Any) -> bool:
    """``inspect.isfunction``."""
    return isinstance(obj, _FunctionType)


def isbuiltin(obj: Any) -> bool:
    """``inspect.isbuiltin``."""
    return isinstance(obj, types.BuiltinFunctionType)


def ismethoddescriptor(obj: Any) -> bool:
    """``inspect.ismethoddescriptor``."""
    if isinstance(obj, (type, _MethodType, _FunctionType)):
        return False
    tp = type(obj)
    return hasattr(tp, "__get__") and not hasattr(tp, "__set__")


def _plain(fn: Any) -> types.FunctionType | None:
    """The function behind ``fn`` when it is a plain one (or a bound method of one) that
    ``inspect`` would read straight from its code object; otherwise None."""
    if isinstance(fn, _MethodType):
        fn = fn.__func__
    if not isinstance(fn, _FunctionType):
        return None
    if "__wrapped__" in fn.__dict__ or "__signature__" in fn.__dict__:
        return None
    return fn


def kind(fn: Callable[..., Any]) -> str:
    """``"asyncgen"``, ``"async"``, ``"generator"`` or ``"sync"``, as the inspect predicates
    (isasyncgenfunction, iscoroutinefunction, isgeneratorfunction) would classify ``fn``."""
    plain = _plain(fn)
    if plain is None or getattr(plain, "_is_coroutine_marker", None) is not None:
        import inspect

        if inspect.isasyncgenfunction(fn):
            return "asyncgen"
        if inspect.iscoroutinefunction(fn):
            return "async"
        return "generator" if inspect.isgeneratorfunction(fn) else "sync"
    flags = plain.__code__.co_flags
    if flags & _CO_ASYNC_GENERATOR:
        return "asyncgen"
    if flags & _CO_COROUTINE:
        return "async"
    return "generator" if flags & _CO_GENERATOR else "sync"


def getattr_static(obj: Any, name: str, default: Any = None) -> Any:
    """``inspect.getattr_static`` for the worker's use: the raw class attribute (a function,
    staticmethod, property...) or the instance's own, never running a descriptor."""
    klass = obj if isinstance(obj, type) else type(obj)
    found = _missing = object()
    for base in klass.__mro__:
        if name in base.__dict__:
            found = base.__dict__[name]
            break
    if not isinstance(obj, type):
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            own = {}
        kind_ = type(found)
        data_descriptor = found is not _missing and hasattr(kind_, "__get__") \
            and (hasattr(kind_, "__set__") or hasattr(kind_, "__delete__"))
        if name in own and not data_descriptor:
            return own[name]
    return default if found is _missing else found


def formatannotation(annotation: Any) -> str:
    """``inspect.formatannotation`` for what it formats the same way on every Python (a
    string, as ``from __future__ import annotations`` leaves them; a plain class); typing
    constructs and generic aliases go to inspect's own, whose rules vary by version."""
    if isinstance(annotation, str):
        return repr(annotation)
    if type(annotation) is type and annotation.__module__ != "typing":
        if annotation.__module__ == "builtins":
            return annotation.__qualname__
        return annotation.__module__ + "." + annotation.__qualname__
    import inspect

    return inspect.formatannotation(annotation)


def signature_text(fn: Callable[..., Any]) -> str:
    """``str(inspect.signature(fn))``; ``"(...)"`` where inspect cannot tell either."""
    plain = _plain(fn)
    if plain is None:
        return _inspect_signature(fn)
    code = plain.__code__
    pos_count, posonly, kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    names = code.co_varnames
    flags = code.co_flags
    annotations = plain.__annotations__ or {}
    defaults = plain.__defaults__ or ()
    kwdefaults = plain.__kwdefaults__ or {}
    empty = object()
    params: list[tuple[str, str, Any]] = []  # (kind marker, name, default)
    first_default = pos_count - len(defaults)
    for i in range(pos_count):
        params.append(("posonly" if i < posonly else "pos", names[i],
                       defaults[i - first_default] if i >= first_default else empty))
    at = pos_count
    varargs = None
    if flags & _CO_VARARGS:
        varargs = names[pos_count + kwonly]
    for name in names[at:at + kwonly]:
        params.append(("kwonly", name, kwdefaults.get(name, empty)))
    varkw = None
    if flags & _CO_VARKEYWORDS:
        varkw = names[pos_count + kwonly + (1 if varargs else 0)]
    if isinstance(fn, _MethodType):  # bound: the first positional parameter is taken
        if params and params[0][0] in ("posonly", "pos"):
            params = params[1:]
        elif varargs is None:
            return _inspect_signature(fn)  # inspect raises: nothing to bind self to

    def one(name: str, default: Any, prefix: str = "") -> str:
        text = prefix + name
        if name in annotations:
            text += ": " + formatannotation(annotations[name])
            if default is not empty:
                text += " = " + repr(default)
        elif default is not empty:
            text += "=" + repr(default)
        return text

    out: list[str] = []
    saw_posonly = False
    kwonly_marked = False
    for marker, name, default in params:
        if marker != "posonly" and saw_posonly:
            out.append("/")
            saw_posonly = False
        if marker == "posonly":
            saw_posonly = True
        if marker == "kwonly" and not kwonly_marked:
            out.append(one(varargs, empty, "*") if varargs else "*")
            kwonly_marked = True
        out.append(one(name, default))
    if saw_posonly:
        out.append("/")
    if varargs and not kwonly_marked:
        out.append(one(varargs, empty, "*"))
    if varkw:
        out.append(one(varkw, empty, "**"))
    text = "(" + ", ".join(out) + ")"
    if "return" in annotations:
        text += " -> " + formatannotation(annotations["return"])
    return text


def _inspect_signature(fn: Callable[..., Any]) -> str:
    import inspect

    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def doc_summary(fn: Callable[..., Any]) -> str:
    """The first paragraph of ``inspect.getdoc(fn)``."""
    doc = getattr(fn, "__doc__", None)
    if doc is None:  # inspect looks for it up the class's bases
        doc = _inherited_doc(fn)
    return (_cleandoc(doc) if isinstance(doc, str) else "").split("\n\n")[0]


def _inherited_doc(fn: Callable[..., Any]) -> Any:
    """``inspect._finddoc(fn)`` as ``inspect.getdoc`` calls it, for a bound method and a
    module-level function (the cases a target's methods are); the rest asks inspect."""
    try:
        if isinstance(fn, _MethodType):
            name, owner = fn.__func__.__name__, fn.__self__
            # (inspect's own test for a classmethod; its AttributeError means no doc)
            if isinstance(owner, type) and \
                    getattr(getattr(owner, name, None), "__func__") is fn.__func__:
                cls = owner
            else:
                cls = owner.__class__
            for base in cls.__mro__:
                try:
                    doc = getattr(base, name).__doc__
                except AttributeError:
                    continue
                if doc is not None:
                    return doc
            return None
        if isinstance(fn, _FunctionType) and "." not in fn.__qualname__:
            return None  # inspect looks for a class named by the qualname: there is none
    except (AttributeError, TypeError):
        return None
    import inspect

    return inspect.getdoc(fn)


def _cleandoc(doc: str) -> str:
    """``inspect.cleandoc``."""
    lines = doc.expandtabs().split("\n")
    margin = min((len(line) - len(line.lstrip()) for line in lines[1:] if line.lstrip()),
                 default=0)
    lines[0] = lines[0].lstrip()
    lines[1:] = [line[margin:] for line in lines[1:]]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)
