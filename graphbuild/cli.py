"""The `graphbuild` command line: arguments and help only.

Each command imports its module from graphbuild.commands when it runs, so a
query does not pay at start-up for git, SQLite or the parser it never uses.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from graphbuild import __version__
from graphbuild.errors import GraphbuildError

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
