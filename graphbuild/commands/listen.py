"""`graphbuild listen`: registry push events make a sweep come sooner.

ACR (or Docker Hub) posts each push here; pushes that arrive together are
collected into one sweep of what is built on the pushed images. Events only
speed things up: the scheduled sweep stays the source of truth (rule 2), and a
lost event costs at most the time until it runs.
"""

from __future__ import annotations

import os
import signal
from contextlib import closing
from typing import NoReturn

from graphbuild import errors, execute, graphdb, listen, refs, report
from graphbuild.commands import sweep, synced
from graphbuild.config import Config


def run(
    config: Config,
    host: str,
    port: int,
    secret_env: str,
    window: float,
    max_wait: float,
    max_images: int,
) -> int:
    secret = os.environ.get(secret_env, "")
    if not secret:
        raise errors.GraphbuildError(
            f"${secret_env} is empty: set the shared secret the webhook sends in "
            f"{listen.SECRET_HEADER} (see docs/azure.md)"
        )

    def fire(pushed: frozenset[str]) -> None:
        names = {refs.upstream(ref, config.mirrors) for ref in pushed}  # a mirror's push too
        synced(config)  # a Dockerfile merged since the last sweep may use what was pushed
        with closing(graphdb.connect(config.workspace)) as db:
            known = sorted(name for name in names if graphdb.match(db, name))
        if not known:
            report.note(f"{len(pushed)} push(es) of images nothing here is built on: no sweep.")
            return
        report.note(f"Pushed: {', '.join(known)}. Sweeping what is built on them.")
        code = sweep.run(config, dry_run=False, settings=execute.RunSettings(),
                         max_images=max_images, yes=False, wait=True, as_json=False,
                         only=known)  # fmt: skip
        report.note(f"That sweep exited {code}.")

    debouncer = listen.Debouncer(fire, window, max_wait)
    server = listen.serve(host, port, secret, debouncer.add)
    address = f"http://{host}:{server.server_address[1]}/hooks"
    report.note(f"Listening on {address}/acr and {address}/dockerhub; pushes within "
                f"{window:g} s make one sweep.")  # fmt: skip

    def stop(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a pod's stop is a Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        report.note("Stopping: no new pushes are taken; a sweep running now finishes.")
    finally:
        server.server_close()
        debouncer.close(flush=False)
    return errors.OK
