/*-------------------------------------------------------------------------
 * oauth_jwt.c
 *	  The JWT bearer grant of a service account with domain-wide
 *	  delegation: the assertion (header, claims, RS256 signature with
 *	  OpenSSL's EVP_DigestSign, base64url without padding), its exchange
 *	  at the token endpoint (oauth.c's), and what Google's refusals mean.
 *
 * OpenSSL objects are freed on every path before anything can raise: the
 * signing functions return a reason instead of calling ereport.  The
 * private key and the assertion appear in no error, log line or NOTICE.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "oauth_jwt.h"
#include "remote_error.h"

/* RSA signatures are as long as the modulus; 16384 bits is OpenSSL's cap. */
#define MAX_SIGNATURE_BYTES 2048

/* base64url without padding (RFC 7515 section 2), appended to buf. */
static void
append_b64url(StringInfo buf, const unsigned char *data, size_t len)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];

		appendStringInfoChar(buf, alphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, alphabet[(v >> 12) & 63]);
		appendStringInfoChar(buf, alphabet[(v >> 6) & 63]);
		appendStringInfoChar(buf, alphabet[v & 63]);
	}
	if (len - i == 1)
	{
		uint32		v = data[i] << 16;

		appendStringInfoChar(buf, alphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, alphabet[(v >> 12) & 63]);
	}
	else if (len - i == 2)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8);

		appendStringInfoChar(buf, alphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, alphabet[(v >> 12) & 63]);
		appendStringInfoChar(buf, alphabet[(v >> 6) & 63]);
	}
}

/*
 * OpenSSL asks for a passphrase only for an encrypted key.  Never prompt
 * (the default callback would read the server's terminal): note it and
 * refuse.
 */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	*(bool *) u = true;
	return -1;
}

/* The PEM's RSA private key, or NULL with *why set.  Never raises. */
static EVP_PKEY *
load_rsa_key(const char *pem, const char **why)
{
	BIO		   *bio;
	EVP_PKEY   *key;
	bool		asked = false;

	if (pem == NULL || strstr(pem, "-----BEGIN") == NULL)
	{
		*why = "private_key is not a PEM private key";
		return NULL;
	}
	bio = BIO_new_mem_buf(pem, -1);
	if (bio == NULL)
	{
		*why = "OpenSSL could not allocate a buffer for the private key";
		return NULL;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
	BIO_free(bio);
	/* OpenSSL's queue would name the failing PEM routine, never the key; drop it. */
	ERR_clear_error();
	if (key == NULL)
	{
		*why = asked
			? "the private key is encrypted (passphrase-protected); Google's JSON key files hold it unencrypted"
			: "private_key is not a PEM private key OpenSSL can read";
		return NULL;
	}
	if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA)
	{
		EVP_PKEY_free(key);
		*why = "the private key is not an RSA key (RS256, which Google requires, signs with RSA)";
		return NULL;
	}
	return key;
}

const char *
oauth_jwt_key_problem(const char *pem)
{
	const char *why = NULL;
	EVP_PKEY   *key = load_rsa_key(pem, &why);

	if (key == NULL)
		return why;
	if (EVP_PKEY_size(key) > MAX_SIGNATURE_BYTES)
		why = "the RSA key is longer than 16384 bits";
	EVP_PKEY_free(key);
	return why;
}

/*
 * RS256: RSASSA-PKCS1-v1_5 over SHA-256 of msg, into sig (at least
 * MAX_SIGNATURE_BYTES).  The signature's length, or 0 with *why set.
 * Never raises, frees what OpenSSL allocated on every path.
 */
static size_t
rs256_sign(const char *pem, const char *msg, size_t msg_len, unsigned char *sig,
		   const char **why)
{
	EVP_PKEY   *key = load_rsa_key(pem, why);
	EVP_MD_CTX *ctx;
	size_t		len = 0;

	if (key == NULL)
		return 0;
	if (EVP_PKEY_size(key) > MAX_SIGNATURE_BYTES)
	{
		EVP_PKEY_free(key);
		*why = "the RSA key is longer than 16384 bits";
		return 0;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
		EVP_DigestSign(ctx, NULL, &len, (const unsigned char *) msg, msg_len) != 1 ||
		len > MAX_SIGNATURE_BYTES ||
		EVP_DigestSign(ctx, sig, &len, (const unsigned char *) msg, msg_len) != 1)
	{
		*why = "OpenSSL could not sign with the private key";
		len = 0;
	}
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return len;
}

