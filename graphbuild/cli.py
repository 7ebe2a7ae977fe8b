"""The `graphbuild` command line: arguments and help only.

Each command imports its module from graphbuild.commands when it runs, so a
query does not pay at start-up for git, SQLite or the parser it never uses.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from graphbuild import __version__
from graphbuild.errors import GraphbuildError

if TYPE_CHECKING:  # the CLI imports a command's modules only when it runs
    from graphbuild.execute import RunSettings

app = typer.Typer(
    name="graphbuild",
    help="Rebuild every image downstream of an updated base image, in dependency order.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


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


def _exit(code: int) -> None:
    raise typer.Exit(code)


@app.command()
def sync(
    ctx: typer.Context,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Repositories fetched at once.")
    ] = 8,
    as_json: JsonOption = False,
) -> None:
    """Fetch every repository, parse what changed, and store the graph."""
    from graphbuild.commands import sync as cmd

    _exit(cmd.run(_config(ctx), jobs, as_json))


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

    _exit(cmd.run(_config(ctx), ref, direct, depth, as_json))


@app.command()
def parents(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="An image the fleet builds, by any of its tags.")],
    as_json: JsonOption = False,
) -> None:
    """Show the chain of bases under IMAGE, down to its external roots."""
    from graphbuild.commands import parents as cmd

    _exit(cmd.run(_config(ctx), image, as_json))


@app.command()
def graph(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, dot or mermaid.")] = "json",
    focus: Annotated[
        str | None, typer.Option("--focus", help="Only REF, its bases and what is built on it.")
    ] = None,
) -> None:
    """Print the graph (or one node's neighbourhood) as JSON, DOT or Mermaid."""
    from graphbuild.commands import graph as cmd

    _exit(cmd.run(_config(ctx), fmt, focus))


@app.command()
def images(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the images the fleet builds."""
    from graphbuild.commands import images as cmd

    _exit(cmd.run(_config(ctx), as_json))


@app.command()
def bases(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the external bases, pinned or floating, and how many images use each."""
    from graphbuild.commands import bases as cmd

    _exit(cmd.run(_config(ctx), as_json))


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

    _exit(cmd.run(_config(ctx), as_json, concurrency))


MaxParallel = Annotated[int, typer.Option("--max-parallel", min=1, help="Builds at once.")]


def _settings(max_parallel: int, force: bool = False, no_cache: bool = False) -> RunSettings:
    from graphbuild.execute import RunSettings

    return RunSettings(max_parallel=max_parallel, force=force, no_cache=no_cache)


@app.command()
def plan(
    ctx: typer.Context,
    as_json: JsonOption = False,
    updated: Annotated[
        list[str] | None,
        typer.Option("--updated", help="What if this base (or image) changed? Offline."),
    ] = None,
) -> None:
    """Show what a sweep would rebuild, in waves, and why; builds nothing."""
    from graphbuild.commands import plan as cmd

    _exit(cmd.run(_config(ctx), as_json, updated or [], 16))


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
    as_json: JsonOption = False,
) -> None:
    """Sync, check, plan and rebuild what changed, in dependency order."""
    from graphbuild.commands import sweep as cmd

    settings = _settings(max_parallel)
    _exit(cmd.run(_config(ctx), dry_run=dry_run, settings=settings, max_images=max_images,
                  yes=yes, wait=wait, as_json=as_json))  # fmt: skip


@app.command()
def rebuild(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="Images to rebuild, or bases to rebuild on.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why, recorded on every image (e.g. a CVE id).")
    ] = "forced rebuild",
    force: Annotated[
        bool, typer.Option("--force", help="Build even if this exact build was done before.")
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
    no_cache: Annotated[bool, typer.Option("--no-cache", help="No build cache.")] = False,
    max_parallel: MaxParallel = 4,
    as_json: JsonOption = False,
) -> None:
    """Rebuild images, or everything built on a base, now (the on-call path)."""
    from graphbuild.commands import rebuild as cmd

    settings = _settings(max_parallel, force, no_cache)
    _exit(cmd.run(_config(ctx), refs, reason=reason, downstream=not no_downstream, depth=depth,
                  settings=settings, as_json=as_json))  # fmt: skip


@app.command()
def runs(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="A run to show.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, or show one: every image's outcome, reason, duration, digest and log."""
    from graphbuild.commands import runs as cmd

    _exit(cmd.show(_config(ctx), run_id, as_json))


@app.command()
def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to finish.")],
    max_parallel: Annotated[
        int | None,
        typer.Option("--max-parallel", min=1, help="Builds at once. [default: the run's]"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Finish an interrupted or partly failed run, without rebuilding what succeeded."""
    from graphbuild.commands import runs as cmd

    _exit(cmd.resume(_config(ctx), run_id, max_parallel, as_json))


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
) -> None:
    """Deploy a finished run's validated images, ring by ring (e.g. prod, by hand)."""
    from graphbuild.commands import deploy as cmd

    _exit(cmd.run(_config(ctx), run_id, ring or [], dry_run, rollback, as_json))


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
