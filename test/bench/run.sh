#!/usr/bin/env bash
# test/bench/run.sh: gmail_ingest's benchmark (issue 6).
#
#   bash test/bench/run.sh [--short] [--latency-ms N[,N...]] [--memory] [--quota] [--skip-main]
#                          [--cpu [--cpu-sizes 2000,10000,50000] [--wire-size N] [--perf]]
#
# Starts its own throw-away cluster and Gmail API double (test/lib/env.sh),
# generates the benchmark mailbox (2,000 threads, 10,000 messages in the
# 7-day window, 1,500 attachments of 1 KB-5 MB, log-uniform) and prints a
# table, also written to $OUT (default bench_results.md in the repository
# root, git-ignored): first full sync, unchanged full and incremental
# re-runs, the wire bound (same requests by curl, no database), and a
# sequential ingester (test/bench/seq_ingester.py).  Latency 50 ms per
# response by default; "--latency-ms 50,0" measures both in one run.
#   --memory     backend peak RSS for first syncs of 2,000 / 10,000 / 50,000 messages
#   --quota      a first sync paced at 15,000 units/min, double enforcing it
#   --cpu        issue 15: backend CPU per message of first syncs at 2,000 /
#                10,000 / 50,000 messages (latency 0, quota off), the floor
#                (COPY of the same raw bytes into lz4 bytea + the standalone
#                MIME driver), peak RSS minus shared memory per size, the
#                wire ratio at 50 ms (--wire-size); --perf adds a profiled
#                second sync (perf record, DWARF call graphs: top symbols and
#                CPU by phase) of the --perf-sizes mailboxes (test/bench/cpu.py)
#   --skip-main  only the parts asked for by --memory / --quota / --cpu
#   --short      CI form (about 2 minutes): 300 threads / 1,500 messages /
#                150 attachments <= 200 KB at 20 ms, plus a quota-paced run;
#                checks issue 6's invariants (never a timing) and issue 15's
#                (a reference mailbox's stored rows equal the fixture
#                test/bench/fixtures/short_digests.txt) and ends with
#                "N passed, N failed"; exit status 1 on a failed invariant.
#
# Inside test/run_tests.sh (GI_WORK and DOUBLE_URL already set) it uses the
# runner's cluster and double, with its own databases and mailboxes, and
# leaves the double's global settings alone.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/env.sh"
cd "$GI_ROOT"

if [ -n "${GI_WORK:-}" ] && [ -n "${DOUBLE_URL:-}" ] && [ -n "${PGHOST:-}" ]; then
	gi_log "benchmark: using the running cluster ($PGHOST:$PGPORT) and double ($DOUBLE_URL)"
else
	gi_ensure_packages || exit 1
	command -v curl >/dev/null || { echo "curl is needed for the wire bound" >&2; exit 1; }
	gi_build_install || exit 1
	gi_start_all
fi

timeout_s=$((4 * 3600))
for a in "$@"; do [ "$a" = --short ] && timeout_s=900; done
timeout --kill-after=10 "$timeout_s" python3 "$here/bench.py" "$@"
