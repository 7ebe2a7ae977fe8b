"""Image references in deploy-repository YAML, found and rewritten in place.

A redeploy must change one reference and nothing else: people review the diff, and a
re-serialised file loses comments, quoting, key order and line ends. So, as Renovate
does, the composer's character offsets locate the value, only that span is replaced,
and the edited text is read again to prove that it says what was meant.

The deploy tools (kubectl, kustomize, Argo CD, Flux) read YAML with go-yaml, a port of
libyaml, so libyaml parses here and PyYAML's composer builds the nodes: a tab after a
value, which PyYAML's own scanner refuses, is read as they read it. Without libyaml the
pure-Python parser reads less, and a file it refuses says so.

Helm values are read where the chart is deployed from, too (INLINE): a Flux HelmRelease's
`spec.values` and the ConfigMap keys its `valuesFrom` names, an Argo CD Application's (or
ApplicationSet template's) `helm.valuesObject` and `helm.values` string, a kustomization's
`helmCharts[].valuesInline`. Values held in a YAML string are parsed as YAML, and an edit
is placed in the file where the string's characters stand (a `|` block, or a quoted
string without escapes); where escapes or folding moved them, the edit is refused.

An Argo CD source's Helm values are its `valuesObject`, else its `values` string (Argo CD
reads one, never both), with its `helm.parameters` set over them, read together. Images
Argo CD and Flux set themselves are read too (OVERRIDE): Argo CD's `kustomize.images`
strings, in `kustomize edit set image`'s form, and the kustomize image entries of a Flux
Kustomization's `spec.images` and a HelmRelease's post-renderers.

Anyone who can push to a deploy repository writes what this reads, so a file gets
bounded work: at most MAX_BYTES, MAX_NODES composed nodes (aliases count once per use;
parameters count as the values they set, once per source they are merged in)
and MAX_DEPTH nested collections (PyYAML's composer recurses per level), and the walk
visits each written node once however many aliases reach it (a values string's nodes
count too, and it is parsed once). Beyond that, the file is
a ManifestError, which costs that file and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

import yaml
from yaml.composer import Composer
from yaml.error import Mark
from yaml.events import CollectionStartEvent, Event
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from graphbuild import refs
from graphbuild.errors import InvalidReference
from graphbuild.workloads import Found, Path

CONTAINER, KUSTOMIZE, HELM = "container", "kustomize", "helm"
INLINE = "helm-inline"  # Helm values written in the object that deploys the chart
OVERRIDE = "override"  # an image the deploying object sets (Argo CD, Flux kustomize images)
KUSTOMIZATIONS = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
CONTAINER_KEYS = ("containers", "initContainers", "ephemeralContainers")
MAX_BYTES = 2 * 1024 * 1024  # Kubernetes stores an object of at most 1.5 MiB
MAX_DEPTH = 100  # nested mappings and sequences; real manifests stay under 30
MAX_NODES = 200_000  # about 2 MiB of YAML as people write it; ~150 MB composed

_STR, _NULL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_PROPERTIES = re.compile(r"(?:[&!]\S*\s+)*")  # an anchor or a tag written before the value
_LINE_BREAK = re.compile(r"[\r\n]")
_BREAK = re.compile(r"\r\n|\r|\n")
_INDENT = re.compile(r" *")
_BLOCK = ("|", ">")  # literal and folded block scalars' styles
_SPACE = re.compile(r"\s")

Parts = tuple[str, str | None, str | None]  # name, tag, digest as written
Held = tuple[str | None, str, str]  # a ConfigMap's namespace (None: any), name, and values key
Segments = tuple[tuple[int, int, int], ...]  # (in a YAML string, in the file, length) of runs


class ManifestError(Exception):
    """A manifest that cannot be read, or a reference that cannot be rewritten; says where."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message, self.line = message, line
        super().__init__(f"line {line}: {message}" if line else message)


class _Invalid(ManifestError):
    """Text that is not YAML, as opposed to YAML past a limit."""


