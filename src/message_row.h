/*-------------------------------------------------------------------------
 * message_row.h
 *	  Turns Gmail's message envelope plus the parsed MIME record into the
 *	  row the store writes.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_MESSAGE_ROW_H
#define GMAIL_INGEST_MESSAGE_ROW_H

#include "gmail_api.h"
#include "mime_parse.h"
#include "store.h"

/* Labels sorted and de-duplicated in place, so comparisons are stable. */
extern void sort_labels(char **labels, int *count);

extern void build_message_row(MessageRow *row, int64 mailbox_id, int64 thread_id,
							  const GmailMessage *gm, const mp_message *mp,
							  const char *raw_sha256);

extern char *sha256_hex_of(const unsigned char *data, size_t len);

#endif
