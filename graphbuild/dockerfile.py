"""A Dockerfile -> the base images a build of it pulls, each with its kind and line.

Follows BuildKit's Dockerfile frontend (parser.go, directives.go, convert.go),
not a line regex: the rules are in docs/dockerfile.md, each with a test. The
work is split in two: `read` turns text into instructions once, `parse` then
evaluates ARGs, stages and reachability for each target platform, because
`FROM build_${TARGETARCH}` can name a different base on each.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from graphbuild import heredoc, refs
from graphbuild.errors import DockerfileError, InvalidReference
from graphbuild.expand import (
    Budget,
    ExpandError,
    Expansion,
    MissingValue,
    OverBudget,
    TooLong,
    expand,
    shorten,
)
from graphbuild.platforms import DEFAULT_PLATFORM, Platform
from graphbuild.platforms import parse as parse_platform

# The largest Dockerfile graphbuild reads. Real ones are KiB; generated ones reach about
# 900 KB (moby/moby#48164). buildx refuses a Dockerfile from a URL over 2 MB (docker/buildx#2716).
MAX_BYTES = 2 * 1024 * 1024

FROM, COPY, MOUNT, SYNTAX = "from", "copy", "mount", "syntax"
INSTRUCTIONS = frozenset(
    {
        "add",
        "arg",
        "cmd",
        "copy",
        "entrypoint",
        "env",
        "expose",
        "from",
        "healthcheck",
        "label",
        "maintainer",
        "onbuild",
        "run",
        "shell",
        "stopsignal",
        "user",
        "volume",
        "workdir",
    }
)
_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_DIRECTIVE_KEY_RE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9-_.]*$")
_GO_INT_RE = re.compile(r"[+-]?[0-9]+")
_WHITESPACE_RE = re.compile(r"[\t\v\f\r ]+")
_DOCKERFILE_FRONTENDS = frozenset(
    {"docker.io/docker/dockerfile", "docker.io/docker/dockerfile-upstream"}
)


@dataclass(frozen=True)
class BaseRef:
    """One base image reference: what a build pulls, and where the file says so."""

    kind: str  # from | copy | mount | syntax
    raw: str  # as written, after ARG expansion
    line: int
    ref: str | None = None  # normalised; None when unresolved
    pinned: bool = False  # carries a digest
    platform: str | None = None  # FROM --platform, expanded
    platforms: tuple[str, ...] = ()  # target platforms whose build pulls it
    stage: str | None = None  # the stage that uses it (name or index)
    unresolved: str | None = None  # why `ref` could not be worked out
    final: bool = False  # the target stage's root: the image's immediate parent


@dataclass(frozen=True)
class Warning:
    line: int
    message: str
    rule: str | None = None  # the BuildKit lint rule, which `# check=` can skip or make an error


@dataclass
class Parsed:
    """Everything graphbuild needs from one Dockerfile for one build configuration."""

    refs: list[BaseRef] = field(default_factory=list)
    # Image references in the target stage's ONBUILD triggers: they fire in
    # images built FROM this one, so they are edges of its children.
    onbuild: list[BaseRef] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Parsed:
        def ref(d: dict) -> BaseRef:
            return BaseRef(**{**d, "platforms": tuple(d["platforms"])})

        return cls(
            refs=[ref(d) for d in data["refs"]],
            onbuild=[ref(d) for d in data["onbuild"]],
            warnings=[Warning(**w) for w in data["warnings"]],
        )


@dataclass(frozen=True)
class Instruction:
    cmd: str  # lower case
    flags: tuple[str, ...]
    args: str
    line: int
    trigger: Instruction | None = None  # what an ONBUILD wraps
    end: int = 0  # its last physical line (continuations and heredoc bodies included)


@dataclass(frozen=True)
class Source:
    """A Dockerfile read into instructions: everything that does not depend on build args."""

    instructions: tuple[Instruction, ...]
    escape: str
    syntax: tuple[str, int] | None
    check: tuple[str, int] | None
    warnings: tuple[Warning, ...]


class OutOfMemory(DockerfileError):
    """Memory ran out on this file. Within graphbuild's caps that says more about the machine
    than about the file, so unlike other errors it is not remembered for the file."""


def check_size(size: int) -> None:
    """Refuse a Dockerfile of `size` bytes over MAX_BYTES, before anything reads it."""
    if size > MAX_BYTES:
        raise DockerfileError(
            0, f"Dockerfile is {size} bytes, more than the {MAX_BYTES // 1024 // 1024} MiB "
            "graphbuild reads"
        )  # fmt: skip


class _Progress:
    """The line being worked on, for an error that could come from anywhere in the work."""

    line = 0


@contextmanager
def _guarded(progress: _Progress) -> Iterator[None]:
    """Exhausted memory or stack becomes a DockerfileError on the line, not a crash."""
    try:
        yield
    except MemoryError:
        raise OutOfMemory(progress.line, "not enough memory to read this Dockerfile") from None
    except RecursionError:
        raise DockerfileError(progress.line, "nested too deeply to read") from None


# ---------------------------------------------------------------- reading


def read(data: bytes | str) -> Source:
    """Split a Dockerfile into instructions: directives, continuations, comments, heredocs."""
    progress = _Progress()
    with _guarded(progress):
        return _read(data, progress)


def _read(data: bytes | str, progress: _Progress) -> Source:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    lines = _lines(text)
    directives, n = _directives(lines)
    escape = directives.get("escape", ("\\", 0))[0]
    if escape not in ("\\", "`"):
        raise DockerfileError(
            directives["escape"][1], f"invalid escape token {escape!r} does not match ` or \\"
        )
    instructions: list[Instruction] = []
    warnings: list[Warning] = []
    cont = _continuation_re(escape)

    def raw(i: int) -> str:
        return lines[i].rstrip("\r\n")

    while n < len(lines):
        line = raw(n).lstrip()
        n += 1
        if line.startswith("#"):
            continue
        start = progress.line = n
        first, ended = _trim_continuation(line, cont)
        if ended and not first:
            continue
        parts = [first]  # joined once: adding to a growing string is quadratic
        empty_continuation = False
        while not ended and n < len(lines):
            nxt = raw(n)
            n += 1
            stripped = nxt.lstrip()
            if stripped.startswith("#"):
                continue
            if not stripped:
                empty_continuation = True
                continue
            part, ended = _trim_continuation(nxt, cont)
            parts.append(part)
        logical = "".join(parts)
        if empty_continuation:
            warnings.append(
                _lint(start, "NoEmptyContinuation", "empty continuation lines will become errors")
            )
        ins = _instruction(logical, start)
        if _may_have_heredoc(ins) and "<<" in logical:
            for chomp, name in heredoc.openers(logical, start):
                while True:
                    if n >= len(lines):
                        raise DockerfileError(start, "unterminated heredoc")
                    body = raw(n)
                    n += 1
                    if (body.lstrip("\t") if chomp else body) == name:
                        break
        instructions.append(replace(ins, end=n))

    if not instructions:
        raise DockerfileError(max(n, 1), "file with no instructions")
    return Source(
        tuple(instructions),
        escape,
        directives.get("syntax"),
        directives.get("check"),
        tuple(warnings),
    )


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


def _directives(lines: list[str]) -> tuple[dict[str, tuple[str, int]], int]:
    """The parser directives at the top, and the index of the first line after them."""
    seen: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(lines):
        directive = _directive(line.rstrip("\r\n").lstrip())
        key = directive[0].lower() if directive else None
        if directive is None or key not in _DIRECTIVES:
            return seen, n
        if key in seen:
            raise DockerfileError(n + 1, f"only one {key} parser directive can be used")
        seen[key] = (directive[1], n + 1)
    return seen, len(lines)


def _directive(line: str) -> tuple[str, str] | None:
    """(key, value) as BuildKit's `^#\\s*([a-zA-Z][a-zA-Z0-9]*)\\s*=\\s*(.+?)\\s*$` reads
    it. That regex backtracks in Python: on a long line of blanks it is quadratic."""
    match = _DIRECTIVE_KEY_RE.match(line)
    if match is None:
        return None
    rest = line[match.end() :]
    value = rest.strip()
    if not value:  # only blanks: the lazy group takes the last one
        return (match.group(1), rest[-1]) if rest else None
    return match.group(1), value


def _continuation_re(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _trim_continuation(line: str, cont: re.Pattern[str]) -> tuple[str, bool]:
    if cont.search(line):
        return cont.sub(r"\1", line, count=1), False
    return line, True


def _instruction(logical: str, line: int) -> Instruction:
    parts = _WHITESPACE_RE.split(logical.strip(), maxsplit=1)
    cmd = parts[0].lower()
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(line, f"unknown instruction: {shorten(parts[0], quote=False)}")
    flags, args = _flags(parts[1]) if len(parts) == 2 else ((), "")
    trigger = None
    if cmd == "onbuild":
        if not args:
            raise DockerfileError(line, "ONBUILD requires at least one argument")
        inner = _WHITESPACE_RE.split(args.strip(), maxsplit=1)[0].lower()
        if inner in ("onbuild", "from", "maintainer"):  # checked first: no chain of recursion
            raise DockerfileError(line, f"{inner.upper()} isn't allowed as an ONBUILD trigger")
        trigger = _instruction(args, line)
    return Instruction(cmd, flags, args.strip(), line, trigger)


def _flags(rest: str) -> tuple[tuple[str, ...], str]:
    """Leading `--name=value` words (BuildKit extractBuilderFlags), and what follows."""
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        if not rest.startswith("--", pos):
            return tuple(flags), rest[pos:]
        word: list[str] = []
        quote = ""
        while pos < len(rest):
            ch = rest[pos]
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    word.append(ch)
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote = ch
            elif ch == "\\" and pos + 1 < len(rest):
                pos += 1
                word.append(rest[pos])
            else:
                word.append(ch)
            pos += 1
        flag = "".join(word)
        if flag == "--":
            return tuple(flags), rest[pos:]
        flags.append(flag)


def _may_have_heredoc(ins: Instruction) -> bool:
    target = ins.trigger or ins
    if target.cmd not in ("run", "copy", "add"):
        return False
    return not _is_json(target.args)


def _is_json(args: str) -> bool:
    if not args.startswith("["):
        return False
    try:
        value = json.loads(args)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Whitespace-separated words, quotes kept (BuildKit parseWords)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if not quote and ch.isspace():
            if word:
                words.append("".join(word))
                word = []
            i += 1
            continue
        if ch == escape and quote != "'" and i + 1 < len(text):
            word += [ch, text[i + 1]]
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        word.append(ch)
        i += 1
    if word:
        words.append("".join(word))
    return words


# ---------------------------------------------------------------- evaluating


@dataclass
class _Stage:
    index: int
    name: str | None
    line: int
    base: BaseRef | None = None  # the root image, or an unresolved one
    parent: int | None = None  # FROM <earlier stage>
    deps: set[int] = field(default_factory=set)  # nodes: stages, then _Source entries
    # (node, line, message) of each source an instruction uses; message is BuildKit's
    # dispatch-time error if the node is not an earlier stage (None: not checked)
    uses: list[tuple[int, int, str | None]] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # errors if reached
    commands: list[Instruction] = field(default_factory=list)
    triggers: list[Instruction] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    """A `COPY --from`/`--mount from=` that is no stage: BuildKit appends an unregistered
    state for it after the stages, so a stage index past the last stage can name it."""

    stage: int  # the stage whose instruction made it
    ref: BaseRef | None  # None for scratch and non-image named contexts


def parse(
    data: bytes | str | Source,
    *,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    platforms: Sequence[str] = (DEFAULT_PLATFORM,),
    contexts: Mapping[str, str] | None = None,
) -> Parsed:
    """The base references a build pulls, merged over the target platforms.

    Any file gives a Parsed or a DockerfileError, in time and memory bounded by MAX_BYTES
    and the expansion caps of expand.py.
    """
    if isinstance(data, bytes):
        check_size(len(data))
    elif isinstance(data, str) and len(data) > MAX_BYTES // 4:  # shorter text fits: 4 B a char
        check_size(len(data.encode("utf-8", "replace")))  # a surrogate-escaped byte counts 1
    try:
        return _parse(data, build_args or {}, target, platforms, contexts or {})
    except OutOfMemory:
        raise
    except DockerfileError:
        # A custom frontend (`# syntax=example/myfrontend`) reads its own language:
        # the only dependency that is certain is the frontend image itself.
        text = data if isinstance(data, str | Source) else data.decode("utf-8", "replace")
        syntax = _custom_frontend(text, build_args or {})
        if syntax is None:
            raise
        return Parsed([syntax], [], [Warning(syntax.line, _custom_warning(syntax.raw))])


def _custom_frontend(text: str | Source, build_args: Mapping[str, str]) -> BaseRef | None:
    if isinstance(text, Source):
        syntax = text.syntax
    else:
        try:
            syntax = _directives(_lines(text))[0].get("syntax")
        except DockerfileError:
            return None
    value, line = _syntax_value(syntax, build_args)
    if not value:
        return None
    try:
        ref = refs.normalize(value)
    except InvalidReference:
        return None
    if ref.name in _DOCKERFILE_FRONTENDS:
        return None
    return BaseRef(
        SYNTAX, value, line, str(ref), ref.digest is not None, platforms=(DEFAULT_PLATFORM,)
    )


def _syntax_value(
    directive: tuple[str, int] | None, build_args: Mapping[str, str]
) -> tuple[str | None, int]:
    """The frontend image: `# syntax=`, replaced by the BUILDKIT_SYNTAX build arg."""
    value, line = directive or (None, 0)
    value = build_args.get("BUILDKIT_SYNTAX", value)
    value = value.split(" ", 1)[0] if value else None
    return (None if value == "dockerfile.v0" else value), line


def _custom_warning(value: str) -> str:
    return f"custom frontend {value}: the rest of the file may not be Dockerfile syntax"


def _parse(
    data: bytes | str | Source,
    build_args: Mapping[str, str],
    target: str | None,
    platforms: Sequence[str],
    contexts: Mapping[str, str],
) -> Parsed:
    source = data if isinstance(data, Source) else read(data)
    merged: dict[tuple, BaseRef] = {}
    onbuild: dict[tuple, BaseRef] = {}
    warnings: dict[Warning, None] = dict.fromkeys(source.warnings)
    budget = Budget()  # one for the file, whatever the number of platforms
    for platform in _target_platforms(platforms):
        ev = _Evaluator(source, build_args, target, platform, contexts, budget)
        with _guarded(ev.progress):
            found, triggers = ev.run()
        name = str(platform)
        for into, items in ((merged, found), (onbuild, triggers)):
            for ref in items:  # one ref per use: two mounts of one image on a line are one
                key = (ref.kind, ref.raw, ref.line, ref.platform, ref.stage)
                had = into[key].platforms if key in into else ()
                # platforms come in turn, so this one is the last one listed or not listed
                platforms = had if had[-1:] == (name,) else (*had, name)
                into[key] = replace(ref, platforms=platforms)
        warnings.update(dict.fromkeys(ev.warnings))
    return Parsed(list(merged.values()), list(onbuild.values()), _checked(source, warnings))


def _target_platforms(platforms: Sequence[str]) -> list[Platform]:
    """The target platforms, normalised as BuildKit's frontend does, each once."""
    out: dict[Platform, None] = {}
    for text in platforms or (DEFAULT_PLATFORM,):
        try:
            out[parse_platform(text)] = None
        except ValueError as err:
            raise DockerfileError(0, f"invalid target platform: {err}") from None
    return list(out)


