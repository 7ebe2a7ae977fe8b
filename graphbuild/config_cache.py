"""The checked form of repos.yaml, kept in the workspace (`config-cache.json`).

Checking a 60,000-line file takes about a second, most of it YAML: so the checked
Config is stored as JSON under a key of everything the check reads, and a query reads
it back instead, without importing PyYAML. Nothing in the file is run: it is JSON read
into the dataclasses' own types, and anything else (another key, a damaged or foreign
file) is no cache at all. config.py decides where and when it is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import importlib.util
import json
import os
import stat
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from graphbuild import schema

CACHE = "config-cache.json"  # in the workspace: the last repos.yaml checked there, as checked
FORMAT = 2
MAX_CACHE = 64 * 1024 * 1024  # bytes; a 63,000-line repos.yaml is kept in 1.4 MB
_PACKAGE = Path(__file__).parent
R = TypeVar("R")


def key(path: Path, text: str) -> str:
    """Everything the check reads: the text, the file's name as given and the folder it
    resolves against (relative paths in it, and `Config.file`), and the code that checks
    (graphbuild's and PyYAML's). The check reads no environment variable and no other file."""
    digest = hashlib.sha256()
    for part in (FORMAT, _code(), path, path.parent.absolute()):
        digest.update(str(part).encode("utf-8", "surrogateescape") + b"\0")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


@functools.cache
def _code() -> str:
    """graphbuild's own files and PyYAML's, by size and time: a new version or an edited
    checkout is a new check (the schema, what a URL or platform is, or how YAML is read
    may have changed). PyYAML is found, not imported."""
    found = []
    places = [str(_PACKAGE)]
    yaml = importlib.util.find_spec("yaml")
    if yaml is not None and yaml.submodule_search_locations:
        places += yaml.submodule_search_locations
    for place in places:
        for folder, dirs, names in os.walk(place):
            dirs.sort()
            for name in sorted(n for n in names if n.endswith((".py", ".so"))):
                info = os.stat(os.path.join(folder, name))
                found.append(f"{folder}/{name} {info.st_size} {info.st_mtime_ns}")
    return "\n".join(found)


def read(cache: Path, key: str, cls: type[R]) -> R | None:
    """The record stored under `key`, or None for anything else: no file, another key, a
    damaged or foreign file."""
    try:
        fd = os.open(cache, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # a FIFO never waits
        with os.fdopen(fd, "rb") as file:
            facts = os.fstat(file.fileno())
            if not stat.S_ISREG(facts.st_mode) or facts.st_size > MAX_CACHE:
                return None
            raw = file.read(MAX_CACHE + 1)
        head, _, body = raw.partition(b"\n")
        expected = {"format": FORMAT, "key": key, "sum": hashlib.sha256(body).hexdigest()}
        if json.loads(head) != expected:
            return None
        plain: type = cls  # functools.cache takes a class, not a type variable
        return typing.cast(R, _record_reader(plain)(json.loads(body)))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return None


def write(cache: Path, key: str, value: Any) -> None:
    """Store `value` under `key`, atomically; a failure only costs speed."""
    import tempfile

    body = json.dumps(_plain(value), separators=(",", ":")).encode()
    sum_ = hashlib.sha256(body).hexdigest()
    head = json.dumps({"format": FORMAT, "key": key, "sum": sum_}).encode()
    temp = None
    try:
        with tempfile.NamedTemporaryFile(dir=cache.parent, prefix=f".{CACHE}.", delete=False) as f:
            temp = Path(f.name)
            f.write(head + b"\n" + body)
        os.replace(temp, cache)
    except OSError:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """A record as JSON: records as lists of their fields in order (a member of a union
    of records starts with its tag, its first field)."""
    if value is None or isinstance(value, str | int | float):  # most values: first
        return value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):  # every Mapping in a Config is one
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    record: Any = type(value)  # a dataclass: every other kind of value is above
    return [_plain(getattr(value, name)) for name in _field_names(record)]


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _reader(hint: Any) -> Callable[[Any], Any] | None:
    """What turns the JSON of a value of type `hint` back into it (None: JSON's own value),
    from the dataclasses' annotations: a record of the wrong length is refused, and so
    is a member of a union whose tag names none of its records."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record_reader(hint)
    if origin in (typing.Union, types.UnionType):
        records = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(records) > 1:
            by_tag = {schema.tag(c): _record_reader(c) for c in records}
            return lambda v: by_tag[v[0]](v)
        optional = _reader(next(a for a in args if a is not type(None)))
        return None if optional is None else lambda v: None if v is None else optional(v)
    if origin is tuple:
        item = _reader(args[0])
        return tuple if item is None else lambda v: tuple(map(item, v))
    if origin is Mapping:  # JSON makes a new dict: only its values may need reading
        inner = _reader(args[1])
        return None if inner is None else lambda v: {k: inner(x) for k, x in v.items()}
    if hint is Path:
        return Path
    if hint is dt.date:
        return dt.date.fromisoformat
    return None  # str, int, float, bool, Literal, Any: as JSON has them


@functools.cache
def _record_reader(cls: type) -> Callable[[Any], Any]:
    """Fields are set as a frozen dataclass's __init__ sets them, without its per-field
    object.__setattr__: 10,000 images read back in a third less time. None of these
    classes has a __post_init__, and every field is in the record."""
    assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__")
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    steps = [(i, r) for i, name in enumerate(names) if (r := _reader(hints[name])) is not None]
    new = object.__new__

    def read(value: Any) -> Any:
        if type(value) is not list or len(value) != len(names):
            raise ValueError(f"not a {cls.__name__}")
        for i, step in steps:
            value[i] = step(value[i])
        record: Any = new(cls)
        record.__dict__.update(zip(names, value, strict=True))
        return record

    return read