@dataclass(frozen=True)
class _Hit:
    """A reference found, its node, and the text its node's marks count in: the file, or a
    YAML string in it (Helm values) whose characters stand in the file at `segments` (None:
    escapes or folding moved them, so no edit can be placed)."""

    found: Found
    node: Node
    string: str | None = None
    segments: Segments | None = None
    base: int = -1  # where that string starts in the file


@dataclass
class _Reading:
    """One file being read: its text, which ConfigMap keys hold Helm values (document,
    namespace, name, key), and the YAML nodes composed so far, the strings' included."""

    text: str
    holds: Callable[[int, str | None, str | None, str], bool]
    nodes: int = 0
    walked: set[int] = field(default_factory=set)  # values that aliases share: read once
    # mappings made here (Helm parameters set over values), kept while the file is read so
    # that no other node takes an id `walked` holds
    made: list[Node] = field(default_factory=list)

    def first(self, node: Node) -> bool:
        """Is this the first time `node` is read (as Helm values, image overrides)?"""
        seen = id(node) in self.walked
        self.walked.add(id(node))
        return not seen


def find(file: str, text: str, values: Iterable[Held] = ()) -> list[Found]:
    """All image references in one YAML file's text; `file` (a path inside the repository)
    decides the dialect by name. `values` names the ConfigMaps whose key holds Helm values
    (a Flux HelmRelease's `valuesFrom`, see values_from)."""
    held: dict[tuple[str, str], set[str | None]] = {}  # a lookup per key, however many
    for ns, n, k in values:
        held.setdefault((n, k), set()).add(ns)

    def holds(doc: int, namespace: str | None, name: str | None, key: str) -> bool:
        # a namespace left out is for kustomize or Flux to set: it matches any
        spaces = held.get((name, key), set()) if name is not None else set()
        return bool(spaces) and (namespace is None or None in spaces or namespace in spaces)

    kinds = _KINDS.get(_dialect(file) or "", ())
    return [hit.found for hit in _detect(kinds, _Reading(text, holds))]


def again(file: str, text: str, found: Found) -> list[Found]:
    """The references find() gives in `text`, where `found` is looked for again: the
    ConfigMap key it was found in is read as Helm values whoever named it."""
    kinds = _KINDS.get(_dialect(file) or "", ())
    return [hit.found for hit in _detect(kinds, _Reading(text, _holding(found)))]


def values_from(file: str, text: str) -> list[Held]:
    """The ConfigMaps the Flux HelmReleases in a file take Helm values from (`valuesFrom`
    without a `targetPath`: a whole YAML document under the key, `values.yaml` by default)."""
    if _dialect(file) != CONTAINER:
        return []
    out: list[Held] = []
    for doc in _compose(text, _Reading(text, _holding(None))):
        if not _is(doc, "HelmRelease", "helm.toolkit.fluxcd.io/"):
            continue
        namespace = _value(_get(_get(doc, "metadata"), "namespace"))
        sources = _get(_get(doc, "spec"), "valuesFrom")
        for entry in sources.value if isinstance(sources, SequenceNode) else ():
            name, key = _value(_get(entry, "name")), _value(_get(entry, "valuesKey"))
            kind, target = _value(_get(entry, "kind")), _get(entry, "targetPath")
            if kind == "ConfigMap" and name and target is None:
                out.append((namespace, name, key or "values.yaml"))
    return out


def rewrite(text: str, found: Found, tag: str | None, digest: str) -> str:
    """`text` with that one reference now pointing at `digest` (and `tag` where one is
    written); raises ManifestError when the edit cannot be made or does not re-read as intended."""
    try:
        refs.parse(f"x:{tag}@{digest}" if tag is not None else f"x@{digest}")
    except InvalidReference as exc:
        pin = _written(found.name, tag, digest)
        raise ManifestError(f"cannot pin to {pin}: {exc.reason}", found.line) from exc
    kinds = _FORMS[found.kind]
    before = _detect(kinds, _Reading(text, _holding(found)))
    hit = _match(before, found)
    current = hit.found
    start, end, new, want_tag = _edit(
        text if hit.string is None else hit.string, current, hit.node, tag, digest
    )
    if hit.string is not None:
        placed = _place(hit.segments, start, end)
        if placed is None:
            raise ManifestError(
                f"cannot rewrite {found.name}: its Helm values are a YAML string written with "
                "escapes or folded lines, so its characters are not where they read; write it "
                "as a `|` block",
                current.line,
            )
        start, end = placed
    edited = text[:start] + new + text[end:]
    try:
        after = _detect(kinds, _Reading(edited, _holding(found)))
        now = _match(after, found).found
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


