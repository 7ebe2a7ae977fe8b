"""Image references in deploy-repository YAML, found and rewritten in place.

A redeploy must change one reference and nothing else: people review the diff, and a
re-serialised file loses comments, quoting, key order and line ends. So, as Renovate
does, the composer's character offsets locate the value, only that span is replaced,
and the edited text is read again to prove that it says what was meant.

The deploy tools (kubectl, kustomize, Argo CD, Flux) read YAML with go-yaml, a port of
libyaml, so libyaml parses here and PyYAML's composer builds the nodes: a tab after a
value, which PyYAML's own scanner refuses, is read as they read it. Without libyaml the
pure-Python parser reads less, and a file it refuses says so.

Anyone who can push to a deploy repository writes what this reads, so a file gets
bounded work: at most MAX_BYTES, MAX_NODES composed nodes (aliases count once per use)
and MAX_DEPTH nested collections (PyYAML's composer recurses per level), and the walk
visits each written node once however many aliases reach it. Beyond that, the file is
a ManifestError, which costs that file and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

import yaml
from yaml.composer import Composer
from yaml.events import CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:  # libyaml: PyYAML's wheels and Debian's python3-yaml include it
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without it
    CParser = None

from graphbuild import refs
from graphbuild.errors import InvalidReference

CONTAINER, KUSTOMIZE, HELM = "container", "kustomize", "helm"
KUSTOMIZATIONS = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
CONTAINER_KEYS = ("containers", "initContainers", "ephemeralContainers")
MAX_BYTES = 2 * 1024 * 1024  # Kubernetes stores an object of at most 1.5 MiB
MAX_DEPTH = 100  # nested mappings and sequences; real manifests stay under 30
MAX_NODES = 200_000  # about 2 MiB of YAML as people write it; ~150 MB composed

_STR, _NULL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null"
_PROPERTIES = re.compile(r"(?:[&!]\S*\s+)*")  # an anchor or a tag written before the value
_LINE_BREAK = re.compile(r"[\r\n]")
_BREAK = re.compile(r"\r\n|\r|\n")
_INDENT = re.compile(r" *")
_BLOCK = ("|", ">")  # literal and folded block scalars' styles
_SPACE = re.compile(r"\s")

Path = tuple[str | int, ...]
Parts = tuple[str, str | None, str | None]  # name, tag, digest as written


class ManifestError(Exception):
    """A manifest that cannot be read, or a reference that cannot be rewritten; says where."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message, self.line = message, line
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True)
class Found:
    """One image reference in one file."""

    kind: str  # CONTAINER | KUSTOMIZE | HELM
    line: int  # 1-based
    name: str  # the repository as written: kustomize newName, helm registry/repository
    tag: str | None
    digest: str | None
    workload: str  # "Kind/namespace/name", "kustomization", or a helm key path "frontend.image"
    container: str | None
    doc: int  # 0-based document in the file
    path: Path  # of the located node inside its document


def find(file: str, text: str) -> list[Found]:
    """All image references in one YAML file's text; `file` (a path inside the repository)
    decides the dialect by name."""
    kind = _dialect(file)
    return [] if kind is None else [found for found, _ in _detect(kind, text)]


def rewrite(text: str, found: Found, tag: str | None, digest: str) -> str:
    """`text` with that one reference now pointing at `digest` (and `tag` where one is
    written); raises ManifestError when the edit cannot be made or does not re-read as intended."""
    try:
        refs.parse(f"x:{tag}@{digest}" if tag is not None else f"x@{digest}")
    except InvalidReference as exc:
        pin = _written(found.name, tag, digest)
        raise ManifestError(f"cannot pin to {pin}: {exc.reason}", found.line) from exc
    before = _detect(found.kind, text)
    current, node = _match(before, found)
    start, end, new, want_tag = _edit(text, current, node, tag, digest)
    edited = text[:start] + new + text[end:]
    try:
        after = _detect(found.kind, edited)
        now, _ = _match(after, found)
    except ManifestError as exc:
        raise ManifestError(f"pinning {found.name} breaks the file: {exc}", found.line) from exc
    others_changed = _others(after, now) != _others(before, current)
    if others_changed or (now.tag, now.digest) != (want_tag, digest):
        raise ManifestError(f"pinning {found.name} does not re-read as {digest}", found.line)
    return edited