/* header.claims.signature, or raises (an RF_CONFIG failure: the key is ours). */
static char *
build_assertion(const OAuthJwtOptions *o)
{
	StringInfoData json;
	StringInfoData jwt;
	unsigned char sig[MAX_SIGNATURE_BYTES];
	size_t		sig_len;
	const char *why = NULL;
	int64		iat = (int64) time(NULL) - OAUTH_JWT_CLOCK_SKEW_S;

	initStringInfo(&json);
	initStringInfo(&jwt);

	appendStringInfoString(&json, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":");
	escape_json(&json, o->key_id);
	appendStringInfoChar(&json, '}');
	append_b64url(&jwt, (unsigned char *) json.data, json.len);
	appendStringInfoChar(&jwt, '.');

	resetStringInfo(&json);
	appendStringInfoString(&json, "{\"iss\":");
	escape_json(&json, o->client_email);
	if (o->subject != NULL)		/* none: the service account's own token */
	{
		appendStringInfoString(&json, ",\"sub\":");
		escape_json(&json, o->subject);
	}
	appendStringInfoString(&json, ",\"scope\":");
	escape_json(&json, o->scope);
	appendStringInfoString(&json, ",\"aud\":");
	escape_json(&json, o->token_url);
	appendStringInfo(&json, ",\"iat\":" INT64_FORMAT ",\"exp\":" INT64_FORMAT "}",
					 iat, iat + OAUTH_JWT_LIFETIME_S);
	append_b64url(&jwt, (unsigned char *) json.data, json.len);
	pfree(json.data);

	sig_len = rs256_sign(o->private_key_pem, jwt.data, jwt.len, sig, &why);
	if (sig_len == 0)
		remote_failure(RF_CONFIG,
					   errmsg("could not sign the token request of service account %s", o->client_email),
					   errdetail("%s.", why),
					   errhint("Register the service account's JSON key again with gmail_ingest.add_service_account_file."));
	appendStringInfoChar(&jwt, '.');
	append_b64url(&jwt, sig, sig_len);
	explicit_bzero(sig, sizeof(sig));
	return jwt.data;
}

/* Google's refusals of the JWT bearer grant. */
static void
jwt_refused(void *arg, long status, const char *err, const char *desc)
{
	OAuthJwtOptions own = *(const OAuthJwtOptions *) arg;
	const OAuthJwtOptions *o = &own;

	if (own.subject == NULL)
		own.subject = "itself";	/* its own token (the push listener's) */
	if (strcmp(err, "unauthorized_client") == 0)
		remote_failure(RF_DELEGATION,
					   errmsg("Google refused to let service account %s act as %s (unauthorized_client)",
							  o->client_email, o->subject),
					   errdetail("Domain-wide delegation is not granted to client id %s for scope %s, "
								 "or %s is not in a Google Workspace domain. "
								 "The token endpoint answered HTTP %ld: %s.",
								 o->client_id, o->scope, o->subject, status, oauth_safe_text(desc)),
					   errhint("A super administrator of the Workspace domain grants it at "
							   "https://admin.google.com/ac/owl/domainwidedelegation?clientIdToAdd=%s&clientScopeToAdd=%s "
							   "(Security > Access and data control > API controls > Domain-wide delegation); "
							   "a new grant can take up to 24 hours to work. Then call "
							   "gmail_ingest.add_delegated_mailbox again: the mailbox is not synced until then.",
							   o->client_id, o->scope));
	if (strcmp(err, "invalid_grant") == 0)
		remote_failure(RF_REVOKED,
					   errmsg("Google refused the token request of service account %s for %s (invalid_grant)",
							  o->client_email, o->subject),
					   errdetail("The token endpoint answered HTTP %ld: %s.", status, oauth_safe_text(desc)),
					   errhint("invalid_grant means an unknown or suspended user, a deleted or disabled key "
							   "(key id %s), or a server clock far from Google's. Once fixed, call "
							   "gmail_ingest.add_delegated_mailbox (or add_service_account with a new key): "
							   "the mailbox is not synced until then.",
							   o->key_id));
	if (strcmp(err, "invalid_client") == 0)
		remote_failure(RF_CONFIG,
					   errmsg("Google does not accept service account %s (invalid_client)", o->client_email),
					   errdetail("The token endpoint answered HTTP %ld: %s.", status, oauth_safe_text(desc)),
					   errhint("The service account or its key may have been deleted; register a current key "
							   "with gmail_ingest.add_service_account_file."));
}

OAuthToken
oauth_jwt_token(HttpClient *http, const OAuthJwtOptions *o, int *retries)
{
	StringInfoData form;
	char	   *assertion = build_assertion(o);
	OAuthToken	t;

	initStringInfo(&form);
	oauth_append_field(&form, "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
	oauth_append_field(&form, "assertion", assertion);
	explicit_bzero(assertion, strlen(assertion));
	pfree(assertion);
	t = oauth_exchange(http, o->token_url, o->max_retries, form.data, jwt_refused,
					   (void *) o, retries);
	explicit_bzero(form.data, form.len);
	pfree(form.data);
	return t;
}