def _holding(found: Found | None) -> Callable[[int, str | None, str | None, str], bool]:
    """Which ConfigMap keys hold Helm values when looking for `found` again: its own."""
    at = found.path[:2] if found is not None and found.kind == INLINE else ()

    def holds(doc: int, namespace: str | None, name: str | None, key: str) -> bool:
        return found is not None and at == ("data", key) and doc == found.doc

    return holds


class _Bounded(Composer, Resolver):
    """PyYAML's composer with a bound on nodes and nesting: past them it would take memory
    without end, or raise RecursionError from deep inside PyYAML. It composes the events of
    whichever parser it is mixed with."""

    NOTE = ""  # said after a refusal that another parser might not make
    BYTE_POSITIONS = False  # does a ReaderError's position count UTF-8 bytes, not characters

    peek_event: Callable[[], Event]  # the parser's

    def __init__(self) -> None:
        Composer.__init__(self)
        Resolver.__init__(self)
        self.nodes = self.depth = 0

    # `index`: PyYAML passes a mapping value's key node, where its stub says int (the ignores)
    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ManifestError(f"more than {MAX_NODES} YAML nodes", line)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ManifestError(f"nested deeper than {MAX_DEPTH} levels", line)
        try:
            return super().compose_node(parent, index)  # type: ignore[arg-type]
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


_LOADER: type[_PyLoader | _CLoader] = _PyLoader
if yaml.__with_libyaml__:  # PyYAML's wheels and Debian's python3-yaml include libyaml
    from yaml._yaml import CParser

    class _CLoader(_Bounded, CParser):
        """libyaml's parser, which go-yaml (kubectl, kustomize, Argo CD, Flux) is a port of, so
        it reads what they read. Its marks count characters, as PyYAML's do, so spans are
        found alike; a ReaderError's position counts UTF-8 bytes."""

        BYTE_POSITIONS = True

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Bounded.__init__(self)

    _LOADER = _CLoader


def _compose(text: str, reading: _Reading) -> list[Node]:
    """The documents of `text` (the file, or a YAML string in it), their nodes counted
    against the file's MAX_NODES."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ManifestError(too_big(size))
    loader = _LOADER
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: bytes that were not UTF-8
        raise _Invalid("not valid YAML: not UTF-8 text", _line(text, exc.start)) from exc
    try:
        stream = loader(text)
        stream.nodes = reading.nodes
        docs = []
        while stream.check_node():
            if (doc := stream.get_node()) is not None:  # it is: check_node said so
                docs.append(doc)
        reading.nodes = stream.nodes
        return docs
    except ReaderError as exc:  # a character YAML forbids
        at = (
            len(text.encode()[: exc.position].decode(errors="ignore"))
            if loader.BYTE_POSITIONS
            else exc.position
        )
        problem = f"not valid YAML: {exc.reason}{loader.NOTE}"
        raise _Invalid(problem, _line(text, at)) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise _Invalid(
            f"not valid YAML: {exc.problem}{loader.NOTE}", mark.line + 1 if mark else None
        ) from exc


def _detect(kinds: tuple[str, ...], reading: _Reading) -> list[_Hit]:
    """Each reference once: an anchored value used again through aliases is one span, and
    a value two detectors see is the first one's."""
    out: list[_Hit] = []
    spans: set[tuple[int, int, int]] = set()
    for index, doc in enumerate(_compose(reading.text, reading)):
        if not isinstance(doc, MappingNode):
            continue
        for kind in kinds:
            for hit in _DETECTORS[kind](reading, index, doc):
                span = (hit.base, hit.node.start_mark.index, hit.node.end_mark.index)
                if span not in spans:
                    spans.add(span)
                    out.append(hit)
    return out


