"""YAML read into frozen dataclasses, each key declared once: on its field.

A record's YAML keys are its fields that carry `read(check)` in their metadata. The
check reads the value (and says what is wrong with it, and where); the field's default
is the key's default. `Reader.record` derives from the fields the keys a mapping may
hold (and the "did you mean" for any other), reads each with its check and makes the
record. What involves several keys is the record's rule (`@rule(cls)`), run once its
fields are read. The shape is pre-commit's cfgv (a map of required and optional keys,
each with a check function), kept on the dataclasses, with the line of every error:
docs/architecture.md says why it is not cfgv itself.

PyYAML is imported only to parse, or to find the line of an error: a query that reads
the checked form back from the workspace never pays for it.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import posixpath
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from graphbuild.errors import ConfigError

Where = list[str | int]  # the path of a value: ["repos", 3, "images", 0, "tags"]
Check = Callable[["Reader", Any, Where], Any]
Rule = Callable[["Reader", dict[str, Any], Where], None]
R = TypeVar("R")
MAX_SECONDS = 7 * 24 * 3600  # the longest timeout repos.yaml may set: a week

_KEY = "graphbuild.schema"  # the metadata entry of a field that is a YAML key
_POSITION = "graphbuild.schema.position"
_NO_VALUE: Any = object()


@dataclasses.dataclass(frozen=True)
class Key:
    """How one YAML key is read."""

    check: Check  # the value as the record holds it, or Reader.fail
    missing: str | None = None  # required: what follows `missing: `
    absent: Any = _NO_VALUE  # the YAML value an absent key is read as, through `check`
    blank: Callable[[Any], bool] | None = None  # values read as if the key were absent


def read(
    check: Check,
    *,
    missing: str | None = None,
    absent: Any = _NO_VALUE,
    blank: Callable[[Any], bool] | None = None,
) -> dict[str, Key]:
    """A field's metadata: the field is the YAML key of its name, read by `check`."""
    return {_KEY: Key(check, missing, absent, blank)}


POSITION = {_POSITION: True}  # a field's metadata: where the record is (`repos[3]`)
null: Callable[[Any], bool] = functools.partial(operator.is_, None)  # `key:` with nothing
falsy: Callable[[Any], bool] = operator.not_  # nothing, and also [], {}, "", 0 and false

_RULES: dict[type, tuple[Rule, dict[str, Key]]] = {}


def rule(cls: type, **inputs: Key) -> Callable[[Rule], Rule]:
    """Register `fn(reader, values, where)`, run on a record's values (by field name) before
    it is made: the checks of several keys, and the fields no key fills. `inputs` are keys
    read only for the rule (`scan:` and `test:` make a gate's kind and argv)."""

    def register(fn: Rule) -> Rule:
        if cls in _RULES:  # a second would silently replace the first: one rule per record
            raise TypeError(f"{cls.__name__} has a rule already: {_RULES[cls][0].__name__}")
        _RULES[cls] = (fn, inputs)
        return fn

    return register


@functools.cache
def keys(cls: type) -> dict[str, Key]:
    """A record's YAML keys: its rule's inputs, then its fields that are keys."""
    found = {f.name: f.metadata[_KEY] for f in dataclasses.fields(cls) if _KEY in f.metadata}
    return (_RULES[cls][1] if cls in _RULES else {}) | found


@functools.cache
def _positions(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if _POSITION in f.metadata)


def tag(cls: type) -> str:
    """What tells the records of a union apart, in YAML and in the cache: the default of
    each one's first field (`kind: buildah`)."""
    return str(dataclasses.fields(cls)[0].default)