def too_big(size: int) -> str:
    """Why a file of `size` bytes is not read: readers that know the size say it first."""
    return f"{size} bytes, over the {MAX_BYTES} bytes ({MAX_BYTES >> 20} MiB) a manifest may have"


def _dialect(file: str) -> str | None:
    path = PurePosixPath(file)
    if "templates" in path.parts[:-1]:
        return None  # Helm chart sources: templates, not manifests
    if path.name in KUSTOMIZATIONS:
        return KUSTOMIZE
    if path.suffix not in (".yaml", ".yml"):
        return None
    return HELM if fnmatchcase(path.name, "values*" + path.suffix) else CONTAINER


class _Bounded(Composer, Resolver):
    """PyYAML's composer with a bound on nodes and nesting: past them it would take memory
    without end, or raise RecursionError from deep inside PyYAML. It composes the events of
    whichever parser it is mixed with."""

    NOTE = ""  # said after a refusal that another parser might not make
    BYTE_POSITIONS = False  # does a ReaderError's position count UTF-8 bytes, not characters

    def __init__(self) -> None:
        Composer.__init__(self)
        Resolver.__init__(self)
        self.nodes = self.depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:
        event = self.peek_event()
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ManifestError(f"more than {MAX_NODES} YAML nodes", event.start_mark.line + 1)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            line = event.start_mark.line + 1
            raise ManifestError(f"nested deeper than {MAX_DEPTH} levels", line)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _PyLoader(Reader, Scanner, Parser, _Bounded):
    """PyYAML's own parser: it refuses tabs that go-yaml takes (`kind: Pod<TAB>`)."""

    NOTE = " (PyYAML without libyaml reads less YAML than kubectl: install PyYAML with libyaml)"

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Bounded.__init__(self)


_LOADER: type[_Bounded] = _PyLoader
if CParser is not None:

    class _CLoader(_Bounded, CParser):
        """libyaml's parser, which go-yaml (kubectl, kustomize, Argo CD, Flux) is a port of, so
        it reads what they read. Its marks count characters, as PyYAML's do, so spans are
        found alike; a ReaderError's position counts UTF-8 bytes."""

        BYTE_POSITIONS = True

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Bounded.__init__(self)

    _LOADER = _CLoader


def _compose(text: str) -> list[Node]:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ManifestError(too_big(size))
    loader = _LOADER
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: bytes that were not UTF-8
        raise ManifestError("not valid YAML: not UTF-8 text", _line(text, exc.start)) from exc
    try:
        stream = loader(text)
        docs = []
        while stream.check_node():
            docs.append(stream.get_node())
        return docs
    except ReaderError as exc:  # a character YAML forbids
        at = (
            len(text.encode()[: exc.position].decode(errors="ignore"))
            if loader.BYTE_POSITIONS
            else exc.position
        )
        problem = f"not valid YAML: {exc.reason}{loader.NOTE}"
        raise ManifestError(problem, _line(text, at)) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ManifestError(
            f"not valid YAML: {exc.problem}{loader.NOTE}", mark and mark.line + 1
        ) from exc


def _detect(kind: str, text: str) -> list[tuple[Found, Node]]:
    """Each reference once: an anchored value used again through aliases is one span."""
    out: list[tuple[Found, Node]] = []
    spans: set[tuple[int, int]] = set()
    for index, doc in enumerate(_compose(text)):
        if not isinstance(doc, MappingNode):
            continue
        for found, node in _DETECTORS[kind](text, index, doc):
            span = (node.start_mark.index, node.end_mark.index)
            if span not in spans:
                spans.add(span)
                out.append((found, node))
    return out


def _containers(text: str, index: int, doc: MappingNode) -> Iterator[tuple[Found, Node]]:
    meta = _get(doc, "metadata")
    where = (_get(doc, "kind"), _get(meta, "namespace"), _get(meta, "name"))
    workload = "/".join(_value(node) or "" for node in where)
    walked: set[int] = set()  # a list of containers that aliases share is read once
    for mapping, path in _mappings(doc):
        for key in CONTAINER_KEYS:
            items = _get(mapping, key)
            if not isinstance(items, SequenceNode) or id(items) in walked:
                continue
            walked.add(id(items))
            for i, item in enumerate(items.value):
                image = _get(item, "image")
                ref = _image(text, image)
                if ref is not None:
                    line, parts = ref
                    where = (*path, key, i, "image")
                    name = _value(_get(item, "name"))
                    yield Found(CONTAINER, line, *parts, workload, name, index, where), image