def _containers(reading: _Reading, index: int, doc: MappingNode) -> Iterator[_Hit]:
    text = reading.text
    meta = _get(doc, "metadata")
    names = (_get(doc, "kind"), _get(meta, "namespace"), _get(meta, "name"))
    workload = "/".join(_value(node) or "" for node in names)
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
                if ref is not None and image is not None:  # a reference is in a node
                    line, parts = ref
                    where = (*path, key, i, "image")
                    name = _value(_get(item, "name"))
                    found = Found(CONTAINER, line, *parts, workload, name, index, where)
                    yield _Hit(found, image)


def _kustomize(reading: _Reading, index: int, doc: MappingNode) -> Iterator[_Hit]:
    yield from _entries(
        reading, _get(doc, "images"), index, ("images",), KUSTOMIZE, "kustomization"
    )


def _entries(
    reading: _Reading, images: Node | None, index: int, at: Path, kind: str, label: str
) -> Iterator[_Hit]:
    """kustomize's `images:` entries (name, newName, newTag, digest) at `at`: a kustomization's,
    or (OVERRIDE) a Flux Kustomization's or HelmRelease post-renderer's, whose workload is
    `label` and the entry's index."""
    text = reading.text
    for i, entry in enumerate(images.value if isinstance(images, SequenceNode) else ()):
        name = _get(entry, "name")
        if not isinstance(name, ScalarNode) or name.tag != _STR:
            continue
        new_name, tag, digest = (_value(_get(entry, k)) for k in ("newName", "newTag", "digest"))
        parts = _parts(_written(new_name or _text(name), tag, digest))
        if parts is not None:
            line = _line(text, _start(text, name))
            workload = label if kind == KUSTOMIZE else f"{label}images[{i}]"
            yield _Hit(Found(kind, line, *parts, workload, None, index, (*at, i)), entry)


def _helm(reading: _Reading, index: int, doc: MappingNode) -> Iterator[_Hit]:
    for found, node in _values(reading.text, index, doc, HELM, (), ""):
        yield _Hit(found, node)


def _values(
    text: str, index: int, root: Node, kind: str, at: Path, label: str
) -> Iterator[tuple[Found, Node]]:
    """Helm's image conventions in values whose root is `root`, at `at` in the document;
    each workload is `label` and the key path in the values."""
    for mapping, path in _mappings(root):
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
                workload = label + ".".join(map(str, path))
                yield Found(kind, line, *parts, workload, None, index, (*at, *path)), mapping
        for key, value in mapping.value:
            image = isinstance(key, ScalarNode) and key.value.lower().endswith("image")
            ref = _image(text, value) if image else None
            if ref is not None:
                where = (*path, key.value)
                dotted = label + ".".join(map(str, where))
                yield Found(kind, ref[0], *ref[1], dotted, None, index, (*at, *where)), value


