"""A method's inputs as data: its JSON Schemas, and external input checked against them.

Front ends that take inputs from outside Python (the CLI, the HTTP server) need what a
method accepts as a JSON Schema, and need every problem of a bad input at once, as data.
Both come from the method's signature and type hints, read here in the worker: the host
never imports the target. msgspec does the work: a Struct built from the parameters gives
the schema, and ``msgspec.convert`` checks and converts each input (``"3"`` becomes ``3``
where the hint says int; ``Annotated[int, msgspec.Meta(ge=1)]`` constraints are enforced).
Types msgspec does not know (a numpy array, a file) are described as what crosses from
outside (a URI string for a path or file) and passed through as given.
"""

from __future__ import annotations

import inspect
import pathlib
import typing
from typing import Any, Callable

import msgspec

from ..exceptions import problems_text
from ..types import File

_EMPTY = inspect.Parameter.empty


class InputError(TypeError):
    """Inputs that do not fit: ``problems`` lists each, as ``{"loc": [...], "msg": ...}``."""

    _corral_kind = "arguments"

    def __init__(self, problems: list[dict[str, Any]]):
        self.problems = problems
        super().__init__(problems_text(problems))


class Inputs:
    """What one method accepts, built once when the target is loaded."""

    def __init__(self, fn: Callable[..., Any], *, unbound: bool = False,
                 cog: bool | None = None):
        # ``cog``: the parameters are read the Cog way (corral/cog/fields.py); None: when
        # one uses Input(...) or a Cog type. ``unbound``: ``fn`` is a class's plain function (``Cls.setup``), whose first
        # parameter is ``self``; read so that nothing is built before the check.
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # noqa: BLE001 - unresolvable annotations: no types, not no method
            hints = {}
        self.fields: list[tuple[str, Any, Any]] = []  # name, hint, default (or _EMPTY)
        self.extra = False  # **kwargs: other names are accepted as they are
        params = list(sig.parameters.items())
        if unbound and params and params[0][1].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                         inspect.Parameter.POSITIONAL_OR_KEYWORD):
            params = params[1:]
        for name, p in params:
            if p.kind is p.VAR_KEYWORD:
                self.extra = True
            elif p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
                self.fields.append((name, hints.get(name, Any), p.default))
        self.returns = hints.get("return", _EMPTY)
        # -- Cog SDK hook: Input(...), Cog's types and Cog's rules (corral/cog/fields.py)
        self.cog: Any = None
        if cog or (cog is None and self.fields and _cog_way(self.fields)):
            from ..cog.fields import CogInputs

            self.cog = CogInputs(self.fields)
            self.fields = self.cog.wire_fields()
        self._known = frozenset(name for name, _, _ in self.fields)

    def schema(self) -> dict[str, Any] | None:
        """The inputs as a JSON Schema object (None if the hints cannot be described)."""
        fields = []
        for name, hint, default in (self.cog.schema_fields() if self.cog is not None
                                    else self.fields):
            # A hint msgspec cannot describe is described as anything ({}), not by
            # dropping the whole schema: the HTTP server needs the rest to find the file
            # parameters, whose strings it must never pass on as paths.
            try:
                msgspec.json.schema(hint, schema_hook=_schema_hook)
            except Exception:  # noqa: BLE001
                hint = Any
            if default is _EMPTY:
                fields.append((name, hint))
            else:
                fields.append((name, hint, msgspec.field(default_factory=_const(default))))
        try:
            struct = msgspec.defstruct("Input", fields, kw_only=True)
            schema = msgspec.json.schema(struct, schema_hook=_schema_hook)
        except Exception:  # noqa: BLE001 - a schema is a courtesy, never a failure
            return None
        body = schema.get("$defs", {}).pop("Input", schema)
        for name, _, default in self.fields:  # default_factory hides the default: restore it
            if default is not _EMPTY and name in body.get("properties", {}):
                try:
                    body["properties"][name]["default"] = msgspec.to_builtins(default)
                except Exception:  # noqa: BLE001 - not JSON: leave it out
                    pass
        if schema.get("$defs"):
            body["$defs"] = schema["$defs"]
        if self.cog is not None:
            self.cog.patch_schema(body)
        return body

    def output_schema(self, streams: bool) -> dict[str, Any] | None:
        hint = self.returns
        if hint is _EMPTY:
            return None
        if streams:  # Iterator[T], Generator[T, ...], AsyncIterator[T]: the items are T
            args = typing.get_args(hint)
            hint = args[0] if args else Any
        try:
            schema = msgspec.json.schema(hint, schema_hook=_schema_hook)
        except Exception:  # noqa: BLE001
            return None
        if self.cog is not None:
            return self.cog.patch_output(self.returns, schema)
        return schema

    def convert(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check every input and convert it to its parameter's type; raise InputError
        listing every problem (unknown, missing, ill-typed, out of range)."""
        problems: list[dict[str, Any]] = []
        out: dict[str, Any] = {}
        known = self._known
        for name, value in kwargs.items():
            if name not in known:
                if self.cog is not None:
                    continue  # Cog drops unknown inputs (Replicate's API always has)
                if self.extra:
                    out[name] = value
                else:
                    problems.append({"loc": [name], "msg": "unexpected input"})
        for name, hint, default in self.fields:
            if name not in kwargs:
                if default is _EMPTY:
                    problems.append({"loc": [name], "msg": "required input is missing"
                                     if self.cog is None else "Field required"})  # (Cog's)
                elif self.cog is not None:
                    out[name] = default  # the Python default is Input(...) itself
                continue
            try:
                out[name] = _convert(kwargs[name], hint)
            except msgspec.ValidationError as exc:
                loc, msg = split_validation_error(str(exc))
                problems.append({"loc": [name, *loc], "msg": msg})
        if self.cog is not None:
            problems += self.cog.null_problems(kwargs)
        if problems:
            raise InputError(problems)
        if self.cog is not None:
            return self.cog.after(out)
        return out


def _convert(value: Any, hint: Any) -> Any:
    if hint is Any or (type(value) is hint and hint in _AS_THEY_ARE):
        return value
    if hint in (pathlib.Path, File) and isinstance(value, (str, File)):
        return _path_hook(hint, value)
    try:
        return msgspec.convert(value, hint, strict=False, dec_hook=_path_hook)
    except TypeError:  # a type msgspec does not handle: passed on as given
        return value


#: A value of exactly one of these types, where that type is the hint, converts to itself.
_AS_THEY_ARE = frozenset({str, int, float, bool})


def _path_hook(hint: Any, value: Any) -> Any:
    """A str (or a File: an upload the HTTP server saved) where a path or File is expected,
    inside another type too (``Path | None``, ``list[Path]``): the path, or the File as it
    is (keeping its name and content type). Any other custom type keeps msgspec's own
    message."""
    if isinstance(value, File):
        if hint is File:
            return value
        if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
            return hint(value.path)
    if isinstance(value, str) and isinstance(hint, type) \
            and (hint is File or issubclass(hint, pathlib.PurePath)):
        return hint(value)
    raise TypeError(f"Expected `{getattr(hint, '__name__', hint)}`, got `{type(value).__name__}`")


def split_validation_error(message: str) -> tuple[list[Any], str]:
    """``"Expected `int`, got `str` - at `$[0]`"`` -> ``([0], "Expected `int`, got `str`")``."""
    msg, sep, where = message.rpartition(" - at `")
    if not sep:
        return [], message
    loc: list[Any] = []
    for part in where.rstrip("`").removeprefix("$").replace("]", "").split("["):
        for piece in part.split("."):
            if piece:
                loc.append(int(piece) if piece.isdigit() else piece.strip("'\""))
    return loc, msg


def _cog_way(fields: list[tuple[str, Any, Any]]) -> bool:
    # cheap test first: the common target has plain defaults and builtin hints
    for _, hint, default in fields:
        if type(default).__name__ == "FieldInfo" or getattr(hint, "__module__", "") \
                in ("cog.types", "typing", "types"):
            from ..cog.fields import is_cog_way

            return is_cog_way(fields)
    return False


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _schema_hook(hint: Any) -> dict[str, Any]:
    if hint in (pathlib.Path, File) or (isinstance(hint, type) and issubclass(hint, pathlib.PurePath)):
        return {"type": "string", "format": "uri"}
    name = f"{getattr(hint, '__module__', '')}.{getattr(hint, '__qualname__', hint)}"
    if name in ("numpy.ndarray", "torch.Tensor"):
        return {"type": "array"}
    return {}
