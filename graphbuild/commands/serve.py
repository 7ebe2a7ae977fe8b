"""`graphbuild serve`: the read-only web view of the workspace, and /metrics."""

from __future__ import annotations

import signal
from typing import NoReturn

from graphbuild import errors, events, process, report, web
from graphbuild.config import Config


def run(config: Config, host: str, port: int, token_env: str | None) -> int:
    site = web.Site(config, None if token_env is None else web.token(token_env))
    try:
        server = events.serve_pages(host, port, site.get)
    except OSError as err:
        raise errors.GraphbuildError(f"cannot listen on {host}:{port}: {err.strerror}") from None

    def stop(count: int) -> NoReturn:
        raise KeyboardInterrupt

    try:
        with process.on_stop_signals(stop, (signal.SIGTERM,)):
            report.note(f"Serving the web view of {config.workspace} on "
                        f"{web.address(host, server.server_address[1])} (read-only); "
                        "Ctrl-C stops.")  # fmt: skip
            if token_env is None and not web.loopback(host):
                report.note(web.OPEN_WARNING)
            server.serve_forever()
    except KeyboardInterrupt:
        report.note("Stopped.")
    finally:
        server.server_close()
    return errors.OK
