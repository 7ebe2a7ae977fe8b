#!/bin/sh
# lint, then count what was linted
lint "$@" && count "$@"
