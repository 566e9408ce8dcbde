"""Cog's wire details that are not the prediction record itself: coglet's SSE events,
secret inputs masked in records, and an input schema written as Cog writes it.

SSE, as coglet 0.23 sends them: ``start`` ``{"id", "status"}``; ``output``
``{"chunk", "index"}`` per streamed item; ``log`` ``{"source", "data"}`` per line;
``metric`` ``{"name", "value", "mode"}``; ``completed`` with the whole record, also when it
failed or was canceled. corral adds ``progress`` ``{"step", "total", "phase"}``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

MASK = "**********"  # what cog.Secret prints


def sse_listener(queue: Any) -> Callable[[str, Any], None]:
    """A record listener that puts coglet's ``(event, data)`` pairs on ``queue``."""
    index = 0

    def listen(event: str, payload: Any) -> None:
        nonlocal index
        if event == "start":
            queue.put_nowait(("start", {"id": payload["id"], "status": payload["status"]}))
        elif event == "output":
            queue.put_nowait(("output", {"chunk": payload, "index": index}))
            index += 1
        elif event == "logs":
            queue.put_nowait(("log", {"source": "stdout", "data": payload.rstrip("\n")}))
        else:  # progress, metric, completed
            queue.put_nowait((event, payload))

    return listen


def secret_fields(input_schema: Any) -> tuple[str, ...]:
    """The inputs marked ``x-cog-secret`` in a method's input schema."""
    props = (input_schema or {}).get("properties") or {}
    return tuple(name for name, prop in props.items()
                 if isinstance(prop, dict) and prop.get("x-cog-secret"))


def masked(inp: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """``inp`` as a record shows it: each secret given replaced by the mask."""
    if not secrets or not any(name in inp for name in secrets):
        return inp
    return {k: (MASK if k in secrets and v is not None else v) for k, v in inp.items()}


def _same_enum(a: Any, b: dict[str, Any]) -> bool:
    return isinstance(a, dict) and a.get("enum") == b["enum"] and a.get("type") == b["type"]


def cog_input(schema: dict[str, Any], taken: Mapping[str, Any] | None = None,
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Input schema as Cog writes it, and the enum components it refers to: every
    property titled and ordered (``x-order``), and a property with an ``enum`` (choices)
    as ``allOf`` a component named after it, with ``"description": "An enumeration."``.
    ``taken``: the components already named (name -> body); an enum whose name is taken
    by anything else gets the first free ``<name>2``, ``<name>3``..."""
    taken = taken or {}
    body = {**schema, "title": schema.get("title", "Input")}
    props = {}
    enums: dict[str, Any] = {}
    for order, (name, prop) in enumerate((schema.get("properties") or {}).items()):
        prop = dict(prop)
        prop.setdefault("x-order", order)
        if "enum" in prop and "allOf" not in prop:
            values = prop.pop("enum")
            kind = prop.pop("type", None) or ("integer" if all(
                isinstance(v, int) for v in values) else "string")
            prop.pop("title", None)
            component = {"title": name, "description": "An enumeration.", "enum": values,
                         "type": kind}
            chosen, n = name, 1
            while chosen in taken and not _same_enum(taken[chosen], component):
                n += 1
                chosen = f"{name}{n}"
            component["title"] = chosen
            enums[chosen] = component
            prop["allOf"] = [{"$ref": f"#/components/schemas/{chosen}"}]
        else:
            prop.setdefault("title", name.replace("_", " ").title())
        props[name] = prop
    body["properties"] = props
    return body, enums
