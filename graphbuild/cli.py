"""The `graphbuild` command line: arguments and help only.

Each command imports its module from graphbuild.commands when it runs, so a
query does not pay at start-up for git, SQLite or the parser it never uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from graphbuild import __version__
from graphbuild.errors import GraphbuildError

if TYPE_CHECKING:  # the CLI imports a command's modules only when it runs
    from graphbuild.builds import RunSettings

app = typer.Typer(
    name="graphbuild",
    help="Rebuild every image downstream of an updated base image, in dependency order.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Without a terminal, a line per repository synced, not one in all."
    ),
]


@dataclass
class Options:
    config: Path | None


def _version(value: bool) -> None:
    if value:
        print(f"graphbuild {__version__}")
        raise typer.Exit


@app.callback()
def options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="repos.yaml to use (default: $GRAPHBUILD_CONFIG, else ./repos.yaml).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = Options(config)


def _config(ctx: typer.Context):  # noqa: ANN202 - Config is imported lazily
    from graphbuild import config

    return config.load(config.find(ctx.obj.config))


def _run(ctx: typer.Context, command: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """A command on the loaded config, guarded: a damaged index.db is rebuilt and the command
    run again; a damaged state.db or an unwritable workspace is one clear line."""
    from graphbuild.guard import guarded

    config = _config(ctx)
    return guarded(config, lambda: command(config, *args, **kwargs))


def _exit(code: int) -> None:
    raise typer.Exit(code)


def _verbose(on: bool) -> None:
    """How much progress a command that syncs shows through a pipe (console.verbose)."""
    from graphbuild import console

    console.verbose = on


@app.command()
def sync(
    ctx: typer.Context,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, help="Repositories fetched at once; connections per git host."
        ),
    ] = 8,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Fetch every repository, parse what changed, and store the graph."""
    _verbose(verbose)
    from graphbuild.commands import sync as cmd

    _exit(_run(ctx, cmd.run, jobs, as_json))


@app.command()
def uses(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="A base or fleet image; without a tag, every tag.")],
    direct: Annotated[
        bool, typer.Option("--direct", help="Only images built directly on REF.")
    ] = False,
    depth: Annotated[int | None, typer.Option("--depth", min=1, help="Stop N levels down.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List every image built on REF, transitively, with the line that pulls it in."""
    from graphbuild.commands import uses as cmd

    _exit(_run(ctx, cmd.run, ref, direct, depth, as_json))


@app.command()
def parents(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="An image the fleet builds, by any of its tags.")],
    as_json: JsonOption = False,
) -> None:
    """Show the chain of bases under IMAGE, down to its external roots."""
    from graphbuild.commands import parents as cmd

    _exit(_run(ctx, cmd.run, image, as_json))


@app.command()
def show(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="An image the fleet builds, by any of its tags.")],
    as_json: JsonOption = False,
) -> None:
    """Show one image: its bases, children, digest, freshness, builds, gates and workloads."""
    from graphbuild.commands import show as cmd

    _exit(_run(ctx, cmd.run, image, as_json))


@app.command()
def graph(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, dot or mermaid.")] = "json",
    focus: Annotated[
        str | None, typer.Option("--focus", help="Only REF, its bases and what is built on it.")
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option("--depth", min=1, help="With --focus: only N edges up and down from REF."),
    ] = None,
) -> None:
    """Print the graph (or one node's neighbourhood) as JSON, DOT or Mermaid."""
    from graphbuild.commands import graph as cmd

    _exit(_run(ctx, cmd.run, fmt, focus, depth))


@app.command()
def images(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the images the fleet builds."""
    from graphbuild.commands import images as cmd

    _exit(_run(ctx, cmd.run, as_json))


@app.command()
def bases(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the external bases, pinned or floating, and how many images use each."""
    from graphbuild.commands import bases as cmd

    _exit(_run(ctx, cmd.run, as_json))


@app.command()
def check(
    ctx: typer.Context,
    as_json: JsonOption = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Registry requests in flight.")
    ] = 16,
) -> None:
    """Ask the registries which bases changed and which images are stale, missing or unknown."""
    from graphbuild.commands import check as cmd

    _exit(_run(ctx, cmd.run, as_json, concurrency))


