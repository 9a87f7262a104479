/*-------------------------------------------------------------------------
 * json_tree.c
 *	  Builds a JsonNode tree from text with common/jsonapi.h.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "json_tree.h"

#define MAX_DEPTH 64

typedef struct BuildState
{
	JsonNode   *stack[MAX_DEPTH + 1];
	int			depth;
	char	   *pending_key;	/* member name awaiting its value */
	JsonNode   *root;
	bool		too_deep;
} BuildState;

static void
attach(BuildState *st, JsonNode *node)
{
	JsonNode   *parent;

	if (st->depth == 0)
	{
		st->root = node;
		return;
	}
	parent = st->stack[st->depth - 1];
	if (parent->n == parent->cap)
	{
		int			ncap = parent->cap ? parent->cap * 2 : 8;

		if (parent->cap)
		{
			parent->items = repalloc(parent->items, sizeof(JsonNode *) * ncap);
			if (parent->kind == JK_OBJECT)
				parent->keys = repalloc(parent->keys, sizeof(char *) * ncap);
		}
		else
		{
			parent->items = palloc(sizeof(JsonNode *) * ncap);
			if (parent->kind == JK_OBJECT)
				parent->keys = palloc(sizeof(char *) * ncap);
		}
		parent->cap = ncap;
	}
	if (parent->kind == JK_OBJECT)
		parent->keys[parent->n] = st->pending_key;
	parent->items[parent->n++] = node;
	st->pending_key = NULL;
}

static void
push(BuildState *st, JsonKind kind)
{
	JsonNode   *node = palloc0(sizeof(JsonNode));

	node->kind = kind;
	attach(st, node);
	/* Deeper structure than Gmail ever sends is kept but not descended. */
	if (st->depth >= MAX_DEPTH)
	{
		st->too_deep = true;
		return;
	}
	st->stack[st->depth++] = node;
}

static void
on_object_start(void *state)
{
	push((BuildState *) state, JK_OBJECT);
}

static void
on_array_start(void *state)
{
	push((BuildState *) state, JK_ARRAY);
}

static void
on_struct_end(void *state)
{
	BuildState *st = (BuildState *) state;

	if (st->depth > 0)
		st->depth--;
}

static void
on_field_start(void *state, char *fname, bool isnull)
{
	((BuildState *) state)->pending_key = fname;
}

static void
on_scalar(void *state, char *token, JsonTokenType type)
{
	BuildState *st = (BuildState *) state;
	JsonNode   *node = palloc0(sizeof(JsonNode));

	switch (type)
	{
		case JSON_TOKEN_STRING:
			node->kind = JK_STRING;
			break;
		case JSON_TOKEN_NUMBER:
			node->kind = JK_NUMBER;
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			node->kind = JK_BOOL;
			break;
		default:
			node->kind = JK_NULL;
			break;
	}
	node->str = token;
	attach(st, node);
}

/*
 * PostgreSQL's JSON parser refuses \u0000 (no text value may hold NUL), so
 * one message with a NUL byte in its snippet would make a whole list answer
 * unreadable, on every run.  Text columns get U+FFFD for NUL anyway:
 * rewrite each unescaped \u0000 in place to \ufffd, of the same length.
 */
static void
replace_escaped_nul(char *text, int len)
{
	char	   *p = text;
	char	   *end = text + len;

	while (p + 6 <= end && (p = memchr(p, '\\', end - p - 5)) != NULL)
	{
		char	   *q = p;
		int			run = 0;

		while (q < end && *q == '\\')
		{
			q++;
			run++;
		}
		/* An odd run ends with an escaping backslash, which *q follows. */
		if (run % 2 == 1 && q + 5 <= end && memcmp(q, "u0000", 5) == 0)
			memcpy(q, "ufffd", 5);
		p = q;
	}
}

JsonNode *
json_parse_text(char *text, int len, char **error)
{
	BuildState	st;
	JsonSemAction sem;
	JsonLexContext *lex;
	JsonParseErrorType rc;

	memset(&st, 0, sizeof(st));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = on_object_start;
	sem.object_end = on_struct_end;
	sem.array_start = on_array_start;
	sem.array_end = on_struct_end;
	sem.object_field_start = on_field_start;
	sem.scalar = on_scalar;

	replace_escaped_nul(text, len);
	lex = makeJsonLexContextCstringLen(text, len, PG_UTF8, true);
	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		*error = json_errdetail(rc, lex);
		return NULL;
	}
	*error = NULL;
	return st.root;
}

JsonNode *
json_get(JsonNode *obj, const char *key)
{
	int			i;

	if (obj == NULL || obj->kind != JK_OBJECT)
		return NULL;
	for (i = 0; i < obj->n; i++)
		if (obj->keys[i] && strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}

const char *
json_get_str(JsonNode *obj, const char *key)
{
	JsonNode   *v = json_get(obj, key);

	if (v == NULL || (v->kind != JK_STRING && v->kind != JK_NUMBER))
		return NULL;
	return v->str;
}

/* Gmail sends 64-bit numbers as strings; accept both spellings. */
bool
json_get_int64(JsonNode *obj, const char *key, int64 *out)
{
	const char *s = json_get_str(obj, key);
	char	   *end;
	long long	v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = (int64) v;
	return true;
}

int
json_len(JsonNode *arr)
{
	return (arr && arr->kind == JK_ARRAY) ? arr->n : 0;
}

JsonNode *
json_at(JsonNode *arr, int i)
{
	return (arr && arr->kind == JK_ARRAY && i >= 0 && i < arr->n) ? arr->items[i] : NULL;
}
