/*-------------------------------------------------------------------------
 * store_schema.c
 *	  What the library expects of the extension's objects in this database:
 *	  that they are at the library's version, that the identity sequences
 *	  hand out fresh ids, and that no secret sits in a readable catalog.
 *
 * A new library can be installed (and preloaded) while a database still
 * holds the previous version's schema; it refuses to write there, naming
 * the command that updates it, rather than guess at columns that may not
 * exist yet.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "store.h"
#include "store_spi.h"

void
store_check_schema_version(void)
{
	static SPIPlanPtr plan;
	char	   *installed;

	run_plan(plan_once(&plan,
					   "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'gmail_ingest'",
					   0, NULL), NULL, NULL, SPI_OK_SELECT);
	installed = SPI_processed == 1 ? col_text(0, 1) : NULL;
	if (installed == NULL || strcmp(installed, EXTVERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gmail_ingest in this database is at version %s, its library at version %s",
						installed ? installed : "(none)", EXTVERSION),
				 errdetail("The library writes only to a schema of its own version."),
				 errhint("Run ALTER EXTENSION gmail_ingest UPDATE in this database; every row is kept.")));
}

void
store_repair_sequences(void)
{
	static SPIPlanPtr plan;

	run_plan(plan_once(&plan, "SELECT " SCHEMA "_repair_sequences()", 0, NULL),
			 NULL, NULL, SPI_OK_SELECT);
}

/*
 * True when a database or role setting holds the client secret: such a
 * secret (stored before settings.c refused it) is readable by every role.
 */
bool
store_secret_in_role_settings(void)
{
	static SPIPlanPtr plan;

	run_plan(plan_once(&plan,
					   "SELECT 1 FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c "
					   "WHERE c LIKE 'gmail\\_ingest.client\\_secret=%' LIMIT 1",
					   0, NULL), NULL, NULL, SPI_OK_SELECT);
	return SPI_processed > 0;
}
