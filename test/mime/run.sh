#!/usr/bin/env bash
# Standalone tests of the MIME parser (src/mime_*.c), no PostgreSQL needed.
#
#   test/mime/run.sh [--no-valgrind] [--no-asan] [--verbose]
#
# 1. builds the driver, the ASan driver, and each parser file with the
#    extension's warning flags
# 2. runs every crafted case in cases/*.eml against its .expect
# 3. generates the big cases (1,000/5,000-level nesting, a 25 MB attachment,
#    37 MB of headers, ...) and runs them with time and memory limits
# 4. runs the driver over Python's email test messages (no crash, invariants)
# 5. runs everything plus deterministic mutants under ASan + UBSan
# 6. runs everything under valgrind
# 7. checks the driver's --parse-cpu mode (test/bench/cpu.py's floor)
# (native_* cases are too slow under ASan and valgrind, whose realloc copies)
#
# Each build and each input of 2-7 is one job with its own log files; the jobs
# run $MIME_JOBS at a time (default: the number of cores): first the builds
# and the generators, then every input in one pool, the slowest (valgrind,
# the big cases) first.  A job writes its verdict to $OUT/res/SEQ (a job that
# leaves none has failed); the verdicts are printed after the pool in the
# order above, so the output does not depend on the scheduling (bash 5.1+).
# The last line is "N passed, N failed"; the exit status is 1 on any failure.
# Work files go to test/out/mime (or $MIME_TEST_OUT).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${MIME_TEST_OUT:-$ROOT/test/out/mime}
CC=${CC:-cc}
PY=${PYTHON:-python3}
# check_expect.py runs once per case: name the interpreter itself, not a
# launcher such as pyenv's shim (~0.1 s of start-up per call, ~15 s a run)
PYX=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -x "$PYX" ] && PY=$PYX
PYDATA=${MIME_PY_CORPUS:-$(ls -d /usr/lib/python3*/test/test_email/data 2>/dev/null | head -n 1)}
JOBS=${MIME_JOBS:-$(nproc 2>/dev/null || echo 2)}
VALGRIND=1
ASAN=1
VERBOSE=0
for arg in "$@"; do
	case "$arg" in
		--no-valgrind) VALGRIND=0 ;;
		--no-asan) ASAN=0 ;;
		--verbose|-v) VERBOSE=1 ;;
		*) echo "usage: $0 [--no-valgrind] [--no-asan] [--verbose]" >&2; exit 2 ;;
	esac
done
case "$JOBS" in
	'' | *[!0-9]* | 0) echo "MIME_JOBS must be a positive integer" >&2; exit 2 ;;
