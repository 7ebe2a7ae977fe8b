"""command: any build service as an argv template (kaniko, nerdctl, an internal tool).

Each argument may hold placeholders: {context} {dockerfile} {image} {tag}
{target} {platform} {digestfile}; an argument that is exactly {tags},
{build-args}, {build-contexts}, {labels} or {annotations} becomes several
(`--tag X`, ...), and {no-cache} becomes `--no-cache` when the build is asked
for no cache (`rebuild --no-cache`), nothing otherwise. The command must push
and write the pushed digest into {digestfile}. Values are substituted into
single arguments: no shell ever parses them. An image with named contexts is
refused by a template without {build-contexts}: built without them, it would
not be what the graph says.
"""

from __future__ import annotations

import re
import threading

from graphbuild.builders import BuildRequest, read_digest
from graphbuild.config import CommandSpec
from graphbuild.errors import CommandFailed
from graphbuild.process import run

CONTEXTS = "{build-contexts}"
NO_CACHE = "{no-cache}"
_LISTS = {"{tags}", "{build-args}", CONTEXTS, "{labels}", "{annotations}", NO_CACHE}
_VALUE_RE = re.compile(r"\{(context|dockerfile|image|tag|target|platform|digestfile)\}")


class Command:
    name = "command"

    def __init__(self, spec: CommandSpec) -> None:
        self.template = list(spec.argv)
        self.program = self.template[0]

    def argv(self, request: BuildRequest, digestfile: str) -> list[str]:
        values = {
            "context": str(request.context), "dockerfile": str(request.dockerfile),
            "image": request.image, "tag": request.tags[0], "target": request.target or "",
            "platform": ",".join(request.platforms), "digestfile": digestfile,
        }  # fmt: skip
        lists = {
            "{tags}": [x for tag in request.tags for x in ("--tag", tag)],
            "{build-args}": [x for k, v in request.build_args.items()
                             for x in ("--build-arg", f"{k}={v}")],
            CONTEXTS: [x for k, v in request.contexts.items()
                       for x in ("--build-context", f"{k}={v}")],
            "{labels}": [x for k, v in request.labels.items() for x in ("--label", f"{k}={v}")],
            "{annotations}": [x for k, v in request.annotations.items()
                              for x in ("--annotation", f"{k}={v}")],
            NO_CACHE: ["--no-cache"] if request.no_cache else [],
        }  # fmt: skip
        out: list[str] = []
        for arg in self.template:
            if arg in _LISTS:
                out += lists[arg]
                continue
            # one pass: a value that itself holds `{tag}` stays as it is
            out.append(_VALUE_RE.sub(lambda m: values[m.group(1)], arg))
        return out

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        if request.contexts and CONTEXTS not in self.template:
            names = ", ".join(request.contexts)
            raise CommandFailed(f"{self.template[0]}: {request.image} uses named contexts "
                                f"(contexts: {names}) and builder.argv has no {CONTEXTS} to "
                                "pass them")  # fmt: skip
        digestfile = request.log.with_suffix(".digest")
        digestfile.unlink(missing_ok=True)  # an earlier attempt's digest is not this one's
        run(self.argv(request, str(digestfile)), request.log, cancel, f"{self.template[0]}")
        digest = read_digest(digestfile)
        if not digest.startswith("sha256:"):
            raise CommandFailed(f"{self.template[0]} wrote no digest to {{digestfile}}")
        return digest
