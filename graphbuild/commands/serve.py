"""`graphbuild serve`: the read-only web view of the workspace, and /metrics."""

from __future__ import annotations

import threading

from graphbuild import errors, events, process, report, web
from graphbuild.config import Config


def run(config: Config, host: str, port: int, token_env: str | None) -> int:
    site = web.Site(config, None if token_env is None else web.token(token_env))
    try:
        server = events.serve_pages(host, port, site.get)
    except OSError as err:
        raise errors.GraphbuildError(f"cannot listen on {host}:{port}: {err.strerror}") from None

    def stop(count: int) -> None:
        """Ctrl-C or SIGTERM: the serving loop is asked to end at its next turn (within half
        a second), rather than an exception raised wherever the main thread happens to be."""
        threading.Thread(target=server.shutdown, name="graphbuild-stop", daemon=True).start()

    try:
        with process.on_stop_signals(stop):
            report.note(f"Serving the web view of {config.workspace} on "
                        f"{web.address(host, server.server_address[1])} (read-only); "
                        "Ctrl-C stops.")  # fmt: skip
            if token_env is None and not web.loopback(host):
                report.note(web.OPEN_WARNING)
            server.serve_forever()
        report.note("Stopped.")
    finally:
        server.server_close()
    return errors.OK