esac
# the pool needs "wait -n -p" (bash 5.1)
if [ "${BASH_VERSINFO[0]}" -lt 5 ] || { [ "${BASH_VERSINFO[0]}" = 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then
	echo "$0 needs bash 5.1 or later" >&2
	exit 2
fi

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); [ "$VERBOSE" = 1 ] && echo "ok   $1"; return 0; }
ko() { FAIL=$((FAIL + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' "$2" | head -n 30; return 0; }

rm -rf "$OUT/json" "$OUT/gen" "$OUT/fuzz" "$OUT/log" "$OUT/res"
mkdir -p "$OUT/json" "$OUT/gen" "$OUT/fuzz" "$OUT/log/asan" "$OUT/log/valgrind" "$OUT/res"

GM_CFLAGS=$(pkg-config --cflags gmime-3.0)
GM_LIBS=$(pkg-config --libs gmime-3.0)
# the parser: every src/mime_*.c, the SHA-256 helper and the UTF-8 rule
PARSER=$(echo "$ROOT"/src/mime_*.c "$ROOT/src/sha256_hex.c" "$ROOT/src/utf8_text.c")
SRCS="$HERE/mime_driver.c $PARSER"
DRIVER="$OUT/mime_driver"
ADRIVER="$OUT/mime_driver_asan"

# ---- the job pool -------------------------------------------------------------
# job PRIORITY NAME FUNCTION ARGS...  queues FUNCTION ARGS as job number
# $NJOB; it runs in a subshell, so it reports through verdict (fd 3 is its
# file $OUT/res/$NJOB), never through PASS/FAIL.  NAME is only for a job
# that leaves no verdict.  Higher PRIORITY starts first.
NJOB=0
declare -a JOB_CMD JOB_NAME JOB_PRIO
job() {
	NJOB=$((NJOB + 1))
	JOB_PRIO[NJOB]=$1
	JOB_NAME[NJOB]=$2
	shift 2
	JOB_CMD[NJOB]=$(printf '%q ' "$@")
}

# verdict ok|ko MESSAGE [LOG]  (inside a job): its one result
verdict() { printf '%s\n%s\n%s\n' "$1" "$2" "${3:-}" >&3; }

# pool FIRST LAST: runs jobs FIRST..LAST, $JOBS at a time, and waits for all.
# It counts its own children by pid: "wait -n" can also return a job that an
# earlier pool's plain "wait" had already waited for (seen with bash 5.2),
# and a bare counter would then run one job too many for the whole pool.
pool() {
	local i k pid rc
	local -A live=()
	for i in $(for ((k = $1; k <= $2; k++)); do echo "${JOB_PRIO[k]} $k"; done |
		sort -k1,1nr -k2,2n | cut -d' ' -f2); do
		while [ "${#live[@]}" -ge "$JOBS" ]; do
			pid=
			wait -n -p pid
			rc=$?
			if [ -n "$pid" ]; then
				unset "live[$pid]"
			elif [ $rc = 127 ]; then
				live=()		# no child left at all
			fi
		done
		(eval "${JOB_CMD[i]}") 3>"$OUT/res/$i" &
		live[$!]=1
	done
	wait
}
# interrupted: stop the running jobs and what they started (timeout stops
# its own child)
stop_jobs() {
	local p
	for p in $(jobs -p); do
		pkill -TERM -P "$p" 2>/dev/null
		kill -TERM "$p" 2>/dev/null
	done
}
trap 'stop_jobs; exit 130' INT
trap 'stop_jobs; exit 143' TERM

# read_verdict SEQ: sets V_STATUS, V_MSG, V_LOG from job SEQ's file
read_verdict() {
	V_STATUS=ko V_MSG="${JOB_NAME[$1]}: the job left no verdict" V_LOG=
	if [ -s "$OUT/res/$1" ]; then
		{ read -r V_STATUS; read -r V_MSG; read -r V_LOG; } <"$OUT/res/$1"
	fi
}
# report FIRST LAST: counts and prints the verdicts of jobs FIRST..LAST
report() {
	local i
	for ((i = $1; i <= $2; i++)); do
		read_verdict "$i"
		if [ "$V_STATUS" = ok ]; then ok "$V_MSG"; else ko "$V_MSG" "$V_LOG"; fi
	done
}

# ---- the jobs ---------------------------------------------------------------------
# step NAME LOG COMMAND...: a build or a generator, its output in LOG
step() {
	local name=$1 log=$2
	shift 2
	if "$@" >"$log" 2>&1; then verdict ok "$name"; else verdict ko "$name" "$log"; fi
}

# run_case NAME FILE EXPECT SECONDS [MAX_RSS_KB]
run_case() {
	local name=$1 file=$2 expect=$3 limit=$4 maxrss=${5:-}
	local json="$OUT/json/$name.json" err="$OUT/log/$name.err" rc rss
	if [ -n "$maxrss" ] && [ -x /usr/bin/time ]; then
		timeout "$limit" /usr/bin/time -f "%M" -o "$OUT/log/$name.rss" "$DRIVER" "$file" >"$json" 2>"$err"
	else
		timeout "$limit" "$DRIVER" "$file" >"$json" 2>"$err"
	fi
	rc=$?
	if [ $rc = 124 ]; then
		verdict ko "$name: over the ${limit}s limit"
		return
	elif [ $rc != 0 ]; then
		verdict ko "$name: driver exit $rc" "$err"
		return
	fi
	if [ -n "$maxrss" ] && [ -s "$OUT/log/$name.rss" ]; then
		rss=$(tail -n 1 "$OUT/log/$name.rss")
		if [ "$rss" -gt "$maxrss" ]; then
			verdict ko "$name: max RSS ${rss} kB > ${maxrss} kB"
			return
		fi
	fi
	if [ -s "$expect" ]; then
		if "$PY" "$HERE/check_expect.py" "$json" "$expect" >"$OUT/log/$name.check" 2>&1; then
			verdict ok "$name"
		else
			verdict ko "$name" "$OUT/log/$name.check"
		fi
	else
		verdict ok "$name"
	fi
}

# asan_case LOG FILE
asan_case() {
	if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		timeout 120 "$ADRIVER" "$2" >/dev/null 2>"$1"; then
		verdict ok "asan: $(basename "$2")"
	else
		verdict ko "asan: $(basename "$2")" "$1"
	fi
}

# valgrind_case LOG FILE
valgrind_case() {
	# shellcheck disable=SC2086
	if G_SLICE=always-malloc G_DEBUG=gc-friendly timeout 600 valgrind -q --error-exitcode=1 \
		--leak-check=full --errors-for-leak-kinds=definite,possible $SUPP \
		"$DRIVER" "$2" >/dev/null 2>"$1"; then
		verdict ok "valgrind: $(basename "$2")"
	else
		verdict ko "valgrind: $(basename "$2")" "$1"
	fi
}

# parse_cpu_case FILE...: --parse-cpu N prints one non-negative number and
# exits 0; with a missing file among them it exits non-zero
parse_cpu_case() {
	local log="$OUT/log/parse_cpu.log" out rc
	out=$(timeout 20 "$DRIVER" --parse-cpu 3 "$@" 2>"$log")
	rc=$?
	if [ $rc != 0 ] || ! [[ $out =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
		printf 'mime_driver --parse-cpu 3 %s\nexit %s, printed:\n%s\n' "$*" "$rc" "$out" >>"$log"
		verdict ko "parse-cpu: one non-negative number, exit 0" "$log"
		return
	fi
	timeout 20 "$DRIVER" --parse-cpu 1 "$1" "$OUT/no-such-file.eml" >>"$log" 2>&1
	rc=$?
	if [ $rc = 0 ] || [ $rc = 124 ]; then
		printf 'mime_driver --parse-cpu 1 %s %s: exit %s\n' "$1" "$OUT/no-such-file.eml" "$rc" >>"$log"
		verdict ko "parse-cpu: a missing file fails" "$log"
		return
	fi
	verdict ok "parse-cpu: one non-negative number; a missing file fails"
}

# ---- 1. builds, and the generators (one pool) ---------------------------------------
# The extension's flags (PGXS adds -Wmissing-prototypes, -Wdeclaration-after-
# statement, ...); no PostgreSQL include path, which proves none is needed.
if command -v pg_config >/dev/null 2>&1; then
	PGCF=$(pg_config --cflags)
else
	PGCF="-Wall -Wmissing-prototypes -Wpointer-arith -Wdeclaration-after-statement -Werror=vla -Wendif-labels -Wmissing-format-attribute -Wimplicit-fallthrough=3 -Wcast-function-type -Wformat-security -fno-strict-aliasing -fwrapv -O2"
fi
# shellcheck disable=SC2086
job 2 "build driver" step "build driver" "$OUT/log/build.log" \
	$CC -O2 -g -Wall -Wextra -Werror -I"$ROOT/src" $GM_CFLAGS $SRCS -o "$DRIVER" $GM_LIBS -lcrypto
J_DRIVER=$NJOB
J_STRICT=$((NJOB + 1))
for src in $PARSER; do
	f=$(basename "$src" .c)
	# shellcheck disable=SC2086
	job 1 "strict build $f.c" step "strict build $f.c" "$OUT/log/strict_$f.log" \
		$CC $PGCF -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
		-Wno-sign-compare -std=gnu99 -I"$ROOT/src" $GM_CFLAGS -c "$src" -o "$OUT/$f.o"
done
J_STRICT_END=$NJOB
if [ "$ASAN" = 1 ]; then
	# shellcheck disable=SC2086
	job 3 "build ASan driver" step "build ASan driver" "$OUT/log/build_asan.log" \
		$CC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
		-Wall -Wextra -I"$ROOT/src" $GM_CFLAGS $SRCS -o "$ADRIVER" $GM_LIBS -lcrypto
	J_ASAN_BUILD=$NJOB
	job 2 "generate mutants" step "generate mutants" "$OUT/log/gen_fuzz.log" \
		"$PY" "$HERE/gen_fuzz.py" "$HERE/cases" "$OUT/fuzz" 6
	J_GEN_FUZZ=$NJOB
fi
job 2 "generate big cases" step "generate big cases" "$OUT/log/gen_large.log" \
	"$PY" "$HERE/gen_large.py" "$OUT/gen"
J_GEN_LARGE=$NJOB
pool 1 "$NJOB"

report "$J_DRIVER" "$J_DRIVER"
if [ "$FAIL" != 0 ]; then
	echo "$PASS passed, $FAIL failed"
	exit 1
fi
report "$J_STRICT" "$J_STRICT_END"
if [ "$ASAN" = 1 ]; then
	read_verdict "$J_ASAN_BUILD"
	if [ "$V_STATUS" = ok ]; then
		ok "$V_MSG"
	else
		ko "$V_MSG" "$V_LOG"
		ASAN=0
	fi
fi

# ---- 2.-7. every input (one pool) -------------------------------------------------
J_FIRST=$((NJOB + 1))
# 2. crafted cases
J_CASES=$((NJOB + 1))
for f in "$HERE"/cases/*.eml; do
	n=$(basename "$f" .eml)
	job 1 "$n" run_case "$n" "$f" "$HERE/cases/$n.expect" 20
done
J_CASES_END=$NJOB

# 3. generated big cases
J_GEN=$((NJOB + 1))
for f in "$OUT"/gen/*.eml; do
	[ -e "$f" ] || continue
	n=$(basename "$f" .eml)
	case "$n" in
		# raw input ~36 MB, decoded 25 MB: room for a couple of copies only
		big_attachment_25mb) job 4 "$n" run_case "$n" "$f" "$OUT/gen/$n.expect" 10 180000 ;;
		*) job 4 "$n" run_case "$n" "$f" "$OUT/gen/$n.expect" 10 ;;
	esac
done
J_GEN_END=$NJOB

# 4. Python's email test messages
J_PY=$((NJOB + 1))
if [ -n "$PYDATA" ] && [ -d "$PYDATA" ]; then
	for f in "$PYDATA"/msg_*.txt; do
		n="py_$(basename "$f" .txt)"
		job 1 "$n" run_case "$n" "$f" "" 20
	done
fi
J_PY_END=$NJOB

# queue_tool TOOL FUNCTION PRIORITY GEN_PRIORITY FILE...: one job per input
# but the native_* ones, logged as log/TOOL/ORIGIN-FILE.err; the generated
# big cases (the slowest) get GEN_PRIORITY
queue_tool() {
	local tool=$1 fn=$2 prio=$3 genprio=$4 f n o p
	shift 4
	for f in "$@"; do
		[ -e "$f" ] || continue
		n=$(basename "$f")
		case "$n" in native_*) continue ;; esac
		case "$f" in
			"$HERE"/cases/*) o=cases p=$prio ;;
			"$OUT"/gen/*) o=gen p=$genprio ;;
			"$OUT"/fuzz/*) o=fuzz p=$prio ;;
			*) o=py p=$prio ;;
		esac
		job "$p" "$tool: $n" "$fn" "$OUT/log/$tool/$o-$n.err" "$f"
	done
}

# 5. ASan + UBSan; each log is log/asan/ORIGIN-FILE.err
J_ASAN=$((NJOB + 1))
if [ "$ASAN" = 1 ]; then
	queue_tool asan asan_case 1 4 \
		"$HERE"/cases/*.eml "$OUT"/gen/*.eml "$OUT"/fuzz/*.eml ${PYDATA:+"$PYDATA"/msg_*.txt}
fi
J_ASAN_END=$NJOB

# 6. valgrind; each log is log/valgrind/ORIGIN-FILE.err
J_VG=$((NJOB + 1))
if [ "$VALGRIND" = 1 ] && command -v valgrind >/dev/null 2>&1; then
	SUPP="--suppressions=$HERE/valgrind.supp"
	[ -f /usr/share/glib-2.0/valgrind/glib.supp ] && SUPP="$SUPP --suppressions=/usr/share/glib-2.0/valgrind/glib.supp"
	queue_tool valgrind valgrind_case 3 5 "$HERE"/cases/*.eml "$OUT"/gen/*.eml ${PYDATA:+"$PYDATA"/msg_*.txt}
fi
J_VG_END=$NJOB

# 7. --parse-cpu, on the first three crafted cases
J_CPU=$((NJOB + 1))
cases=("$HERE"/cases/*.eml)
job 2 "parse-cpu" parse_cpu_case "${cases[@]:0:3}"

pool "$J_FIRST" "$NJOB"

# ---- the verdicts, in the order of the steps ---------------------------------------
report "$J_CASES" "$J_CASES_END"
report "$J_GEN_LARGE" "$J_GEN_LARGE"
report "$J_GEN" "$J_GEN_END"
report "$J_PY" "$J_PY_END"
[ "$J_PY" -gt "$J_PY_END" ] && echo "note: no Python email test data found; skipped"
if [ "$ASAN" = 1 ]; then
	read_verdict "$J_GEN_FUZZ"
	[ "$V_STATUS" = ok ] || ko "$V_MSG" "$V_LOG"
	asan_fail=0
	for ((i = J_ASAN; i <= J_ASAN_END; i++)); do
		read_verdict "$i"
		if [ "$V_STATUS" != ok ]; then
			asan_fail=$((asan_fail + 1))
			ko "$V_MSG" "$V_LOG"
		fi
	done
	[ $asan_fail = 0 ] && ok "asan: $((J_ASAN_END - J_ASAN + 1)) inputs clean"
fi
if [ "$VALGRIND" = 1 ]; then
	if command -v valgrind >/dev/null 2>&1; then
		report "$J_VG" "$J_VG_END"
	else
		ko "valgrind is not installed"
	fi
fi
report "$J_CPU" "$J_CPU"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