@app.command()
def scan(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(help="Only these images, bases or running images.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="Scan again what was scanned within the period.")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Scan the fleet's images, the bases they use and what the workloads run, for
    vulnerabilities (vulnerabilities: in repos.yaml)."""
    _verbose(verbose)
    from graphbuild.commands import scan as cmd

    _exit(_run(ctx, cmd.run, refs or [], as_json, force))


@app.command()
def vulns(
    ctx: typer.Context,
    query: Annotated[
        str | None,
        typer.Argument(
            help="A vulnerability id (CVE-2026-1234) or an image reference.", show_default=False
        ),
    ] = None,
    severity: Annotated[
        str | None,
        typer.Option(
            "--severity",
            help="The lowest severity shown (default: the configured).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Where a vulnerability is, where it came from, what runs it and what fixes it, from
    the last scans."""
    from graphbuild.commands import vulns as cmd

    _exit(_run(ctx, cmd.run, query, severity and severity.lower(), as_json))


MaxParallel = Annotated[int, typer.Option("--max-parallel", min=1, help="Builds at once.")]


def _settings(max_parallel: int, force: bool = False, no_cache: bool = False) -> RunSettings:
    from graphbuild.builds import RunSettings

    return RunSettings(max_parallel=max_parallel, force=force, no_cache=no_cache)


@app.command()
def plan(
    ctx: typer.Context,
    as_json: JsonOption = False,
    updated: Annotated[
        list[str] | None,
        typer.Option("--updated", help="What if this base (or image) changed? Offline."),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Show what a sweep would rebuild, in waves, and why; builds nothing."""
    _verbose(verbose)
    from graphbuild.commands import plan as cmd

    _exit(_run(ctx, cmd.run, as_json, updated or [], 16))


@app.command()
def sweep(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; build nothing.")] = False,
    max_parallel: MaxParallel = 4,
    max_images: Annotated[
        int, typer.Option("--max-images", min=1, help="Stop if the plan is bigger than this.")
    ] = 50,
    yes: Annotated[bool, typer.Option("--yes", help="Build even past --max-images.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for a running sweep instead of stopping.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Only what is built on this image or base (again for more)."),
    ] = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Sync, check, plan and rebuild what changed, in dependency order."""
    _verbose(verbose)
    from graphbuild.commands import sweep as cmd

    settings = _settings(max_parallel)
    _exit(_run(ctx, cmd.run, dry_run=dry_run, settings=settings, max_images=max_images,
                  yes=yes, wait=wait, as_json=as_json, only=only))  # fmt: skip


@app.command()
def rebuild(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(help="Images to rebuild, or bases to rebuild on.", show_default=False),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why, recorded on every image (e.g. a CVE id).")
    ] = "forced rebuild",
    cve: Annotated[
        str | None,
        typer.Option(
            "--cve",
            help="Instead of REFs: the images whose own layers carry this fixable "
            "vulnerability in their last scan, and what is built on them.",
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Give the builder --no-cache: every step runs again (a package-level fix).",
        ),
    ] = False,
    skip_served: Annotated[
        bool,
        typer.Option(
            "--skip-served",
            help="Skip an image whose exact build (source, Dockerfile, options, parent "
            "digests) is what its registry serves now.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", hidden=True, help="The default; kept for scripts.")
    ] = False,
    no_downstream: Annotated[
        bool,
        typer.Option(
            "--no-downstream", help="Only the named images, or those built directly on a base."
        ),
    ] = False,
    depth: Annotated[
        int | None,
        typer.Option("--depth", min=1, help="Levels below what is named (1: directly on it)."),
    ] = None,
    max_parallel: MaxParallel = 4,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Rebuild images, or everything built on a base, now, even what is already served (the
    on-call path)."""
    _verbose(verbose)
    from graphbuild.commands import rebuild as cmd

    if force and skip_served:
        raise typer.BadParameter("--force (the default) contradicts it", param_hint="--skip-served")
    if bool(refs) == bool(cve):
        raise typer.BadParameter("give the images (or bases) to rebuild, or --cve, not both",
                                 param_hint="REFS")  # fmt: skip
    settings = _settings(max_parallel, force=not skip_served, no_cache=no_cache)
    if cve:
        _exit(_run(ctx, cmd.fix, cve, reason=reason, downstream=not no_downstream, depth=depth,
                   settings=settings, as_json=as_json))  # fmt: skip
    _exit(_run(ctx, cmd.run, refs, reason=reason, downstream=not no_downstream, depth=depth,
                  settings=settings, as_json=as_json))  # fmt: skip


@app.command()
def runs(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="A run to show.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, or show one: every image's outcome, reason, duration, digest and log."""
    from graphbuild.commands import runs as cmd

    _exit(_run(ctx, cmd.show, run_id, as_json))


@app.command()
def report(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run.")],
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write the run page as one HTML file there (-: stdout).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """A run's report: report.md's text, or with --html the run page (timeline by wave,
    gates, holds, deploys) as one self-contained HTML file."""
    from graphbuild.commands import report as cmd

    _exit(_run(ctx, cmd.run, run_id, html))


@app.command()
def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to finish.")],
    max_parallel: Annotated[
        int | None,
        typer.Option("--max-parallel", min=1, help="Builds at once. [default: the run's]"),
    ] = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Finish an interrupted or partly failed run, without rebuilding what succeeded."""
    _verbose(verbose)
    from graphbuild.commands import runs as cmd

    _exit(_run(ctx, cmd.resume, run_id, max_parallel, as_json))


@app.command()
def deploy(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run whose validated images to deploy.")],
    ring: Annotated[
        list[str] | None, typer.Option("--ring", help="Only this ring (again for more).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the file diffs and commands; change nothing.")
    ] = False,
    rollback: Annotated[
        bool,
        typer.Option("--rollback", help="Deploy it even though a later run rebuilt its images."),
    ] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Deploy a finished run's validated images, ring by ring (e.g. prod, by hand)."""
    _verbose(verbose)
    from graphbuild.commands import deploy as cmd

    _exit(_run(ctx, cmd.run, run_id, ring or [], dry_run, rollback, as_json))


@app.command()
def mirror(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what to import; import nothing.")
    ] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Import the external bases the graph uses into the ACR mirror, by digest."""
    _verbose(verbose)
    from graphbuild.commands import mirror as cmd

    _exit(_run(ctx, cmd.run, dry_run, as_json))


TokenEnv = Annotated[
    str | None,
    typer.Option("--token-env", help="Variable holding a bearer token the web view requires."),
]


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8080,
    token_env: TokenEnv = None,
) -> None:
    """Serve the read-only web view: search, images, the graph, runs, bases, /metrics."""
    from graphbuild.commands import serve as cmd

    _exit(_run(ctx, cmd.run, host, port, token_env))


SECRET_ENV = "GRAPHBUILD_WEBHOOK_SECRET"  # noqa: S105 - the name of a variable, not a secret


@app.command()
def listen(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
    secret_env: Annotated[
        str, typer.Option("--secret-env", help="Variable holding the webhook's shared secret.")
    ] = SECRET_ENV,
    window: Annotated[
        float, typer.Option("--window", min=0, help="Seconds of quiet that end a burst.")
    ] = 2.0,
    max_wait: Annotated[
        float, typer.Option("--max-wait", min=0, help="Longest a push waits for its sweep.")
    ] = 300.0,
    max_parallel: MaxParallel = 4,
    max_images: Annotated[
        int, typer.Option("--max-images", min=1, help="Storm guard of each sweep.")
    ] = 50,
    ui: Annotated[
        bool, typer.Option("--ui", help="Also serve the web view and /metrics on this port.")
    ] = False,
    token_env: TokenEnv = None,
    verbose: VerboseOption = False,
) -> None:
    """Take registry push events (ACR, Docker Hub) and sweep what is built on the pushed image."""
    _verbose(verbose)
    from graphbuild.commands import listen as cmd

    _exit(_run(ctx, cmd.run, host, port, secret_env, window, max_wait,
                  _settings(max_parallel), max_images, ui, token_env))  # fmt: skip


acr_app = typer.Typer(help="Azure Container Registry: webhooks.", no_args_is_help=True)
webhook_app = typer.Typer(help="Registry webhooks that post to `graphbuild listen`.",
                          no_args_is_help=True)  # fmt: skip
acr_app.add_typer(webhook_app, name="webhook")
app.add_typer(acr_app, name="acr")


@webhook_app.command("create")
def webhook_create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where `graphbuild listen` is reached.")],
    name: Annotated[str, typer.Option("--name", help="The webhook's name.")] = "graphbuild",
    scope: Annotated[
        str,
        typer.Option(
            "--scope",
            help="Pushes to report: 'REPO:*', 'REPO:TAG', 'REPO' (REPO:latest); all if empty.",
        ),
    ] = "",
    secret_env: Annotated[
        str, typer.Option("--secret-env", help="Variable holding the shared secret.")
    ] = SECRET_ENV,
) -> None:
    """Create a push webhook on the registry in repos.yaml's `azure:`, one per replica region."""
    from graphbuild.commands import webhook as cmd

    _exit(_run(ctx, cmd.create, url, name, scope, secret_env))


def main() -> None:
    """Entry point: a GraphbuildError is one line on stderr and its exit code, never a traceback."""
    try:
        app()
    except GraphbuildError as err:
        sys.stderr.write(f"graphbuild: {err}\n")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # what is stored is written in transactions: nothing half-done
        sys.stderr.write("graphbuild: interrupted\n")
        sys.exit(130)
