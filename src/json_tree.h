/*-------------------------------------------------------------------------
 * json_tree.h
 *	  A small read-only JSON tree built with PostgreSQL's own JSON parser.
 *
 * Gmail's answers are navigated field by field; a tree with typed lookups
 * keeps that code short and makes a missing field an ordinary NULL, which
 * is how Gmail says "empty list".
 *
 * The answers come from the network, so the tree is built defensively:
 * every string in it is valid UTF-8 without NUL, nesting is bounded before
 * PostgreSQL's recursive parser sees the text, members the caller never
 * reads are skipped without building anything, and the tree's memory is
 * bounded by a small multiple of the answer's size (beyond it the answer
 * is refused as unreadable).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_JSON_TREE_H
#define GMAIL_INGEST_JSON_TREE_H

typedef enum JsonKind
{
	JK_NULL,
	JK_BOOL,
	JK_NUMBER,
	JK_STRING,
	JK_ARRAY,
	JK_OBJECT
} JsonKind;

typedef struct JsonNode JsonNode;

/*
 * 24 bytes, children by value: a hostile answer of many tiny values must
 * stay cheap.  str is NULL in containers, items NULL in scalars.
 */
struct JsonNode
{
	uint8		kind;			/* JsonKind */
	uint8		flags;			/* private to json_tree.c */
	int32		n;				/* elements or members */
	char	   *str;			/* string or number text; "true"/"false" */
	JsonNode   *items;			/* array elements / member values, in order;
								 * an object's member names follow its n
								 * values, as n const char *s */
};

/* Deepest nesting accepted; Gmail's answers nest fewer than 10 levels. */
#define JSON_TREE_MAX_DEPTH 64

/* What a caller reads; NULL-terminated name lists. */
typedef struct JsonReadSpec
{
	/*
	 * Member names ever read, at any level.  Members of other names are
	 * skipped without building nodes.  NULL keeps every member.
	 */
	const char *const *names;

	/*
	 * Members whose string value must arrive exactly as a valid UTF-8
	 * string (ids sent back to Gmail, or stored as keys): one that is not
	 * would have to be altered, so the answer is refused instead.
	 */
	const char *const *exact;
} JsonReadSpec;

/*
 * Parse text (len bytes, need not be NUL-terminated) in CurrentMemoryContext;
 * the text is modified in place (an escaped NUL or lone UTF-16 surrogate
 * becomes U+FFFD).  Other invalid UTF-8 in strings is repaired to U+FFFD.
 * Returns NULL on invalid, too deep or too dense JSON, or an exact member
 * that is not valid, and sets *error to a description (valid UTF-8).
 */
extern JsonNode *json_parse_text(char *text, int len, char **error);
extern JsonNode *json_parse_members(char *text, int len, const JsonReadSpec *spec,
									char **error);

/* Drop a string's text early (a large one is freed at once). */
extern void json_drop_str(JsonNode *node);

/* Member lookups; NULL when absent or when node is not an object. */
extern JsonNode *json_get(JsonNode *obj, const char *key);
extern const char *json_get_str(JsonNode *obj, const char *key);
extern bool json_get_int64(JsonNode *obj, const char *key, int64 *out);

/* Array helpers: length 0 for NULL or non-arrays. */
extern int	json_len(JsonNode *arr);
extern JsonNode *json_at(JsonNode *arr, int i);

#endif
