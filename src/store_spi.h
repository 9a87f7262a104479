/*-------------------------------------------------------------------------
 * store_spi.h
 *	  SPI helpers shared by the store's files (private to the store).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_STORE_SPI_H
#define GMAIL_INGEST_STORE_SPI_H

#include "executor/spi.h"

#define SCHEMA "gmail_ingest."

extern SPIPlanPtr plan_once(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types);
extern void run_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected);
/* text[] of the strings; NULL items become SQL NULLs */
extern Datum text_array(char **items, int n);
extern Datum int8_array_nullable(const int64 *items, const bool *nulls, int n);
extern char *col_text(int row, int col);
extern Datum col_datum(int row, int col, bool *isnull);

#endif
