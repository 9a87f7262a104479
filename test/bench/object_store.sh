#!/usr/bin/env bash
# test/bench/object_store.sh: the object-storage benchmark (issue 14):
# first full sync with blob_store = 'database' and = 's3'.
#
#   bash test/bench/object_store.sh [--short] [--latency-ms N] [--s3-latency-ms N]
#
# Starts its own cluster, Gmail API double and S3 test server (test/lib/env.sh)
# unless run inside test/run_tests.sh; see object_store.py.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/env.sh"
cd "$GI_ROOT"

if [ -n "${GI_WORK:-}" ] && [ -n "${DOUBLE_URL:-}" ] && [ -n "${PGHOST:-}" ] && [ -n "${S3_URL:-}" ]; then
	gi_log "benchmark: using the running cluster, double and S3 server"
else
	gi_ensure_packages || exit 1
	gi_build_install || exit 1
	gi_start_all
fi
python3 "$here/object_store.py" "$@"