def _lint(line: int, rule: str, text: str) -> Warning:
    return Warning(line, f"{rule}: {text}", rule)


def _checked(source: Source, warnings: Iterable[Warning]) -> list[Warning]:
    """Apply `# check=skip=…;error=true`: skipped rules vanish, the rest may fail the build."""
    skip: set[str] = set()
    as_error = False
    value, line = source.check or ("", 0)
    for item in filter(None, (part.strip() for part in value.split(";"))):
        key, eq, arg = item.partition("=")
        if key == "skip" and eq:
            skip |= {rule.strip() for rule in arg.split(",")}
        elif key == "error" and arg.lower() in ("true", "false"):
            as_error = arg.lower() == "true"
        elif key != "experimental":
            raise DockerfileError(line, f"failed to parse check options: {shorten(item)}")
    kept = [w for w in warnings if not (w.rule and (w.rule in skip or "all" in skip))]
    failed = [w for w in kept if w.rule]
    if as_error and failed:
        raise DockerfileError(failed[0].line, f"lint error (check=error=true): {failed[0].message}")
    return kept


def _platform_args(platform: Platform, build_platform: str, target: str | None) -> dict[str, str]:
    b_os, b_arch, b_var = [*build_platform.split("/"), "", ""][:3]
    return {
        "BUILDPLATFORM": build_platform,
        "BUILDOS": b_os,
        "BUILDOSVERSION": "",
        "BUILDARCH": b_arch,
        "BUILDVARIANT": b_var,
        "TARGETPLATFORM": str(platform),
        "TARGETOS": platform.os,
        "TARGETOSVERSION": platform.os_version,
        "TARGETARCH": platform.arch,
        "TARGETVARIANT": platform.variant,
        "TARGETSTAGE": target or "default",
    }


