/*-------------------------------------------------------------------------
 * store_service_account.c
 *	  Reads a service account (service_accounts) with its private key
 *	  (service_account_keys, which no role but the extension's owner can
 *	  read) for the JWT bearer grant.  Writes are the SQL functions'
 *	  (add_service_account): validation and upserts live there.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "store_service_account.h"
#include "store_spi.h"

bool
store_load_service_account(int64 id, ServiceAccountInfo *out)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID};
	Datum		v[1];

	plan_once(&plan,
			  "SELECT s.client_email, s.client_id, s.private_key_id, k.private_key "
			  "  FROM " SCHEMA "service_accounts s "
			  "  JOIN " SCHEMA "service_account_keys k ON k.service_account_id = s.id "
			  " WHERE s.id = $1",
			  1, types);
	v[0] = Int64GetDatum(id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return false;
	}
	memset(out, 0, sizeof(*out));
	out->id = id;
	out->client_email = col_text(0, 1);
	out->client_id = col_text(0, 2);
	out->private_key_id = col_text(0, 3);
	out->private_key = col_text(0, 4);
	SPI_freetuptable(SPI_tuptable);
	return true;
}
