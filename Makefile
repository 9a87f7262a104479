# gmail_ingest: PGXS build.  `make`, `make install`, `make installcheck`.
EXTENSION  = gmail_ingest
EXTVERSION = 1.0
MODULE_big = gmail_ingest
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA       = $(wildcard sql/gmail_ingest--*.sql)

GMIME_CFLAGS := $(shell pkg-config --cflags gmime-3.0)
GMIME_LIBS   := $(shell pkg-config --libs gmime-3.0)

PG_CPPFLAGS = -Isrc $(GMIME_CFLAGS)
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK  = -lcurl -lcrypto $(GMIME_LIBS)

# pg_regress (sql/, expected/) and isolation (specs/) run against the server
# and Gmail API double that test/run_tests.sh starts; DOUBLE_URL names it.
REGRESS   = setup bad_input idempotency changes cancel oauth incremental verify security
ISOLATION = concurrent_sync sync_readers

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track header dependencies; a changed struct must rebuild
# every object that sees it.
$(OBJS): $(wildcard src/*.h)
