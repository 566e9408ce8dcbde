"""Requirement lists and requirements files, read and normalized the way pip reads them.

A plugin's requirements arrive inline (a list in its manifest) or as a requirements file.
Both become one sorted tuple of canonical lines: requirement names canonicalized
(``Torch>=2`` -> ``torch>=2``), options in their long form (``-c x`` -> ``--constraint
/abs/x``), relative paths made absolute (the installer runs elsewhere), ``-r`` includes
expanded in place. Equal requirement sets then hash to the same environment key, and a
malformed line fails here, naming its file and line, instead of deep inside an installer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import RequirementsError

INLINE = "<requirements>"

_SHORT = {"-r": "--requirement", "-c": "--constraint", "-e": "--editable",
          "-f": "--find-links", "-i": "--index-url"}
# pip options a requirements file may hold that both pip and uv understand
_VALUED = {"--requirement", "--constraint", "--editable", "--find-links", "--index-url",
           "--extra-index-url", "--trusted-host", "--only-binary", "--no-binary"}
_FLAGS = {"--no-index", "--pre", "--prefer-binary"}
# values that may be local paths, resolved against the file that names them
_PATH_VALUED = {"--requirement", "--constraint", "--editable", "--find-links"}
# pip's comment rule: '#' at the start of a line or after whitespace
_COMMENT = re.compile(r"(^|\s+)#.*$")
# per-requirement options (``pkg==1 --hash=sha256:...``) follow the requirement itself
_PER_REQUIREMENT_OPTION = re.compile(r"\s+--?[A-Za-z]")
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")
# what str.splitlines() splits on: any of them would end a line in a requirements file
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def read_requirements(path: str | os.PathLike,
                      root: str | os.PathLike | None = None) -> list[str]:
    """The normalized lines of a requirements file: comments, blank lines and line
    continuations handled as pip does, ``-r`` includes expanded (relative to the including
    file), ``-c`` constraint files kept as ``--constraint /abs/path`` options, relative
    paths made absolute against the file's folder. Raises RequirementsError naming the file
    and line of anything malformed, a missing include or a circular one.

    With ``root`` (a plugin's folder), the file, every ``-r`` include and every ``-c``
    constraint file must resolve (symlinks followed) inside it; one outside is refused
    before it is read, so no error ever quotes a line of a file outside ``root``."""
    real_root = Path(os.path.realpath(root)) if root is not None else None
    target = Path(os.path.abspath(path))
    if real_root is not None and not _within(target, real_root):
        raise RequirementsError(str(target), "the requirements file is outside the plugin "
                                f"folder {root}")
    return _read_file(target, (), None, real_root)


def normalize_requirements(requirements: Sequence[str],
                           base_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """One sorted, de-duplicated tuple of canonical lines for an inline requirement list
    (relative paths resolve against ``base_dir``, default the current folder). Order and
    spelling do not matter: ``["B", "a>=1"]`` and ``["a >= 1", "b"]`` give the same tuple."""
    if isinstance(requirements, (str, bytes)):
        raise TypeError("requirements must be a list of requirement strings, not one "
                        f"string: {requirements!r}")
    base = Path(os.path.abspath(base_dir if base_dir is not None else os.getcwd()))
    lines: set[str] = set()
    for index, item in enumerate(requirements):
        if not isinstance(item, str):
            raise TypeError(f"requirements[{index}] must be a str, not "
                            f"{type(item).__name__}: {item!r}")
        if _LINE_BREAK.search(item):  # one item is one line: a second one could be an option
            raise RequirementsError(INLINE, f"requirements[{index}] holds a line break: "
                                    f"{item!r} (give one requirement per list item)",
                                    index + 1)
        text = _COMMENT.sub("", item).strip()
        if not text:
            continue
        lines.update(_normalize_line(text, INLINE, index + 1, base, ()))
    return tuple(sorted(lines))


def requirement_names(lines: Sequence[str]) -> set[str]:
    """The canonical project names that normalized ``lines`` require (options and bare
    paths name none)."""
    names = set()
    for line in lines:
        if line.startswith("-"):
            continue
        try:
            names.add(canonicalize_name(Requirement(_requirement_part(line)).name))
        except InvalidRequirement:
            pass  # a path or URL
    return names


def constraint_files(lines: Sequence[str]) -> list[str]:
    """The local files that ``--constraint`` lines of normalized ``lines`` name."""
    return [line.split(" ", 1)[1] for line in lines
            if line.startswith("--constraint ") and "://" not in line]


# -- internals ------------------------------------------------------------------------------


def _within(path: Path, root: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def _read_file(path: Path, stack: tuple[Path, ...],
               included_from: tuple[str, int] | None, root: Path | None = None) -> list[str]:
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RequirementsError(str(stack[-1]), f"circular -r include: {chain}",
                                included_from[1] if included_from else None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if included_from is not None:
            source, line = included_from
            raise RequirementsError(source, f"cannot read included requirements file "
                                    f"{path}: {exc.strerror or exc}", line) from exc
        raise RequirementsError(str(path), f"cannot read requirements file: "
                                f"{exc.strerror or exc}") from exc
    out: list[str] = []
    for lineno, line in _logical_lines(text):
        out.extend(_normalize_line(line, str(path), lineno, path.parent, (*stack, path),
                                   root))
    return out


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each non-empty line, continuations joined, comments
    removed."""
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if raw.endswith("\\") and not _COMMENT.search(raw):
            parts.append(raw[:-1])
            continue
        parts.append(raw)
        line = _COMMENT.sub("", "".join(parts)).strip()
        parts = []
        if line:
            yield start, line
    if parts:
        line = _COMMENT.sub("", "".join(parts)).strip()
        if line:
            yield start, line


def _normalize_line(text: str, source: str, lineno: int, base: Path,
                    stack: tuple[Path, ...], root: Path | None = None) -> list[str]:
    if text.startswith("-"):
        name, value = _parse_option(text, source, lineno)
        if value is None:
            return [name]
        if name in _PATH_VALUED:
            value = _resolve_path(value, base)
        if root is not None and name in ("--requirement", "--constraint") \
                and "://" not in value and not _within(Path(value), root):
            raise RequirementsError(source, f"{name} names a file outside the plugin folder "
                                    f"{root}", lineno)
        if name == "--requirement":
            if "://" in value:
                raise RequirementsError(source, f"-r needs a local file, not {value!r}", lineno)
            return _read_file(Path(value), stack, (source, lineno), root)
        return [f"{name} {value}"]
    if _looks_like_path_or_url(text):
        return [_resolve_path(text, base)]
    requirement = _requirement_part(text)
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise RequirementsError(source, f"not a requirement, path, URL or option: {text!r} "
                                f"({exc})", lineno) from None
    return [_canonical(parsed) + text[len(requirement):]]


def _parse_option(text: str, source: str, lineno: int) -> tuple[str, str | None]:
    first, _, rest = text.partition(" ")
    rest = rest.strip()
    if first.startswith("--"):
        name, eq, inline = first.partition("=")
        if eq and rest:
            raise RequirementsError(source, f"unexpected text after {first!r}: {rest!r}",
                                    lineno)
        value = inline if eq else rest
    else:
        name, value = first[:2], (first[2:] or rest)
    name = _SHORT.get(name, name)
    if name in _FLAGS:
        if value:
            raise RequirementsError(source, f"{name} takes no value, got {value!r}", lineno)
        return name, None
    if name not in _VALUED:
        known = ", ".join(sorted(_VALUED | _FLAGS | set(_SHORT)))
        raise RequirementsError(source, f"unknown option {name!r} (known: {known})", lineno)
    if not value:
        raise RequirementsError(source, f"{name} needs a value", lineno)
    return name, value


def _looks_like_path_or_url(text: str) -> bool:
    return ("://" in text or text.startswith((".", "/", "~"))
            or text.lower().endswith(_ARCHIVE_SUFFIXES))


def _resolve_path(value: str, base: Path) -> str:
    if "://" in value or value.startswith("file:"):
        return value  # a URL (VCS URLs too: git+https://...)
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return os.path.normpath(os.path.join(base, expanded))


def _requirement_part(text: str) -> str:
    match = _PER_REQUIREMENT_OPTION.search(text)
    return text[:match.start()] if match else text


def _canonical(req: Requirement) -> str:
    out = canonicalize_name(req.name)
    if req.extras:
        out += "[" + ",".join(sorted(canonicalize_name(e) for e in req.extras)) + "]"
    if req.url:
        out += f" @ {req.url}"
        if req.marker:
            out += " "  # pip needs the space between a URL and its marker
    else:
        out += str(req.specifier)
    if req.marker:
        out += f"; {req.marker}"
    return out
