# test/lib/script.sh: helpers for the script tests in test/scripts/.  run_tests.sh exports
# PGHOST/PGPORT/PGUSER and DOUBLE_URL; each script uses its own database.
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$GI_ROOT"

checks=0
check_failures=0

# check DESCRIPTION ACTUAL EXPECTED
check() {
	checks=$((checks + 1))
	if [ "$2" = "$3" ]; then
		echo "ok - $1 ($2)"
	else
		check_failures=$((check_failures + 1))
		echo "not ok - $1: got '$2', expected '$3'"
	fi
}

# q DB SQL: one value
q() { psql -X -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

fresh_db() {
	dropdb --if-exists "$1" >/dev/null 2>&1
	createdb "$1"
	q "$1" "CREATE EXTENSION gmail_ingest" >/dev/null
}

finish() {
	echo "$((checks - check_failures)) passed, $check_failures failed"
	[ "$check_failures" -eq 0 ]
}