def _kustomize(text: str, index: int, doc: MappingNode) -> Iterator[tuple[Found, Node]]:
    images = _get(doc, "images")
    for i, entry in enumerate(images.value if isinstance(images, SequenceNode) else ()):
        name = _get(entry, "name")
        if not isinstance(name, ScalarNode) or name.tag != _STR:
            continue
        new_name, tag, digest = (_value(_get(entry, k)) for k in ("newName", "newTag", "digest"))
        parts = _parts(_written(new_name or _text(name), tag, digest))
        if parts is not None:
            line = _line(text, _start(text, name))
            yield Found(KUSTOMIZE, line, *parts, "kustomization", None, index, ("images", i)), entry


def _helm(text: str, index: int, doc: MappingNode) -> Iterator[tuple[Found, Node]]:
    for mapping, path in _mappings(doc):
        repository = _get(mapping, "repository")
        named = bool(path) and str(path[-1]).lower().endswith("image")
        tag, digest = _get(mapping, "tag"), _get(mapping, "digest")
        pinned = tag is not None or digest is not None or named
        if isinstance(repository, ScalarNode) and repository.tag == _STR and pinned:
            registry = _value(_get(mapping, "registry"))
            name = f"{registry}/{_text(repository)}" if registry else _text(repository)
            parts = _parts(_written(name, _value(tag), _value(digest)))
            if parts is not None:
                line = _line(text, _start(text, repository))
                where = ".".join(map(str, path))
                yield Found(HELM, line, *parts, where, None, index, path), mapping
        for key, value in mapping.value:
            image = isinstance(key, ScalarNode) and key.value.lower().endswith("image")
            ref = _image(text, value) if image else None
            if ref is not None:
                where = (*path, key.value)
                dotted = ".".join(map(str, where))
                yield Found(HELM, ref[0], *ref[1], dotted, None, index, where), value


_DETECTORS: dict[str, Callable[[str, int, MappingNode], Iterator[tuple[Found, Node]]]] = {
    CONTAINER: _containers,
    KUSTOMIZE: _kustomize,
    HELM: _helm,
}