class Reader:
    """Reads one file's values, failing on the first wrong one with its file, line and key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self.base = path.parent.absolute()  # logs and reports name absolute paths

    def fail(self, where: Where, message: str) -> ConfigError:
        return ConfigError(str(self.path), key_of(where), message, _line_of(self.text, where))

    def mapping(self, value: Any, where: Where, known: Collection[str]) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {kind(value)}")
        for key in value:
            if not isinstance(key, str) or key not in known:
                import difflib

                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail([*where, str(key)], f"unknown key{extra}")
        return value

    def fields(
        self, schema: Mapping[str, Key], value: Any, where: Where, also: Collection[str] = ()
    ) -> dict[str, Any]:
        """The keys of `schema` read from a mapping that may also hold `also`: each key
        given, and each absent one that has an `absent` value. Missing keys are said first."""
        data = self.mapping(value, where, schema.keys() | set(also) if also else schema)
        found = []
        for name, key in schema.items():
            item = data.get(name, _NO_VALUE)
            if item is not _NO_VALUE and key.blank is not None and key.blank(item):
                item = _NO_VALUE
            if item is _NO_VALUE:
                if key.missing is not None:
                    raise self.fail([*where, name], f"missing: {key.missing}")
                if key.absent is _NO_VALUE:
                    continue
                item = key.absent
            found.append((name, key.check, item))
        return {name: check(self, item, [*where, name]) for name, check, item in found}

    def record(
        self, cls: type[R], value: Any, where: Where, also: Collection[str] = (), **given: Any
    ) -> R:
        """The record `cls` read from a mapping; `given`: fields that come from elsewhere."""
        plain: type = cls  # functools.cache takes a class, not a type variable
        values = self.fields(keys(plain), value, where, also) | given
        for name in _positions(plain):
            values[name] = key_of(where)
        if plain in _RULES:
            _RULES[plain][0](self, values, where)
        return cls(**values)


# -- checks that fit any file


def string(r: Reader, value: Any, where: Where) -> str:
    if isinstance(value, bool) or value is None:
        raise r.fail(where, f"expected a string, got {kind(value)}")
    if not isinstance(value, str):
        quote = ' (quote it, e.g. "3.10")' if isinstance(value, int | float) else ""
        raise r.fail(where, f"expected a string, got {kind(value)}{quote}")
    if not value:
        raise r.fail(where, "must not be empty")
    return value


def strings(r: Reader, value: Any, where: Where) -> tuple[str, ...]:
    return tuple(string(r, v, [*where, i]) for i, v in enumerate(listed(r, value, where)))


def each(check: Check) -> Check:
    """A list, each item read by `check`."""

    def check_all(r: Reader, value: Any, where: Where) -> tuple[Any, ...]:
        return tuple(check(r, v, [*where, i]) for i, v in enumerate(listed(r, value, where)))

    return check_all


def listed(r: Reader, value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list):
        raise r.fail(where, f"expected a list, got {kind(value)}")
    return value


def flag(r: Reader, value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise r.fail(where, f"expected true or false, got {kind(value)}")
    return value


def seconds(r: Reader, value: Any, where: Where) -> float:
    """Above 0 and at most a week (`.inf` or `.nan` would never end, or end everything at
    once)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 < value <= MAX_SECONDS:  # NaN fails every comparison
        raise r.fail(where, f"expected a number of seconds above 0, at most {MAX_SECONDS}")
    return float(value)


def count(r: Reader, value: Any, where: Where) -> int:
    if type(value) is not int or value < 1:
        raise r.fail(where, "expected a whole number of at least 1")
    return value


def relpath(r: Reader, value: Any, where: Where) -> str:
    """A path inside the repository, normalised."""
    text = string(r, value, where)
    if text.startswith("/") or ".." in text.split("/"):
        raise r.fail(where, "must be a relative path inside the repository")
    return posixpath.normpath(text)


def beside(r: Reader, value: Any, where: Where) -> Path:
    """A file or folder named relative to repos.yaml, wherever graphbuild runs from."""
    return r.base / string(r, value, where)


def beside_text(r: Reader, value: Any, where: Where) -> str:
    return str(beside(r, value, where))


def argv(r: Reader, value: Any, where: Where) -> tuple[str, ...]:
    found = strings(r, value, where)
    if not found:
        raise r.fail(where, "must name the command to run")
    return found


def command(r: Reader, value: Any, where: Where) -> tuple[str, ...]:
    """An argv; a program named by a relative path (`scripts/scan.sh`) is found beside
    repos.yaml, wherever graphbuild runs from (cron, a CronJob)."""
    found = argv(r, value, where)
    if "/" in found[0] and not found[0].startswith("/"):
        return (str(r.base / found[0]), *found[1:])
    return found


