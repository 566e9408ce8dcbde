"""``Input(...)`` and Cog's input types, as corral's inputs (worker/inputs.py) see them.

A parameter written the Cog way, ``steps: int = Input(default=4, ge=1, le=50,
description="...")``, has a FieldInfo as its Python default. Here it becomes what Cog
makes of it: the real default (or none: ``Input(description=...)`` is required), the
constraints as msgspec ``Meta`` (so they are both enforced and in the schema), ``choices``
as a ``Literal`` (an enum), and the schema keys Cog adds (``title``, ``x-order``,
``deprecated``, ``x-cog-secret``, ``nullable``).

Cog's types are turned into what crosses from outside, converted back after the check:
``Secret`` is a string in (wrapped in a Secret), ``File`` a file input (opened for
reading, as Cog hands it over), ``Path`` a path (cog.Path is a PosixPath already).

Cog's rules for absence and unions: ``Optional[T]`` with no default means None, not
required; ``Input()`` whose default is None on a non-Optional type is required (a Secret
excepted); a union holding float but not int keeps an int an int; unknown input keys are
dropped, not refused. FieldInfo is recognised by duck typing (its class name and module),
so this module never imports cog.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from types import UnionType
from typing import Any, Callable

import msgspec

from ..types import File

_EMPTY = inspect.Parameter.empty
_NONE = type(None)
SECRET_SCHEMA = {"type": "string", "format": "password", "writeOnly": True,
                 "x-cog-secret": True}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What ``corral.Input(...)`` returns: an input's default and its constraints."""

    default: Any = None
    description: str | None = None
    ge: int | float | None = None
    le: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[str | int] | None = None
    deprecated: bool | None = None
    accept: str | None = None


def Input(default: Any = None, *, description: str | None = None,  # noqa: N802 - Cog's name
          ge: int | float | None = None, le: int | float | None = None,
          min_length: int | None = None, max_length: int | None = None,
          regex: str | None = None, choices: list[str | int] | None = None,
          deprecated: bool | None = None, accept: str | None = None) -> Any:
    """Describe an input the Cog way, without cog installed: ``prompt: str =
    corral.Input(description="...")``. Same options and meaning as ``cog.Input``: no
    ``default`` (or None on a non-Optional type) makes it required; ``ge``/``le`` bound
    numbers, ``min_length``/``max_length``/``regex`` strings, ``choices`` lists the allowed
    values; all of it is checked and goes into the input schema."""
    return FieldInfo(default, description, ge, le, min_length, max_length, regex,
                     None if choices is None else list(choices), deprecated, accept)


def is_field_info(value: Any) -> bool:
    t = type(value)
    return t.__name__ == "FieldInfo" and t.__module__ in ("cog.input", __name__)


def _cog_type(hint: Any) -> str | None:
    """``"Secret"``, ``"File"``, ``"Path"``... for a class of cog.types, else None."""
    if isinstance(hint, type) and hint.__module__ == "cog.types":
        return hint.__name__
    return None


def uses_cog(hint: Any) -> bool:
    """Whether ``hint`` names one of Cog's types, at any depth."""
    if _cog_type(hint) is not None:
        return True
    return any(uses_cog(a) for a in typing.get_args(hint))


def title(name: str) -> str:
    """Cog's title for an input: ``max_tokens`` -> ``Max Tokens``."""
    return name.replace("_", " ").title()


@dataclasses.dataclass
class CogField:
    name: str
    order: int
    hint: Any  # what msgspec checks
    default: Any  # or _EMPTY: required
    after: Callable[[Any], Any] | None  # turns the checked value into what the code gets
    schema: dict[str, Any]  # keys Cog adds to the property
    secret: bool = False
    described: Any = None  # what the schema is made from
    nullable: bool = False  # Optional: may be omitted, yet an explicit null is refused


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, UnionType) and \
        _NONE in typing.get_args(hint)


def _wire(hint: Any) -> tuple[Any, Callable[[Any], Any] | None]:
    """The hint msgspec checks instead of ``hint``, and the conversion after the check."""
    kind = _cog_type(hint)
    if kind == "Secret":
        return str, hint
    if kind == "File":
        return File, _open_file
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        inner, after = _wire(args[0])
        return typing.Annotated[(inner, *args[1:])], after
    if origin in (typing.Union, UnionType):
        parts = [_wire(a) for a in args]
        wires = [w for w, _ in parts]
        if float in wires and int not in wires:  # Cog keeps 3 an int in `str | float`
            wires.insert(wires.index(float), int)
        # Cog's unions hold no Cog type but in Optional[T]: T's conversion, None kept
        afters = [a for _, a in parts if a is not None]
        after = afters[0] if len(afters) == 1 else None
        return typing.Union[tuple(wires)], after
    if origin in (list, typing.List) and args:
        inner, after = _wire(args[0])
        return list[inner], (None if after is None else lambda v: [after(x) for x in v])
    return hint, None


def _open_file(value: Any) -> Any:
    # Cog gives a File input as an open binary file object (an io.IOBase)
    return open(value, "rb")


