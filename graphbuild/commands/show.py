"""`graphbuild show IMAGE`: one image as its web page shows it, from the stores only."""

from __future__ import annotations

from graphbuild import errors, queries, report
from graphbuild.config import Config
from graphbuild.report import brief, short


def run(config: Config, ref: str, as_json: bool) -> int:
    documents = queries.show(queries.open_index(config), config, ref)
    if as_json:
        report.emit_json(documents)
        return errors.OK
    for i, image in enumerate(documents):
        if i:
            print()
        fresh = image["freshness"]
        verdict = "not checked yet" if fresh is None else (
            f"{fresh['status']} ({fresh['reason'] or 'checked'} {fresh['checked'][:19]})"
            + (f": {fresh['detail']}" if fresh["detail"] else ""))  # fmt: skip
        print(short(image["id"]))
        print(f"  tags:       {', '.join(image['tags'])}")
        print(f"  built from: {image['repo']}:{image['dockerfile']}")
        print(f"  digest:     {image['digest'] or 'none known'}")
        print(f"  freshness:  {verdict}")
        on = [f"{p['kind']} {short(p['base'])}" for p in image["parents"] if p["depth"] == 1]
        print(f"  built on:   {', '.join(on) or 'nothing'}")
        print(f"  children:   {', '.join(short(c['image']) for c in image['children']) or 'none'}")
        for build in image["builds"][:3]:
            print(f"  built:      {build['built_at'][:19]} {brief(build['digest'])} "
                  f"(run {build['run'] or '-'})")  # fmt: skip
        for gate in image["gates"]:
            print(f"  gate:       {gate['gate']} {gate['status']}: {gate['summary']}")
        for w in image["workloads"]:
            print(f"  runs in:    {w['ring']} {w['name']} ({w['where']})")
    return errors.OK
