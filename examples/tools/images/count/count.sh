#!/bin/sh
# count the lines of the files given
cat "$@" | wc -l