def _objects(reading: _Reading, index: int, doc: MappingNode) -> Iterator[_Hit]:
    """What the objects that deploy read besides manifests: Helm values inline (a Flux
    HelmRelease's `spec.values`, an Argo CD Application's or ApplicationSet template's
    `helm.valuesObject` with its `helm.parameters` over it, and `helm.values` string, per
    source; ConfigMap keys a HelmRelease takes values from), and the images they set
    themselves (OVERRIDE): Argo CD's `kustomize.images` per source, a Flux Kustomization's
    `spec.images` and a HelmRelease's post-renderers' `kustomize.images`."""
    meta = _get(doc, "metadata")
    namespace, name = _value(_get(meta, "namespace")), _value(_get(meta, "name"))
    label = f"{_value(_get(doc, 'kind'))}/{namespace or ''}/{name or ''}:"
    spec = _get(doc, "spec")
    if _is(doc, "HelmRelease", "helm.toolkit.fluxcd.io/"):
        yield from _inline(reading, index, _get(spec, "values"), ("spec", "values"), label)
        renderers = _get(spec, "postRenderers")
        for i, renderer in enumerate(_items(reading, renderers)):
            entries: Path = ("spec", "postRenderers", i, "kustomize", "images")
            images = _get(_get(renderer, "kustomize"), "images")
            yield from _entries(
                reading, images, index, entries, OVERRIDE, f"{label}postRenderers[{i}]:"
            )
    elif _is(doc, "Kustomization", "kustomize.toolkit.fluxcd.io/"):
        yield from _entries(
            reading, _get(spec, "images"), index, ("spec", "images"), OVERRIDE, label
        )
    elif _is(doc, "Application", "argoproj.io/") or _is(doc, "ApplicationSet", "argoproj.io/"):
        at: Path = ("spec",)
        if _is(doc, "ApplicationSet", "argoproj.io/"):
            spec, at = _get(_get(spec, "template"), "spec"), ("spec", "template", "spec")
        sources: list[tuple[Node | None, Path, str]] = [
            (_get(spec, "source"), (*at, "source"), label)
        ]
        many = _get(spec, "sources")
        for i, source in enumerate(many.value if isinstance(many, SequenceNode) else ()):
            sources.append((source, (*at, "sources", i), f"{label}sources[{i}]:"))
        for source, path, where in sources:
            images = _get(_get(source, "kustomize"), "images")
            yield from _images(reading, index, images, (*path, "kustomize", "images"), where)
            helm = _get(source, "helm")
            if helm is None or not reading.first(helm):
                continue  # an aliased source is read once
            yield from _helm_source(reading, index, helm, (*path, "helm"), where)
    elif _is(doc, "ConfigMap", "v1"):
        data = _get(doc, "data")
        for key, value in data.value if isinstance(data, MappingNode) else ():
            if isinstance(key, ScalarNode) and reading.holds(index, namespace, name, key.value):
                where = f"{label}{key.value}:"
                yield from _string(reading, index, value, ("data", key.value), where)


def _helm_source(reading: _Reading, index: int, helm: Node, at: Path, label: str) -> Iterator[_Hit]:
    """The Helm values of an Argo CD source: its `valuesObject` when it has one (even `{}`),
    else its `values` string, never both (Argo CD's ValuesYAML), with `parameters` set over
    them. An image the parameters alone name is at `parameters` and its key path."""
    values, parameters = _get(helm, "valuesObject"), _get(helm, "parameters")
    if values is not None and values.tag != _NULL:
        inline = _over(reading, values, parameters)
        yield from _inline(reading, index, inline, (*at, "valuesObject"), label)
        return
    over = _over(reading, None, parameters)
    taken: set[Path] = set()  # key paths of the string's images, parameters set over them
    for hit in _string(reading, index, _get(helm, "values"), (*at, "values"), label, over):
        taken.add(hit.found.path[len(at) + 1 :])
        yield hit
    for hit in _inline(reading, index, over, (*at, "parameters"), label):
        if hit.found.path[len(at) + 1 :] not in taken:
            yield hit


def _under(reading: _Reading, hit: _Hit, over: Node, key: Path) -> _Hit | None:
    """A values string's image with Argo CD's parameters set over it: as it is where they set
    nothing of it; None where they set it (or a mapping above it) whole, so the image is
    theirs; else each of registry, repository, tag and digest from the parameters if they set
    it, and pinned where the digest, else the tag, that wins is written."""
    node: Node | None = over
    for k in key:
        if not isinstance(node, MappingNode):
            return None  # a parameter set a value above it: Helm replaces the mapping
        node = _get(node, str(k))
        if node is None:
            return hit
    if not isinstance(node, MappingNode) or not isinstance(hit.node, MappingNode):
        return None  # the parameters set it whole, or a mapping where a string was
    pick = {k: _get(node, k) for k in ("registry", "repository", "tag", "digest")}
    pick = {k: _get(hit.node, k) if v is None else v for k, v in pick.items()}
    repository = pick["repository"]
    if not isinstance(repository, ScalarNode) or repository.tag != _STR:
        return None
    registry = _value(pick["registry"])
    name = f"{registry}/{_text(repository)}" if registry else _text(repository)
    parts = _parts(_written(name, _value(pick["tag"]), _value(pick["digest"])))
    if parts is None:
        return None
    line = hit.found.line
    if _get(node, "repository") is not None:
        line = _line(reading.text, _start(reading.text, repository))
    found = replace(hit.found, line=line, name=parts[0], tag=parts[1], digest=parts[2])
    target = "digest" if pick["digest"] is not None else "tag"
    value = _get(node, target)
    if value is None:  # the string's own tag or digest wins: pinned in the string
        return replace(hit, found=found)
    key_node = ScalarNode(_STR, target, value.start_mark, value.end_mark)
    return _Hit(found, _made(reading, [(key_node, value)]))


