# gmail_ingest: PGXS build.  `make`, `make install`, `make installcheck`.
# EXTVERSION is the one version source: it names the control file's
# default_version, the fresh install script built from sql/gmail_ingest.sql,
# and the library's own idea of its version (-DEXTVERSION: User-Agent and
# the schema check).  Released scripts (sql/gmail_ingest--1.0.sql) are
# frozen; sql/gmail_ingest--A--B.sql carries each release's changes.
EXTENSION  = gmail_ingest
EXTVERSION = 1.1
MODULE_big = gmail_ingest
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA       = $(filter-out sql/$(EXTENSION)--$(EXTVERSION).sql,$(wildcard sql/$(EXTENSION)--*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
EXTRA_CLEAN = $(EXTENSION).control

GMIME_CFLAGS := $(shell pkg-config --cflags gmime-3.0)
GMIME_LIBS   := $(shell pkg-config --libs gmime-3.0)

# Only the symbols the server looks up are exported (_PG_init, the magic
# block, the SQL-callable functions and their info records, all declared
# PGDLLEXPORT by fmgr.h or here): the helpers cannot collide with another
# library's.  PostgreSQL 15 leaves PGDLLEXPORT empty outside Windows.
PG_CPPFLAGS = -Isrc $(GMIME_CFLAGS) -DEXTVERSION=\"$(EXTVERSION)\" \
              -DPGDLLEXPORT='__attribute__((visibility("default")))'
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare \
              -fvisibility=hidden
# Warnings stop the build only when asked (the test suite and CI do): a
# newer compiler's new warning must not break a user's `make`.
ifeq ($(WERROR),1)
PG_CFLAGS  += -Werror
endif
SHLIB_LINK  = -lcurl -ldeflate -lcrypto $(GMIME_LIBS)

# pg_regress (sql/, expected/) and isolation (specs/) run against the server
# and Gmail API double that test/run_tests.sh starts; DOUBLE_URL names it.
REGRESS   = setup bad_input idempotency changes cancel oauth incremental verify security schedule quota_model push
ISOLATION = concurrent_sync sync_readers fleet_claim
# The regression inputs ask the double for what it holds ($DQ in backticks).
export DQ ?= python3 $(CURDIR)/test/double/dq.py

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

all: $(EXTENSION).control

$(EXTENSION).control: $(EXTENSION).control.in Makefile
	sed 's/@EXTVERSION@/$(EXTVERSION)/g' $< >$@

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql Makefile
	sed 's/@EXTVERSION@/$(EXTVERSION)/g' $< >$@

# Before pg_regress: a double must answer at DOUBLE_URL and the server must
# send its Gmail and OAuth calls there, or every test would fail obscurely.
installcheck: check-double
.PHONY: check-double
check-double:
	@test -n "$$DOUBLE_URL" || { echo "make installcheck: DOUBLE_URL is not set. Run 'bash test/run_tests.sh installcheck', which starts a cluster and the Gmail API double (test/double/gmail_double.py), or start the double and export DOUBLE_URL." >&2; exit 1; }
	@python3 test/double/double_client.py "$$DOUBLE_URL" GET /admin/config >/dev/null 2>&1 || { echo "make installcheck: no Gmail API double answers at $$DOUBLE_URL." >&2; exit 1; }
	@url=$$(psql -X -At -d postgres -c "SHOW gmail_ingest.api_base_url" 2>/dev/null); test "$$url" = "$$DOUBLE_URL" || { echo "make installcheck: the server's gmail_ingest.api_base_url is '$$url', not the double's $$DOUBLE_URL; set it, and gmail_ingest.oauth_token_url = '$$DOUBLE_URL/token', client_id and client_secret, in postgresql.conf." >&2; exit 1; }

# The objects see EXTVERSION.
$(OBJS): Makefile

# PGXS does not track header dependencies; a changed struct must rebuild
# every object that sees it.
$(OBJS): $(wildcard src/*.h)
