/*-------------------------------------------------------------------------
 * sha256_hex.c
 *	  Lower-case hex SHA-256 of a buffer (OpenSSL one-shot EVP_Digest).
 *-------------------------------------------------------------------------
 */
#include "sha256_hex.h"

#include <openssl/evp.h>

bool
sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	unsigned int i;

	out[0] = '\0';
	if (data == NULL)
		data = "";
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return false;
	for (i = 0; i < 32; i++)
	{
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0x0f];
	}
	out[64] = '\0';
	return true;
}