def _made(reading: _Reading, pairs: list[tuple[Node, Node]]) -> MappingNode:
    """A mapping made here, of nodes in the file: a span no text has, its own."""
    mark = Mark("parameters", -1 - len(reading.made), 0, 0, None, 0)
    made = MappingNode(_MAP, pairs, mark, mark)
    reading.made.append(made)
    return made


def _items(reading: _Reading, node: Node | None) -> list[Node]:
    """A sequence's items, the first time it is read (aliases share it): else none."""
    return node.value if isinstance(node, SequenceNode) and reading.first(node) else []


def _images(
    reading: _Reading, index: int, images: Node | None, at: Path, label: str
) -> Iterator[_Hit]:
    """Argo CD's `kustomize.images`: strings it hands to `kustomize edit set image`, so read
    as that reads them (`name=newName:newTag@digest`, each part but the name optional, or
    `name:newTag`, `name@digest`); the image that runs is newName, else name. Argo CD
    substitutes `$VARS` first: such a string is skipped, as templated values are."""
    text = reading.text
    for i, item in enumerate(_items(reading, images)):
        if not isinstance(item, ScalarNode) or item.tag != _STR:
            continue
        span = _span(text, item)
        if span is None:
            continue
        old, equals, new = _text(item).partition("=")
        parts = _parts(new if equals else old)  # None also for `$VARS`, `{{ }}`, spaces
        if parts is None or (equals and _parts(old) is None):
            continue  # not a reference, or one made of `$VARS`
        if not equals and parts[1:] == (None, None):
            continue  # a name alone: `edit set image` refuses it
        line, where = _line(text, span[0]), f"{label}kustomize.images[{i}]"
        yield _Hit(Found(OVERRIDE, line, *parts, where, None, index, (*at, i)), item)


def _over(reading: _Reading, values: Node | None, parameters: Node | None) -> Node | None:
    """The Helm values an Argo CD source gives its chart: `valuesObject` with `parameters`
    set over it, as Helm's `--set name=value` sets them (`a.b.c` is a key path; the list
    `a[0]` and escaped-dot `a\\.b` forms are not read). Mappings a parameter sets a key in
    are copies made here whose other values are the file's nodes, and a parameter's value is
    its node in the file: an edit lands where the value is written. Values read again under
    other parameters (aliases share them) count against MAX_NODES again, and each parameter
    and copy counts as the nodes it stands for."""
    if not isinstance(parameters, SequenceNode):
        return values
    if values is not None and not reading.first(values):
        for mapping, _ in _mappings(values):
            _count(reading, 1 + len(mapping.value), mapping)
    keys: dict[int, dict[str, int]] = {}  # each mapping made here: where its keys are

    def own(node: Node | None) -> MappingNode:
        pairs = list(node.value) if isinstance(node, MappingNode) else []
        _count(reading, 1 + len(pairs), parameters)
        made = _made(reading, pairs)
        keys[id(made)] = {}
        for i, (key, _) in enumerate(pairs):
            if isinstance(key, ScalarNode):
                keys[id(made)].setdefault(key.value, i)
        return made

    root = own(values)
    for entry in parameters.value:
        name, value = _value(_get(entry, "name")), _get(entry, "value")
        if name is None or not isinstance(value, ScalarNode) or "[" in name or "\\" in name:
            continue
        path = name.split(".")
        _count(reading, len(path) + 1, value)
        if "" in path or len(path) > MAX_DEPTH:
            continue
        node = root
        for depth, key in enumerate(path):
            last = depth == len(path) - 1
            place = keys[id(node)].get(key)
            child = node.value[place][1] if place is not None else None
            deeper = None if last else child if id(child) in keys else own(child)
            below = value if deeper is None else deeper
            if place is None:
                keys[id(node)][key] = len(node.value)
                node.value.append((ScalarNode(_STR, key, value.start_mark, value.end_mark), below))
            else:
                node.value[place] = (node.value[place][0], below)
            if deeper is not None:
                node = deeper
    return root