def _constrain(hint: Any, meta: msgspec.Meta) -> Any:
    """``hint`` with ``meta`` on its scalar part (inside Optional and list, as Cog applies
    constraints to each element)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        return typing.Union[tuple(a if a is _NONE else _constrain(a, meta) for a in args)]
    if origin in (list, typing.List) and args:
        return list[_constrain(args[0], meta)]
    return typing.Annotated[hint, meta]


def _with_choices(hint: Any, choices: list[Any]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        return typing.Union[tuple(a if a is _NONE else _with_choices(a, choices) for a in args)]
    if origin in (list, typing.List) and args:
        return list[_with_choices(args[0], choices)]
    return typing.Literal[tuple(choices)]


def cog_field(order: int, name: str, hint: Any, default: Any) -> CogField:
    """One parameter, the Cog way."""
    info = default if is_field_info(default) else None
    optional = _is_optional(hint)
    secret = _cog_type(hint) == "Secret" or (
        optional and any(_cog_type(a) == "Secret" for a in typing.get_args(hint)))
    wire, after = _wire(hint)
    schema: dict[str, Any] = {"x-order": order, "title": title(name)}
    if info is None:
        value = default
        if value is _EMPTY and optional:
            value = None
    else:
        value = info.default
        if value is None and not optional and not secret:
            value = _EMPTY  # Input(description=...): no default, so required
        if info.choices is not None:
            wire = _with_choices(wire, [c.value if hasattr(c, "value") else c
                                        for c in info.choices])
        meta = {k: getattr(info, k) for k in ("ge", "le", "min_length", "max_length")
                if getattr(info, k) is not None}
        if info.regex is not None:
            meta["pattern"] = info.regex
        if meta:
            wire = _constrain(wire, msgspec.Meta(**meta))
        if info.description is not None:
            schema["description"] = info.description
        if info.deprecated:
            schema["deprecated"] = True
        if info.accept is not None:
            schema["x-cog-accept"] = info.accept
    if value is not _EMPTY and value is not None and hasattr(value, "value") \
            and not isinstance(value, (str, int, float)):
        value = value.value  # an Enum member as default: its value, as Cog normalizes it
    if optional or (secret and value is None):
        schema["nullable"] = True
    if secret:
        schema.update(SECRET_SCHEMA)
    # coglet hands a JSON int to a float input as it is (0 stays 0): accept the int as an
    # int, while the schema still says number
    return CogField(name, order, _keep_ints(wire), value, after, schema, secret, wire,
                    optional)


def _keep_ints(hint: Any) -> Any:
    if hint is float:
        return typing.Union[int, float]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated and args[0] is float:
        return typing.Union[typing.Annotated[(int, *args[1:])], hint]
    if origin in (typing.Union, UnionType) and float in args and int not in args:
        return hint  # (_wire put int in already)
    if origin in (typing.Union, UnionType):
        return typing.Union[tuple(_keep_ints(a) for a in args)]
    if origin in (list, typing.List) and args:
        return list[_keep_ints(args[0])]
    return hint


class CogInputs:
    """Every parameter of a method written the Cog way; see the module docstring."""

    def __init__(self, fields: list[tuple[str, Any, Any]]):
        self.fields = [cog_field(i, name, hint, default)
                       for i, (name, hint, default) in enumerate(fields)]
        self.afters = {f.name: f.after for f in self.fields if f.after is not None}
        self.secrets = [f.name for f in self.fields if f.secret]

    def wire_fields(self) -> list[tuple[str, Any, Any]]:
        """What the inputs are checked against."""
        return [(f.name, f.hint, f.default) for f in self.fields]

    def schema_fields(self) -> list[tuple[str, Any, Any]]:
        """What the input schema is made from."""
        return [(f.name, f.described, f.default) for f in self.fields]

    def null_problems(self, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """Cog refuses an explicit null even for an Optional input (omit it instead)."""
        return [{"loc": [f.name], "msg": "null is not allowed (omit the input instead)"}
                for f in self.fields if f.nullable and f.name in kwargs
                and kwargs[f.name] is None]

    def patch_schema(self, body: dict[str, Any]) -> None:
        """Cog's keys on each property; ``anyOf [T, null]`` as ``T`` + ``nullable``."""
        props = body.get("properties", {})
        for f in self.fields:
            prop = props.get(f.name)
            if prop is None:
                continue
            if f.secret:
                prop.pop("anyOf", None)
                prop.pop("type", None)
            _fold_null(prop)
            prop.update(f.schema)
        body["title"] = "Input"
        if not body.get("required"):
            body.pop("required", None)

    @staticmethod
    def patch_output(returns: Any, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        """The output (or streamed item) schema as Cog writes it: a BaseModel inline, its
        fields titled and nullable, Secret as a string; ConcatenateIterator marked with
        ``x-cog-array-display`` (the server moves it next to ``x-cog-array-type``)."""
        if schema is None:
            return None
        defs = schema.pop("$defs", {})
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/") and ref[8:] in defs:
            body = defs.pop(ref[8:])
            schema = {**body}
            for name, prop in schema.get("properties", {}).items():
                _fold_null(prop)
                prop.setdefault("title", title(name))
            schema.pop("title", None)
        if defs:
            schema["$defs"] = defs
        origin = typing.get_origin(returns) or returns
        if isinstance(origin, type) and origin.__module__ == "cog.types" and \
                origin.__name__ in ("ConcatenateIterator", "AsyncConcatenateIterator"):
            schema["x-cog-array-display"] = "concatenate"
        return schema

    def after(self, out: dict[str, Any]) -> dict[str, Any]:
        for name, convert in self.afters.items():
            if name in out and out[name] is not None:
                out[name] = convert(out[name])
        return out


def _fold_null(prop: dict[str, Any]) -> None:
    """OpenAPI 3.0 has no null type: ``{"anyOf": [X, {"type": "null"}]}`` -> X + nullable."""
    variants = prop.get("anyOf")
    if not isinstance(variants, list) or {"type": "null"} not in variants:
        return
    rest = [v for v in variants if v != {"type": "null"}]
    del prop["anyOf"]
    if len(rest) == 1:
        prop.update(rest[0])
    else:
        prop["anyOf"] = rest
    prop["nullable"] = True


def is_cog_way(fields: list[tuple[str, Any, Any]]) -> bool:
    """Whether any parameter uses Input(...) or one of Cog's types."""
    return any(is_field_info(d) or uses_cog(h) for _, h, d in fields)
