#!/bin/sh
# Set up, then run the whole test suite (unit, integration on the real
# kernel, and the runc/Docker/Prometheus end-to-end tests). Exits non-zero
# on any failure, and also when no test ran at all.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