class _Evaluator:
    """One evaluation of a Source for one platform and set of build args."""

    def __init__(
        self,
        source: Source,
        build_args: Mapping[str, str],
        target: str | None,
        platform: Platform,
        contexts: Mapping[str, str],
        budget: Budget,
    ) -> None:
        self.source, self.build_args, self.target = source, build_args, target
        self.platform, self.contexts, self.budget = platform, contexts, budget
        self.progress = _Progress()
        self.warnings: list[Warning] = []
        self.env = _platform_args(platform, DEFAULT_PLATFORM, target)
        self.env.update((k, v) for k, v in build_args.items() if k in self.env)
        self.valueless: set[str] = set()  # global ARGs declared without a value
        self.declared: set[str] = set()  # every global ARG name
        self.stages: list[_Stage] = []
        self.sources: list[_Source] = []  # after the stages in BuildKit's list of states
        self.names: dict[str, int] = {}

    # -- the whole evaluation

    def run(self) -> tuple[list[BaseRef], list[BaseRef]]:
        instructions = self.source.instructions
        first_from = next((i for i, ins in enumerate(instructions) if ins.cmd == "from"), None)
        if first_from is None:
            raise DockerfileError(instructions[-1].line, "no FROM instruction: nothing to build")
        for ins in instructions[:first_from]:
            self.progress.line = ins.line
            if ins.cmd != "arg":
                raise DockerfileError(
                    ins.line, f"{ins.cmd.upper()} before the first FROM: no build stage yet"
                )
            self._global_arg(ins)
        for ins in instructions[first_from:]:
            self.progress.line = ins.line
            if ins.cmd == "from":
                self._from(ins)
            elif ins.cmd == "add" and any(f.startswith("--from") for f in ins.flags):
                raise DockerfileError(ins.line, "unknown flag: --from (ADD has no --from)")
            elif ins.cmd in ("copy", "run"):
                self.stages[-1].commands.append(ins)
            elif ins.cmd == "onbuild":
                self.stages[-1].triggers.append(ins)
        # BuildKit's buildStageDependencyGraph: every stage's sources, from every stage's
        # names (earlier or later), before it knows which stages the target reaches
        for stage in self.stages:
            for ins in stage.commands:
                self.progress.line = ins.line
                self._sources(stage, ins)
        self._check_cycles()
        target = self._target()
        reachable = self._fire_triggers(target)
        self._check_dispatch(reachable)

        root = self.stages[target]
        while root.parent is not None:
            root = self.stages[root.parent]
        if root.base is not None and root.base.unresolved is None:
            root.base = replace(root.base, final=True)
        found: list[BaseRef] = []
        syntax = self._syntax()
        if syntax:
            found.append(syntax)
        made: dict[int, list[BaseRef]] = {}  # each stage's image sources that are reached
        for n, source in enumerate(self.sources, len(self.stages)):
            if source.ref is not None and n in reachable:
                made.setdefault(source.stage, []).append(source.ref)
        for stage in self.stages:
            if stage.index in reachable and stage.base is not None:
                found.append(stage.base)
            found.extend(made.get(stage.index, ()))
        return found, self._exported_triggers(target)

    def _fire_triggers(self, target: int) -> set[int]:
        """The nodes the target reaches, firing the ONBUILD triggers of each reached stage
        built FROM another as it is reached (BuildKit's resolveStages): a trigger's sources
        are reached too."""
        reached: set[int] = set()
        todo = [target]
        while todo:
            node = todo.pop()
            if node in reached:
                continue
            reached.add(node)
            if node >= len(self.stages):  # an image source depends on nothing
                continue
            stage = self.stages[node]
            if stage.parent is not None:
                self.progress.line = stage.line
                parent = self.stages[stage.parent]
                for trigger in parent.triggers:
                    self._fire(stage, parent, trigger)
            todo.extend(stage.deps)
        return reached

    def _check_cycles(self) -> None:
        """BuildKit's validateCircularDependency: over every stage, reached or not, through
        the sources of instructions (not FROM <stage>, which can only name an earlier one).
        The error is on the first instruction of the cycle's path."""
        count = len(self.stages)
        edges = [sorted({(n, line) for n, line, _ in s.uses if n < count}) for s in self.stages]
        state = [0] * count  # 0 new, 1 on the path, 2 done
        for start in range(count):
            if state[start]:
                continue
            state[start] = 1
            path: list[tuple[int, Iterator[tuple[int, int]], int]] = [
                (start, iter(edges[start]), 0)
            ]
            while path:
                node, todo, _ = path[-1]
                step = next(todo, None)
                if step is None:
                    state[node] = 2
                    path.pop()
                    continue
                dep, line = step
                if state[dep] == 1:
                    first = path[1][2] if len(path) > 1 else line
                    name = self.stages[start].name or f"stage-{start}"
                    message = f"circular dependency detected on stage: {shorten(name, quote=False)}"
                    raise DockerfileError(first, message)
                if state[dep] == 0:
                    state[dep] = 1
                    path.append((dep, iter(edges[dep]), line))

    def _check_dispatch(self, reachable: set[int]) -> None:
        """What BuildKit checks only while dispatching, so only in stages the target reaches:
        a stage is dispatched in file order, so it can only use an earlier one."""
        for stage in self.stages:
            if stage.index not in reachable:
                continue
            errors = [
                (line, message)
                for node, line, message in stage.uses
                if message is not None and stage.index <= node < len(self.stages)
            ]
            errors += stage.failures
            if errors:
                raise DockerfileError(*min(errors))

    # -- ARG, FROM and the name table

    def _global_arg(self, ins: Instruction) -> None:
        """One global ARG line. A name declared without a value stays unset, as in BuildKit
        (`${V-w}` gives w), but is remembered: a FROM that needs it is unresolved, not wrong."""
        for key, value in _arg_pairs(ins, self.source.escape):
            if key in self.build_args:
                self.env[key] = self.build_args[key]
                self.valueless.discard(key)
            elif value is not None:
                what = f"ARG {shorten(key, quote=False)}"
                try:
                    self.env[key] = self._expand(value, ins.line, what).value
                    self.valueless.discard(key)
                except MissingValue as err:
                    # `${V:?msg}` fails the build unless V is a global ARG declared earlier
                    # without a value, which build_args are expected to supply.
                    if err.name not in self.valueless:
                        raise DockerfileError(ins.line, f"{what}: {err}") from None
                    self.env.pop(key, None)
                    self.valueless.add(key)
            elif key not in self.env:
                self.valueless.add(key)
            self.declared.add(key)

    def _expand(self, word: str, line: int, what: str) -> Expansion:
        """`word` expanded; `what` names it (`ARG NAME`, `FROM`) in an error."""
        try:
            return expand(word, self.env, self.source.escape, self.budget)
        except MissingValue:
            raise
        except TooLong as err:
            raise DockerfileError(line, f"{what} {err}") from None
        except OverBudget as err:
            raise DockerfileError(line, f"{what}: {err}") from None
        except ExpandError as err:
            raise DockerfileError(line, f"failed to process {shorten(word)}: {err}") from None

    def _from(self, ins: Instruction) -> None:
        index = len(self.stages)
        platform = self._from_platform(ins)
        args = _WHITESPACE_RE.split(ins.args) if ins.args else []
        if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
            raise DockerfileError(ins.line, "FROM requires either one or three arguments")
        name = None
        if len(args) == 3:
            name = args[2].lower()
            if not _STAGE_NAME_RE.match(name):
                raise DockerfileError(
                    ins.line,
                    f"invalid name for build stage: {shorten(args[2])}, "
                    "name can't start with a number or contain symbols",
                )
            if name in ("scratch", "context"):
                self.warnings.append(_lint(ins.line, "ReservedStageName", f"{name!r} is reserved"))
            if name in self.names:
                message = f"{shorten(name)} is defined more than once"
                self.warnings.append(_lint(ins.line, "DuplicateStageName", message))
        stage = _Stage(index, name, ins.line)
        label = name or str(index)
        self.stages.append(stage)

        if name is not None and (ctx := self._context(name)) is not None:
            if ctx:
                stage.base = self._image(ctx, FROM, ins.line, platform, label, name)
        else:
            self._from_base(stage, args[0], ins.line, platform, label)
        if name is not None:
            self.names[name] = index

    def _from_base(
        self, stage: _Stage, word: str, line: int, platform: str | None, label: str
    ) -> None:
        try:
            expansion = self._expand(word, line, "FROM")
        except MissingValue as err:
            if err.name not in self.declared:  # no build arg can reach it: BuildKit fails
                raise DockerfileError(line, f"failed to process {shorten(word)}: {err}") from None
            reason = f"ARG {err}; set it in build_args"
            stage.base = BaseRef(
                FROM, word, line, platform=platform, stage=label, unresolved=reason
            )
            return
        base = expansion.value
        missing = sorted(expansion.unmatched)
        if not base:
            if missing and set(missing) <= self.valueless:
                stage.base = self._unresolved(word, line, platform, label, missing)
                return
            raise DockerfileError(
                line, f"base name ({shorten(word, quote=False)}) should not be blank"
            )
        if undeclared := expansion.unmatched - self.declared:
            names = shorten(", ".join(sorted(undeclared)), quote=False)
            message = f"FROM uses undeclared ARG {names}"
            self.warnings.append(_lint(line, "UndefinedArgInFrom", message))
        earlier = self.names.get(base)  # before scratch: a stage may be called scratch
        if earlier is not None:
            stage.parent = earlier
            stage.deps.add(earlier)
            return
        if base == "scratch":
            return
        ctx = self._context(base)
        if ctx is not None:
            if ctx:
                stage.base = self._image(ctx, FROM, line, platform, label, base)
            return
        try:
            stage.base = self._image(base, FROM, line, platform, label)
        except DockerfileError:
            if missing and set(missing) & self.valueless:
                stage.base = self._unresolved(word, line, platform, label, missing)
                return
            raise

    def _unresolved(
        self, word: str, line: int, platform: str | None, label: str, missing: list[str]
    ) -> BaseRef:
        args = [m for m in missing if m in self.valueless] or missing
        plural = "s" if len(args) > 1 else ""
        reason = f"ARG{plural} {', '.join(args)} ha{'ve' if plural else 's'} no value"
        reason += "; set it in build_args" if not plural else "; set them in build_args"
        return BaseRef(FROM, word, line, platform=platform, stage=label, unresolved=reason)

    def _from_platform(self, ins: Instruction) -> str | None:
        """`--platform=`, expanded and parsed as BuildKit does for every stage, normalised."""
        platform = None
        seen = False
        for flag in ins.flags:
            key, eq, value = flag[2:].partition("=")
            if key != "platform":
                raise DockerfileError(ins.line, f"unknown flag: {shorten(key, quote=False)}")
            if seen:
                raise DockerfileError(ins.line, "duplicate flag specified: --platform")
            if not eq:
                raise DockerfileError(ins.line, "missing a value on flag: platform")
            seen = True
            try:
                expansion = self._expand(value, ins.line, "FROM --platform")
            except MissingValue as err:
                raise DockerfileError(ins.line, f"--platform: {err}") from None
            expanded = expansion.value
            if not expanded and expansion.unmatched and expansion.unmatched <= self.valueless:
                names = ", ".join(sorted(expansion.unmatched))
                self.warnings.append(_lint(ins.line, "UnsetPlatformArg", (
                    f"FROM --platform: ARG {names} has no value: BuildKit refuses this file, "
                    "buildah builds it for the target platform, as graphbuild reads it; "
                    "set it in build_args")))  # fmt: skip
                continue
            if not expanded:
                raise DockerfileError(
                    ins.line, f"empty platform value from expression {shorten(value, quote=False)}"
                )
            try:
                platform = str(parse_platform(expanded))
            except ValueError as err:
                message = f"failed to parse platform {shorten(value, quote=False)}: {err}"
                raise DockerfileError(ins.line, message) from None
        return platform

    def _image(
        self,
        text: str,
        kind: str,
        line: int,
        platform: str | None,
        label: str,
        raw: str | None = None,
    ) -> BaseRef:
        try:
            ref = refs.normalize(text)
        except InvalidReference as err:
            raise DockerfileError(
                line, f"{shorten(text)} is not a valid image reference: {err.reason}"
            ) from None
        return BaseRef(
            kind,
            raw or text,
            line,
            ref=str(ref),
            pinned=ref.digest is not None,
            platform=platform,
            stage=label,
        )

    def _context(self, name: str) -> str | None:
        """A named build context replacing `name`: its image, "" for a non-image context."""
        if not self.contexts or name in ("scratch", "context"):
            return None
        value = self.contexts.get(name)
        if value is None:
            try:
                wanted = refs.normalize(name)
            except InvalidReference:
                return None
            for key, candidate in self.contexts.items():
                try:
                    if refs.normalize(key) == wanted:
                        value = candidate
                        break
                except InvalidReference:
                    continue
        if value is None:
            return None
        prefix = "docker-image://"
        return value[len(prefix) :] if value.startswith(prefix) else ""

    # -- COPY --from, RUN --mount from=, ONBUILD triggers

    def _fire(self, stage: _Stage, parent: _Stage, trigger: Instruction) -> None:
        """A parent stage's ONBUILD trigger in `stage`: every child stage fires every trigger,
        so that work is charged to the file's budget like expansion (its length, plus 256
        for the reference it may add)."""
        try:
            self.budget.spend(len(trigger.args) + 256)
        except OverBudget as err:
            name = parent.name or str(parent.index)
            message = f"FROM {shorten(name, quote=False)}: firing its ONBUILD triggers: {err}"
            raise DockerfileError(stage.line, message) from None
        self._sources(stage, trigger)

    def _sources(self, stage: _Stage, ins: Instruction) -> None:
        """BuildKit's toCommand: the states a COPY or RUN reads, as dependencies of `stage`."""
        target = ins.trigger or ins
        if target.cmd == "copy":
            values = _flag_values(target, "--from", ins.line)
            if len(values) > 1:
                raise DockerfileError(ins.line, "duplicate flag specified: --from")
            if values and values[0]:  # an empty --from= is the build context
                self._copy_from(stage, values[0], ins.line)
        elif target.cmd == "run":
            for spec in _flag_values(target, "--mount", ins.line):
                self._mount(stage, spec, ins.line)

    def _copy_from(self, stage: _Stage, value: str, line: int) -> None:
        try:  # BuildKit compares the value with itself expanded in an empty environment
            special = any(c in value for c in ("$", "'", '"', self.source.escape))
            same = not special or expand(value, {}, self.source.escape).value == value
        except ExpandError:
            same = False
        if not same:
            raise DockerfileError(line, "variable expansion is not supported for --from")
        message = f"stage {shorten(value)} needs to be defined before current stage"
        if _GO_INT_RE.fullmatch(value) and len(value) < 21 and abs(int(value)) < 2**63:  # Atoi
            index = int(value)
            if not 0 <= index < len(self.stages) + len(self.sources):
                raise DockerfileError(line, f"invalid stage index {index}")
            self._use(stage, index, line, message)
            return
        named = self.names.get(value.lower())
        if named is not None:
            self._use(stage, named, line, message)
            return
        self._use(stage, self._image_source(stage, value, COPY, line), line, None)

    def _mount(self, stage: _Stage, spec: str, line: int) -> None:
        kind, value = _mount_from(spec, line)
        if value and "$" in value:
            raise DockerfileError(line, "variable expansion is not supported for mount from")
        if value and kind == "secret":
            stage.failures.append((line, "secret mount should not have a from"))
        source = value or "scratch"  # also the source of a mount without from
        checked = bool(value) or kind == "cache"
        message = f"stage {shorten(source)} needs to be defined before current command"
        index = self.names.get(source.lower())
        if index is not None:
            self._use(stage, index, line, message if checked else None)
            return
        self._use(stage, self._image_source(stage, source, MOUNT, line), line, None)

    def _use(self, stage: _Stage, node: int, line: int, message: str | None) -> None:
        stage.deps.add(node)
        stage.uses.append((node, line, message))

    def _image_source(self, stage: _Stage, value: str, kind: str, line: int) -> int:
        """An image (or scratch, or a named context) read by `stage`: a new node, validated
        now as BuildKit resolves every such state, reached or not."""
        label = stage.name or str(stage.index)
        ref = None
        ctx = self._context(value)
        if ctx:
            ref = self._image(ctx, kind, line, None, label, value)
        elif ctx is None and value != "scratch":
            ref = self._image(value, kind, line, None, label)
        self.sources.append(_Source(stage.index, ref))
        return len(self.stages) + len(self.sources) - 1

    # -- the target and what it reaches

    def _target(self) -> int:
        if self.target is None:
            return len(self.stages) - 1
        index = self.names.get(self.target.lower())
        if index is None:
            raise DockerfileError(
                self.stages[-1].line, f"target stage {self.target!r} could not be found"
            )
        return index

    def _syntax(self) -> BaseRef | None:
        value, line = _syntax_value(self.source.syntax, self.build_args)
        if not value:
            return None
        ref = self._image(value, SYNTAX, line, None, "syntax")
        if refs.parse(value).name not in _DOCKERFILE_FRONTENDS:
            self.warnings.append(Warning(line, _custom_warning(value)))
        return replace(ref, stage=None)

    def _exported_triggers(self, target: int) -> list[BaseRef]:
        """Target-stage ONBUILD sources that can only be images (contain / : or @). The
        triggers are not read in this build, so one that would fail is left out."""
        out: list[BaseRef] = []
        for trigger in self.stages[target].triggers:
            for kind, value in _named_sources(trigger):
                if "$" in value or not any(c in value for c in "/:@"):
                    continue
                try:
                    ref = self._image(value, kind, trigger.line, None, "")
                except DockerfileError:
                    continue
                out.append(replace(ref, stage=None))
        return out


