"""One module per command: each takes a loaded Config and plain options, prints its answer,
and returns an exit code. The work itself is in the core: pipeline.py for what builds and
deploys, queries.py for what reads the stored graph."""
