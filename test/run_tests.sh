#!/usr/bin/env bash
# test/run_tests.sh: the whole test suite, the README's second command and
# what .ci/run calls.  Installs missing Debian packages, builds and installs
# the extension, starts a throw-away cluster and the Gmail API double, then
# runs: the include-layering check, the double's self-test, the MIME parser
# tests, pg_regress and the isolation specs (make installcheck), the
# scripts in test/scripts/, and the benchmark's short form.  PG_CONFIG
# picks the PostgreSQL installation; TMPDIR where the work directory goes.
#
#   bash test/run_tests.sh                  every step
#   bash test/run_tests.sh faults tls       only the named steps (a script's
#                                           name, layers, installcheck,
#                                           mime_parser, double_selftest,
#                                           bench_short)
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/env.sh"

gi_ensure_packages || exit 1
gi_build_install || exit 1
gi_start_all

passed=0
failed=0
failures=()

only=" $* "
run_step() {
	local name=$1
	shift
	[ "$only" = "  " ] || [[ "$only" == *" $name "* ]] || return 0
	local started=$SECONDS
	gi_log "test: $name"
	if (cd "$GI_ROOT" && "$@") >"$GI_WORK/$name.log" 2>&1; then
		passed=$((passed + 1))
		gi_log "ok: $name ($((SECONDS - started)) s)"
		grep '^# ' "$GI_WORK/$name.log" >&2 || true		# the figures it measured
	else
		failed=$((failed + 1))
		failures+=("$name")
		gi_log "FAILED: $name ($((SECONDS - started)) s)"
		tail -n 60 "$GI_WORK/$name.log" >&2
		for diffs in "$GI_ROOT/regression.diffs" "$GI_ROOT/output_iso/regression.diffs"; do
			[ -s "$diffs" ] && head -n 200 "$diffs" >&2
		done
	fi
}

run_step layers bash test/check_layers.sh
run_step double_selftest python3 test/double/double_selftest.py
[ -f test/mime/run.sh ] && run_step mime_parser bash test/mime/run.sh
run_step installcheck make -s installcheck
for script in "$GI_ROOT"/test/scripts/*.sh; do
	[ -e "$script" ] || continue
	run_step "$(basename "$script" .sh)" bash "$script"
done

# The benchmark's short form: fails only on broken invariants (quota units,
# zero writes on re-runs, zero 429s), never on a timing.
run_step bench_short env OUT="$GI_WORK/bench_short.md" bash test/bench/run.sh --short

[ ${#failures[@]} -gt 0 ] && gi_log "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