def _arg_pairs(ins: Instruction, escape: str) -> Iterator[tuple[str, str | None]]:
    if not ins.args:
        raise DockerfileError(ins.line, "ARG requires at least one argument")
    for word in split_words(ins.args, escape):
        key, eq, value = word.partition("=")
        if not key:
            raise DockerfileError(ins.line, f"ARG names must not be empty: {shorten(word)}")
        yield key, (value if eq else None)


def _flag_values(ins: Instruction, flag: str, line: int) -> list[str]:
    """The values of every `flag=value` of an instruction; `flag` without `=` is an error."""
    values = []
    for word in ins.flags:
        name, eq, value = word.partition("=")
        if name == flag:
            if not eq:
                raise DockerfileError(line, f"missing a value on flag: {flag[2:]}")
            values.append(value)
    return values


def _named_sources(ins: Instruction) -> Iterator[tuple[str, str]]:
    """(kind, value) of each non-empty `COPY --from=` and `RUN --mount=…,from=`, also
    inside ONBUILD."""
    target = ins.trigger or ins
    if target.cmd == "copy":
        yield from ((COPY, v) for v in _flag_values(target, "--from", ins.line) if v)
    elif target.cmd == "run":
        for spec in _flag_values(target, "--mount", ins.line):
            value = _mount_from(spec, ins.line)[1]
            if value:
                yield MOUNT, value


def _mount_from(spec: str, line: int) -> tuple[str, str]:
    """(type, from) of a RUN --mount; from is "" when absent. BuildKit takes `from` of any
    mount type as a source; only a secret mount refuses one, when it is dispatched."""
    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as err:
        raise DockerfileError(line, f"invalid --mount {shorten(spec)}: {err}") from None
    kind, source = "bind", ""
    for item in fields:
        key, _, value = item.strip().partition("=")
        key = key.lower()
        if key == "type":
            kind = value.lower()
        elif key == "from":
            source = value
    return kind, source
