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
SHLIB_LINK  = -lcurl -lcrypto $(GMIME_LIBS)

# pg_regress (sql/, expected/) and isolation (specs/) run against the server
# and Gmail API double that test/run_tests.sh starts; DOUBLE_URL names it.
REGRESS   = setup bad_input idempotency changes cancel oauth incremental verify security
ISOLATION = concurrent_sync sync_readers

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

all: $(EXTENSION).control

$(EXTENSION).control: $(EXTENSION).control.in Makefile
	sed 's/@EXTVERSION@/$(EXTVERSION)/g' $< >$@

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql Makefile
	sed 's/@EXTVERSION@/$(EXTVERSION)/g' $< >$@

# The objects see EXTVERSION.
$(OBJS): Makefile

# PGXS does not track header dependencies; a changed struct must rebuild
# every object that sees it.
$(OBJS): $(wildcard src/*.h)