def _count(reading: _Reading, nodes: int, at: Node) -> None:
    """Count `nodes` more read in the file, made or read again; past MAX_NODES, say where."""
    reading.nodes += nodes
    if reading.nodes > MAX_NODES:
        line = _line(reading.text, at.start_mark.index)
        raise ManifestError(f"more than {MAX_NODES} YAML nodes", line)


def _charts(reading: _Reading, index: int, doc: MappingNode) -> Iterator[_Hit]:
    """A kustomization's `helmCharts[].valuesInline`."""
    charts = _get(doc, "helmCharts")
    for i, chart in enumerate(charts.value if isinstance(charts, SequenceNode) else ()):
        name = _value(_get(chart, "releaseName")) or _value(_get(chart, "name")) or str(i)
        values = _get(chart, "valuesInline")
        yield from _inline(reading, index, values, ("helmCharts", i, "valuesInline"),
                           f"helmCharts/{name}:")  # fmt: skip


def _inline(
    reading: _Reading, index: int, root: Node | None, at: Path, label: str
) -> Iterator[_Hit]:
    if isinstance(root, MappingNode) and reading.first(root):
        for found, node in _values(reading.text, index, root, INLINE, at, label):
            yield _Hit(found, node)


def _string(
    reading: _Reading,
    index: int,
    node: Node | None,
    at: Path,
    label: str,
    over: Node | None = None,
) -> Iterator[_Hit]:
    """Helm values held in a YAML string: its first document is read as the chart reads it,
    and each reference is placed back in the file where its characters stand; `over`, an
    Argo CD source's parameters, is set over them (see _under)."""
    if not isinstance(node, ScalarNode) or node.tag != _STR or not reading.first(node):
        return
    text = reading.text
    first = _line(text, _start(text, node)) + (node.style in _BLOCK) - 1  # its lines, less one
    try:
        docs = _compose(node.value, reading)
    except _Invalid:
        return  # not YAML: the chart is not installed from it either
    except ManifestError as exc:  # a limit: said at the line it is reached in the file
        raise ManifestError(exc.message, (exc.line or 1) + first) from exc
    if not docs or not isinstance(docs[0], MappingNode):
        return
    segments, base = _segments(text, node), node.start_mark.index
    for found, inner in _values(node.value, index, docs[0], INLINE, at, label):
        line = found.line + first if segments is not None else _line(text, base)
        hit = _Hit(replace(found, line=line), inner, node.value, segments, base)
        kept = hit if over is None else _under(reading, hit, over, found.path[len(at) :])
        if kept is not None:
            yield kept


def _segments(text: str, node: ScalarNode) -> Segments | None:
    """Where a string's characters stand in the file, line by line: a quoted string with
    no escapes, or a block scalar whose lines are its value's lines, indented."""
    value = node.value
    if node.style in ("'", '"'):
        start, end = _start(text, node) + 1, node.end_mark.index - 1
        return ((0, start, len(value)),) if text[start:end] == value else None
    header = _BREAK.search(text, _start(text, node)) if node.style in _BLOCK else None
    if header is None:
        return None  # plain: a line break in it reads as a space
    out = []
    at, offset = header.end(), 0
    for line in value.split("\n"):
        brk = _BREAK.search(text, at)
        end = brk.start() if brk else len(text)
        if line:
            source = text[at:end] if at <= len(text) else ""
            if not source.endswith(line) or source[: len(source) - len(line)].strip(" "):
                return None
            out.append((offset, end - len(line), len(line)))
        offset += len(line) + 1
        at = brk.end() if brk else len(text) + 1
    return tuple(out)


def _place(segments: Segments | None, start: int, end: int) -> tuple[int, int] | None:
    """Where a span of a YAML string stands in the file, if all of it stands in one run."""
    for inner, outer, length in segments or ():
        if inner <= start and end <= inner + length:
            return outer + start - inner, outer + end - inner
    return None


