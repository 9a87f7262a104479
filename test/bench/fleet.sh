#!/usr/bin/env bash
# test/bench/fleet.sh: the fleet benchmark (issue 11); see test/bench/fleet.py.
#
#   bash test/bench/fleet.sh [--mailboxes 1000] [--workers 4] [--limit 60000]
#        [--latency-ms 50] [--interval '15 minutes' --interval-s 900] [--steady-minutes 20]
#
# Starts its own throw-away cluster and Gmail API double (test/lib/env.sh)
# unless run inside test/run_tests.sh, and prints a table (also appended to
# bench_fleet_results.md).  The defaults take about 25 minutes.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/env.sh"
cd "$GI_ROOT"

if [ -z "${GI_WORK:-}" ] || [ -z "${DOUBLE_URL:-}" ] || [ -z "${PGHOST:-}" ]; then
	gi_ensure_packages || exit 1
	gi_build_install || exit 1
	gi_start_all
fi
python3 "$here/fleet.py" "$@"
