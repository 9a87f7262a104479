#!/usr/bin/env bash
# Standalone tests of the MIME parser (src/mime_*.c), no PostgreSQL needed.
#
#   test/mime/run.sh [--no-valgrind] [--no-asan] [--verbose]
#
# 1. builds the driver, and each parser file with the extension's warning flags
# 2. runs every crafted case in cases/*.eml against its .expect
# 3. generates the big cases (1,000/5,000-level nesting, a 25 MB attachment,
#    37 MB of headers, ...) and runs them with time and memory limits
# 4. runs the driver over Python's email test messages (no crash, invariants)
# 5. runs everything plus deterministic mutants under ASan + UBSan
# 6. runs everything under valgrind
# (native_* cases are too slow under ASan and valgrind, whose realloc copies)
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

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); [ "$VERBOSE" = 1 ] && echo "ok   $1"; return 0; }
ko() { FAIL=$((FAIL + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' "$2" | head -n 30; return 0; }

rm -rf "$OUT/json" "$OUT/gen" "$OUT/fuzz" "$OUT/log"
mkdir -p "$OUT/json" "$OUT/gen" "$OUT/fuzz" "$OUT/log"

GM_CFLAGS=$(pkg-config --cflags gmime-3.0)
GM_LIBS=$(pkg-config --libs gmime-3.0)
# the parser: every src/mime_*.c, the SHA-256 helper and the UTF-8 rule
PARSER=$(echo "$ROOT"/src/mime_*.c "$ROOT/src/sha256_hex.c" "$ROOT/src/utf8_text.c")
SRCS="$HERE/mime_driver.c $PARSER"
DRIVER="$OUT/mime_driver"
ADRIVER="$OUT/mime_driver_asan"

# ---- 1. builds --------------------------------------------------------------
# shellcheck disable=SC2086
if $CC -O2 -g -Wall -Wextra -Werror -I"$ROOT/src" $GM_CFLAGS $SRCS -o "$DRIVER" $GM_LIBS -lcrypto \
	>"$OUT/log/build.log" 2>&1; then
	ok "build driver"
else
	ko "build driver" "$OUT/log/build.log"
	echo "$PASS passed, $FAIL failed"
	exit 1
fi

# The extension's flags (PGXS adds -Wmissing-prototypes, -Wdeclaration-after-
# statement, ...); no PostgreSQL include path, which proves none is needed.
if command -v pg_config >/dev/null 2>&1; then
	PGCF=$(pg_config --cflags)
else
	PGCF="-Wall -Wmissing-prototypes -Wpointer-arith -Wdeclaration-after-statement -Werror=vla -Wendif-labels -Wmissing-format-attribute -Wimplicit-fallthrough=3 -Wcast-function-type -Wformat-security -fno-strict-aliasing -fwrapv -O2"
fi
for src in $PARSER; do
	f=$(basename "$src" .c)
	# shellcheck disable=SC2086
	if $CC $PGCF -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
		-Wno-sign-compare -std=gnu99 -I"$ROOT/src" $GM_CFLAGS -c "$src" -o "$OUT/$f.o" \
		>"$OUT/log/strict_$f.log" 2>&1; then
		ok "strict build $f.c"
	else
		ko "strict build $f.c" "$OUT/log/strict_$f.log"
	fi
done

if [ "$ASAN" = 1 ]; then
	# shellcheck disable=SC2086
	if $CC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
		-Wall -Wextra -I"$ROOT/src" $GM_CFLAGS $SRCS -o "$ADRIVER" $GM_LIBS -lcrypto \
		>"$OUT/log/build_asan.log" 2>&1; then
		ok "build ASan driver"
	else
		ko "build ASan driver" "$OUT/log/build_asan.log"
		ASAN=0
	fi
fi

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
		ko "$name: over the ${limit}s limit"
		return
	elif [ $rc != 0 ]; then
		ko "$name: driver exit $rc" "$err"
		return
	fi
	if [ -n "$maxrss" ] && [ -s "$OUT/log/$name.rss" ]; then
		rss=$(tail -n 1 "$OUT/log/$name.rss")
		if [ "$rss" -gt "$maxrss" ]; then
			ko "$name: max RSS ${rss} kB > ${maxrss} kB"
			return
		fi
	fi
	if [ -s "$expect" ]; then
		if "$PY" "$HERE/check_expect.py" "$json" "$expect" >"$OUT/log/$name.check" 2>&1; then
			ok "$name"
		else
			ko "$name" "$OUT/log/$name.check"
		fi
	else
		ok "$name"
	fi
}

# ---- 2. crafted cases -----------------------------------------------------
for f in "$HERE"/cases/*.eml; do
	n=$(basename "$f" .eml)
	run_case "$n" "$f" "$HERE/cases/$n.expect" 20
done

# ---- 3. generated big cases -------------------------------------------------
if "$PY" "$HERE/gen_large.py" "$OUT/gen" >"$OUT/log/gen_large.log" 2>&1; then
	ok "generate big cases"
else
	ko "generate big cases" "$OUT/log/gen_large.log"
fi
for f in "$OUT"/gen/*.eml; do
	[ -e "$f" ] || continue
	n=$(basename "$f" .eml)
	case "$n" in
		# raw input ~36 MB, decoded 25 MB: room for a couple of copies only
		big_attachment_25mb) run_case "$n" "$f" "$OUT/gen/$n.expect" 10 180000 ;;
		*) run_case "$n" "$f" "$OUT/gen/$n.expect" 10 ;;
	esac
done

# ---- 4. Python's email test messages ------------------------------------------
if [ -n "$PYDATA" ] && [ -d "$PYDATA" ]; then
	for f in "$PYDATA"/msg_*.txt; do
		run_case "py_$(basename "$f" .txt)" "$f" "" 20
	done
else
	echo "note: no Python email test data found; skipped"
fi

# ---- 5. ASan + UBSan ------------------------------------------------------------
if [ "$ASAN" = 1 ]; then
	"$PY" "$HERE/gen_fuzz.py" "$HERE/cases" "$OUT/fuzz" 6 >"$OUT/log/gen_fuzz.log" 2>&1 ||
		ko "generate mutants" "$OUT/log/gen_fuzz.log"
	asan_fail=0
	asan_n=0
	for f in "$HERE"/cases/*.eml "$OUT"/gen/*.eml "$OUT"/fuzz/*.eml ${PYDATA:+"$PYDATA"/msg_*.txt}; do
		[ -e "$f" ] || continue
		case "$(basename "$f")" in native_*) continue ;; esac
		asan_n=$((asan_n + 1))
		if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			timeout 120 "$ADRIVER" "$f" >/dev/null 2>"$OUT/log/asan.err"; then
			asan_fail=$((asan_fail + 1))
			ko "asan: $(basename "$f")" "$OUT/log/asan.err"
		fi
	done
	[ $asan_fail = 0 ] && ok "asan: $asan_n inputs clean"
fi

# ---- 6. valgrind ----------------------------------------------------------------
if [ "$VALGRIND" = 1 ]; then
	if ! command -v valgrind >/dev/null 2>&1; then
		ko "valgrind is not installed"
	else
		SUPP="--suppressions=$HERE/valgrind.supp"
		[ -f /usr/share/glib-2.0/valgrind/glib.supp ] && SUPP="$SUPP --suppressions=/usr/share/glib-2.0/valgrind/glib.supp"
		for f in "$HERE"/cases/*.eml "$OUT"/gen/*.eml ${PYDATA:+"$PYDATA"/msg_*.txt}; do
			[ -e "$f" ] || continue
			n=$(basename "$f")
			case "$n" in native_*) continue ;; esac
			# shellcheck disable=SC2086
			if G_SLICE=always-malloc G_DEBUG=gc-friendly timeout 600 valgrind -q --error-exitcode=1 \
				--leak-check=full --errors-for-leak-kinds=definite,possible $SUPP \
				"$DRIVER" "$f" >/dev/null 2>"$OUT/log/valgrind.err"; then
				ok "valgrind: $n"
			else
				ko "valgrind: $n" "$OUT/log/valgrind.err"
			fi
		done
	fi
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
