/*-------------------------------------------------------------------------
 * json_tree.h
 *	  A small read-only JSON tree built with PostgreSQL's own JSON parser.
 *
 * Gmail's answers are navigated field by field; a tree with typed lookups
 * keeps that code short and makes a missing field an ordinary NULL, which
 * is how Gmail says "empty list".
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

struct JsonNode
{
	JsonKind	kind;
	char	   *str;			/* string or number text; "true"/"false" */
	int			n;				/* elements or members */
	JsonNode  **items;			/* array elements / member values */
	char	  **keys;			/* member names (objects only) */
	int			cap;
};

/*
 * Parse text (len bytes, need not be NUL-terminated) in CurrentMemoryContext;
 * the text is modified in place (each escaped NUL becomes U+FFFD).
 * Returns NULL on invalid JSON and sets *error to the parser's detail.
 */
extern JsonNode *json_parse_text(char *text, int len, char **error);

/* Member lookups; NULL when absent or when node is not an object. */
extern JsonNode *json_get(JsonNode *obj, const char *key);
extern const char *json_get_str(JsonNode *obj, const char *key);
extern bool json_get_int64(JsonNode *obj, const char *key, int64 *out);

/* Array helpers: length 0 for NULL or non-arrays. */
extern int	json_len(JsonNode *arr);
extern JsonNode *json_at(JsonNode *arr, int i);

#endif
