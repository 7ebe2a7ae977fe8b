"""Every error graphbuild reports to a user, in one place, with its exit code.

The CLI prints a GraphbuildError as one clear line and exits with its code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

OK = 0
FAILED = 1  # the run finished, but something in it failed
BAD_INPUT = 2  # config, arguments or a repository that cannot be read
BUSY = 3  # another process holds the lock this command needs: try again later


ERROR, UNRESOLVED, WARNING = "error", "unresolved", "warning"  # Problem levels


@dataclass(frozen=True)
class Problem:
    """Something found in one repository that a user should fix or know, as `repo:path:line`.

    Unlike an exception it does not stop anything: the rest of the fleet goes on.
    """

    level: str  # error (the run exits 1) | unresolved | warning
    repo: str
    message: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.repo, self.path, self.line) if p)
        return f"{where}: {self.message}"


class GraphbuildError(Exception):
    """An error the user can act on."""

    exit_code = BAD_INPUT


class ConfigError(GraphbuildError):
    """repos.yaml is unreadable or invalid; names the file, the line and the key."""

    def __init__(self, file: str, key: str, message: str, line: int | None = None) -> None:
        self.file, self.key, self.message, self.line = file, key, message, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class InvalidReference(GraphbuildError):
    """A string that is not a valid image reference (distribution/reference grammar)."""

    def __init__(self, ref: str, reason: str) -> None:
        self.ref, self.reason = ref, reason
        super().__init__(f"invalid image reference {ref!r}: {reason}")


class UnsafeURL(GraphbuildError):
    """A git URL whose transport could run code or inject options."""


class CycleError(GraphbuildError):
    """Images that are built on each other; a rebuild would never end."""

    def __init__(self, cycle: list[str], where: list[str]) -> None:
        self.cycle = cycle
        chain = " -> ".join([*cycle, cycle[0]])
        super().__init__(f"dependency cycle: {chain} ({'; '.join(where)})")


class DockerfileError(GraphbuildError):
    """A Dockerfile that BuildKit would reject, with the line that is wrong."""

    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message
        super().__init__(f"line {line}: {message}")


class CommandFailed(GraphbuildError):
    """A build, gate or deploy command failed; `transient` ones are worth retrying."""

    exit_code = FAILED

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ContextError(GraphbuildError):
    """A build context graphbuild will not, or cannot, send to a builder: names `repo:path`
    and the rule. It fails that image's build, never anything else."""


class CloneDamaged(GraphbuildError):
    """graphbuild's own clone of a repository lacks an object it listed (a bad disk, a
    partial restore): the images of that repository fail until the next sync fetches it
    again, which it does because the clone's record of what it fetched is dropped."""


class NotFound(GraphbuildError):
    """A query named something that is not in the graph."""
