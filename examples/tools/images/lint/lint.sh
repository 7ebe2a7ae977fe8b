#!/bin/sh
# flag lines longer than 100 characters
grep -n ".\{101,\}" "$@" && exit 1 || exit 0