def _mappings(doc: Node) -> Iterator[tuple[MappingNode, Path]]:
    """Every mapping under `doc` once, even where aliases share or nest one, in document
    order; a stack, not recursion, so a deep file costs no deeper a call stack."""
    seen: set[int] = set()
    stack: list[tuple[Node, Path]] = [(doc, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            yield node, path
            below = [(v, (*path, k.value)) for k, v in node.value if isinstance(k, ScalarNode)]
        elif isinstance(node, SequenceNode):
            below = [(item, (*path, i)) for i, item in enumerate(node.value)]
        else:
            continue
        stack.extend(reversed(below))


def _get(node: Node | None, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, value in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return value
    return None


def _value(node: Node | None) -> str | None:
    """A scalar's text as written (`tag: 1.20` stays "1.20"); None when absent or empty."""
    if isinstance(node, ScalarNode) and node.tag != _NULL and node.value:
        return _text(node)
    return None


def _text(node: ScalarNode) -> str:
    """A scalar's value; a block scalar's without its final line breaks (`|` keeps one), so
    `image: |` over one line names the reference on that line."""
    return node.value.rstrip("\n") if node.style in _BLOCK else node.value


def _written(name: str, tag: str | None, digest: str | None) -> str:
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _parts(written: str) -> Parts | None:
    """Name, tag and digest as written, or None for what is not a literal reference."""
    if "{{" in written or "$" in written or _SPACE.search(written):
        return None  # templated, or not one token (refs.parse lets a final newline through)
    try:
        refs.parse(written)
    except InvalidReference:
        return None
    rest, _, digest = written.partition("@")
    name, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:  # `localhost:5000/x`: a port, not a tag
        name, tag = rest, ""
    return name, tag or None, digest or None


def _image(text: str, node: Node | None) -> tuple[int, Parts] | None:
    """Line and parts of a one-line string that is an image reference."""
    if not isinstance(node, ScalarNode) or node.tag != _STR:
        return None
    span, parts = _span(text, node), _parts(_text(node))
    if span is None or parts is None:
        return None
    return _line(text, span[0]), parts


def _start(text: str, node: Node) -> int:
    """Where the value itself starts: the composer's mark includes any anchor or tag."""
    return _PROPERTIES.match(text, node.start_mark.index).end()


def _span(text: str, node: Node) -> tuple[int, int] | None:
    """The characters of a one-line scalar, quotes included; None where no safe edit exists."""
    if not isinstance(node, ScalarNode):
        return None
    if node.style in _BLOCK:
        return _block(text, node)
    start, end = _start(text, node), node.end_mark.index
    source = text[start:end]
    if not node.style:  # plain: libyaml says "", PyYAML None
        empty = node.tag == _NULL and not source and text[start - 1 : start] == ":"  # `digest:`
        ok = empty or source == node.value
    else:
        ok = (
            len(source) >= 2
            and source[0] == source[-1] == node.style
            and not _LINE_BREAK.search(source)
        )
    return (start, end) if ok else None


def _block(text: str, node: ScalarNode) -> tuple[int, int] | None:
    """The one line of a block scalar that holds its whole value: the line after the header
    (`|-`, `>2`, and any comment), past its indentation."""
    value = _text(node)
    header = _BREAK.search(text, _start(text, node))
    if not value or "\n" in value or value[0] in " \t" or header is None:
        return None  # empty, several lines (folded or not), or spaces the block keeps
    start = _INDENT.match(text, header.end()).end()
    end = start + len(value)
    if text[start:end] != value or text[end : end + 1] not in ("", "\r", "\n"):
        return None
    return start, end


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _match(pairs: list[tuple[Found, Node]], found: Found) -> tuple[Found, Node]:
    for current, node in pairs:
        if (current.doc, current.path, current.name) == (found.doc, found.path, found.name):
            return current, node
    raise ManifestError(f"{found.name} is no longer in document {found.doc}", found.line)


def _others(pairs: list[tuple[Found, Node]], edited: Found) -> list[Found]:
    """Every other reference, lines aside (an inserted `digest:` line moves those below)."""
    return [replace(f, line=0) for f, _ in pairs if (f.doc, f.path) != (edited.doc, edited.path)]


def _edit(
    text: str, found: Found, node: Node, tag: str | None, digest: str
) -> tuple[int, int, str, str | None]:
    """The span to replace, its new text, and the tag the reference then has."""
    new_tag = found.tag if tag is None else tag
    if isinstance(node, ScalarNode):  # CONTAINER, or a helm `image: repo:tag`
        value = _written(found.name, new_tag, digest)
        return (*_replace(text, node, value, "image", found.line), new_tag)
    existing = _get(node, "digest")
    if existing is not None:
        return (*_replace(text, existing, digest, "digest", found.line), found.tag)
    if found.kind == KUSTOMIZE:  # digest overrides newTag, which stays
        return (*_insert(text, node, f"digest: {digest}", found.line), found.tag)
    tag_node = _get(node, "tag")
    if tag_node is None or new_tag is None:
        raise ManifestError(f"{found.name} has no tag or digest to pin", found.line)
    return (*_replace(text, tag_node, f"{new_tag}@{digest}", "tag", found.line), new_tag)


def _replace(text: str, node: Node, value: str, what: str, line: int) -> tuple[int, int, str]:
    span = _span(text, node)
    if span is None:
        raise ManifestError(f"cannot rewrite {what}: not a one-line scalar", line)
    start, end = span
    quote = node.style if node.style in ("'", '"') else ""
    return start, end, f"{' ' if start == end else ''}{quote}{value}{quote}"


def _insert(text: str, entry: MappingNode, pair: str, line: int) -> tuple[int, int, str]:
    """A new key after the entry's last one: `, key: v` in a flow mapping, else its own line."""
    span = _span(text, entry.value[-1][1])
    if span is None:
        raise ManifestError("cannot add a key after a value that is not a one-line scalar", line)
    if entry.flow_style:
        return span[1], span[1], f", {pair}"
    first = _start(text, entry.value[0][0])
    indent = first - (text.rfind("\n", 0, first) + 1)
    brk = _LINE_BREAK.search(text, span[1])
    at = brk.start() if brk else len(text)
    eol = "\r\n" if "\r\n" in text else "\n"
    return at, at, f"{eol}{' ' * indent}{pair}"
