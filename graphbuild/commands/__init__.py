"""One module per command: each takes a loaded Config and plain options, returns an exit code."""