def string_map(key_check: Callable[[str], object]) -> Check:
    """`name: value` pairs; a number stands for its digits (`JOBS: 4`), "" stays ""."""

    def check(r: Reader, value: Any, where: Where) -> dict[str, str]:
        if not isinstance(value, dict):
            raise r.fail(where, f"expected a mapping, got {kind(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not key_check(k):
                raise r.fail([*where, str(k)], "invalid name")
            whole = isinstance(v, int) and not isinstance(v, bool)
            out[k] = "" if v == "" else str(v) if whole else string(r, v, [*where, k])
        return out

    return check


def record(cls: type) -> Check:
    """A mapping read into `cls`."""
    return functools.partial(_record, cls)


def _record(cls: type, r: Reader, value: Any, where: Where) -> Any:
    return r.record(cls, value, where)


def records(cls: type, *, unique: bool = False, shorthand: str | None = None) -> Check:
    """A list of mappings read into `cls`; `unique`: no two with one `name`; `shorthand`:
    a string alone stands for `{shorthand: string}` (`rings: [dev]`)."""

    def check(r: Reader, value: Any, where: Where) -> tuple[Any, ...]:
        out = []
        taken: set[str] = set()
        for i, item in enumerate(listed(r, value, where)):
            if shorthand is not None and isinstance(item, str):
                item = {shorthand: item}
            found: Any = r.record(cls, item, [*where, i])
            if unique:
                if found.name in taken:
                    raise r.fail([*where, i, "name"], f"duplicate name {found.name!r}")
                taken.add(found.name)
            out.append(found)
        return tuple(out)

    return check


def section(schema: Mapping[str, Key]) -> Check:
    """A mapping of the keys in `schema`, kept as a dict of those given."""

    def check(r: Reader, value: Any, where: Where) -> dict[str, Any]:
        return r.fields(schema, value, where)

    return check


def tagged(*classes: type) -> Check:
    """A mapping that is one of several records, named by their first field (`kind:`);
    without it, the first."""
    field = dataclasses.fields(classes[0])[0].name
    by_tag = {tag(c): c for c in classes}

    def check(r: Reader, value: Any, where: Where) -> Any:
        name = value.get(field, tag(classes[0])) if isinstance(value, dict) else None
        if not isinstance(name, str) or name not in by_tag:
            raise r.fail([*where, field], f"expected one of {', '.join(by_tag)}")
        return r.record(by_tag[name], value, where, also=(field,))

    return check


# -- places and kinds, for messages


def key_of(where: Where) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def kind(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "nothing",
    }
    return names.get(type(value), type(value).__name__)


# -- YAML


def parse(path: Path, text: str) -> Any:
    """The document, through YAML's safe loader; a ConfigError at the line YAML names."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader, C or Python
    except yaml.reader.ReaderError as err:  # a character YAML forbids, at a character offset
        line: int | None = text.count("\n", 0, err.position) + 1
        raise ConfigError(str(path), "", f"invalid YAML: {err.reason}", line) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line = mark.line + 1 if mark else None
        raise ConfigError(str(path), "", f"invalid YAML: {problem}", line) from None


@functools.cache
def _loader() -> type:
    """YAML's safe loader (libyaml when present) that refuses duplicate keys.

    Plain YAML keeps the last of two `images:` keys and silently drops the first.
    """
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # chosen here
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            first: dict[str, int] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in first:
                        message = f"duplicate key {key.value!r} (first on line {first[key.value]})"
                        raise yaml.constructor.ConstructorError(None, None, message, key.start_mark)
                    first[key.value] = key.start_mark.line + 1
            mapping: dict[Any, Any] = super().construct_mapping(node, deep)
            return mapping

        def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
            """`until: 2027-02-30` is a date YAML cannot make: an error at its line."""
            try:
                return super().construct_yaml_timestamp(node)
            except ValueError as err:
                problem = f"{node.value!r} is not a valid date ({err})"
                raise yaml.constructor.ConstructorError(
                    None, None, problem, node.start_mark
                ) from None

    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


def _line_of(text: str, where: Where) -> int | None:
    """The line of the deepest node of `where` that exists; only paid on errors."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in where:
        if isinstance(node, yaml.MappingNode):
            match = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                break
            line = match.start_mark.line + 1
            node = next(v for k, v in node.value if k is match)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