def _is(doc: Node, kind: str, api: str) -> bool:
    """Is `doc` an object of this kind and API version: `api` itself, or any version of
    the group `api` ends with a slash in?"""
    version = _value(_get(doc, "apiVersion")) or ""
    ours = version.startswith(api) if api.endswith("/") else version == api
    return _value(_get(doc, "kind")) == kind and ours


_DETECTORS: dict[str, Callable[[_Reading, int, MappingNode], Iterator[_Hit]]] = {
    CONTAINER: _containers,
    KUSTOMIZE: _kustomize,
    HELM: _helm,
    "objects": _objects,
    "charts": _charts,
}
_KINDS = {  # what each dialect of file holds, first detector first
    CONTAINER: (CONTAINER, "objects"),
    KUSTOMIZE: (KUSTOMIZE, "charts"),
    HELM: (HELM,),
}
_FORMS = {  # where a reference of each kind is looked for again
    CONTAINER: (CONTAINER,),
    OVERRIDE: ("objects",),
    KUSTOMIZE: (KUSTOMIZE,),
    HELM: (HELM,),
    INLINE: ("objects", "charts"),
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
    return _past(_PROPERTIES, text, node.start_mark.index)


def _past(pattern: re.Pattern[str], text: str, at: int) -> int:
    """Where the run of `pattern` at `at` ends; the patterns given match the empty string."""
    found = pattern.match(text, at)
    return found.end() if found else at


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
    start = _past(_INDENT, text, header.end())
    end = start + len(value)
    if text[start:end] != value or text[end : end + 1] not in ("", "\r", "\n"):
        return None
    return start, end


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _match(hits: list[_Hit], found: Found) -> _Hit:
    for hit in hits:
        if (hit.found.doc, hit.found.path, hit.found.name) == (found.doc, found.path, found.name):
            return hit
    raise ManifestError(f"{found.name} is no longer in document {found.doc}", found.line)


def _others(hits: list[_Hit], edited: Found) -> list[Found]:
    """Every other reference, lines aside (an inserted `digest:` line moves those below)."""
    others = (hit.found for hit in hits)
    return [replace(f, line=0) for f in others if (f.doc, f.path) != (edited.doc, edited.path)]


def _edit(
    text: str, found: Found, node: Node, tag: str | None, digest: str
) -> tuple[int, int, str, str | None]:
    """The span to replace, its new text, and the tag the reference then has."""
    new_tag = found.tag if tag is None else tag
    if isinstance(node, ScalarNode):  # CONTAINER, a helm `image: repo:tag`, or Argo CD's
        value = _written(found.name, new_tag, digest)
        if found.kind == OVERRIDE:  # `name=newName:tag@digest`: kustomize 5.4 and on read
            # both; older ones take `newName:tag` for the new name, then add the digest
            old, equals, _ = _text(node).partition("=")
            if equals or new_tag is not None:
                value = f"{old if equals else found.name}={value}"
        return (*_replace(text, node, value, "image", found.line), new_tag)
    existing = _get(node, "digest")
    if existing is not None:
        return (*_replace(text, existing, digest, "digest", found.line), found.tag)
    if found.kind in (KUSTOMIZE, OVERRIDE) and isinstance(node, MappingNode):
        # kustomize's entry: digest over newTag, kept
        return (*_insert(text, node, f"digest: {digest}", found.line), found.tag)
    tag_node = _get(node, "tag")
    if tag_node is None or new_tag is None:
        raise ManifestError(f"{found.name} has no tag or digest to pin", found.line)
    return (*_replace(text, tag_node, f"{new_tag}@{digest}", "tag", found.line), new_tag)


def _replace(text: str, node: Node, value: str, what: str, line: int) -> tuple[int, int, str]:
    span = _span(text, node)
    if span is None:
        raise ManifestError(f"cannot rewrite {what}: not a one-line scalar", line)
    start, end = span  # so `node` is a scalar
    quote = node.style if isinstance(node, ScalarNode) and node.style in ("'", '"') else ""
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
