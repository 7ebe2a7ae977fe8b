#!/bin/sh
echo "runtime $RUNTIME_VERSION on $(cat /etc/platform/release)"
exec "$@"
