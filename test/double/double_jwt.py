"""
double_jwt: the JWT bearer grant (RFC 7523) of Google's token endpoint, as
gmail_double answers it for service accounts with domain-wide delegation.

Owns: reading an RSA public key (PEM SubjectPublicKeyInfo or PKCS#1 DER,
parsed here), RS256 verification in pure Python (pow(sig, e, n) compared with
the PKCS#1 v1.5 encoding of SHA-256's DigestInfo), the registry of service
accounts (client_email, client_id, key id, public key, the scopes a
Workspace administrator granted and the domain they were granted in), and
the checks Google makes of an assertion, answered with Google's error
bodies.  Standard library only; shares nothing with the extension's C.

Where this double chooses what Google leaves open:
  * the time window tolerates LEEWAY_S seconds of clock difference either
    way; a service account's "clock_skew_s" shifts the double's clock for
    its assertions (to test a server clock far from Google's);
  * an assertion without "sub" asks for the service account's own token: it
    is granted for the Pub/Sub scopes only (the push listener's; what the
    account may pull is the subscription's business, gmail_pubsub.py), and
    refused (invalid_request) for anything else: Gmail needs a user;
  * a subject outside the account's delegated domain (a consumer gmail.com
    account, another customer) gets unauthorized_client; an unknown user
    inside it gets invalid_grant "Invalid email or User ID".
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PUBSUB_SCOPES = {"https://www.googleapis.com/auth/pubsub", "https://www.googleapis.com/auth/cloud-platform"}
LEEWAY_S = 300
MAX_LIFETIME_S = 3600
RSA_OID = bytes.fromhex("2a864886f70d010101")                   # 1.2.840.113549.1.1.1
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

BAD_SIGNATURE = ("invalid_grant", "Invalid JWT Signature.")
BAD_TIME = ("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
            "reasonable timeframe. Check your iat and exp values in the JWT claim.")
UNAUTHORIZED = ("unauthorized_client", "Client is unauthorized to retrieve access tokens using this "
                "method, or client not authorized for any of the scopes requested.")
UNKNOWN_USER = ("invalid_grant", "Invalid email or User ID")
UNKNOWN_ACCOUNT = ("invalid_grant", "Invalid grant: account not found")


class KeyProblem(ValueError):
    pass


def _der(data, pos, want):
    """(content, next position) of the DER element of tag `want` at pos."""
    if pos + 2 > len(data) or data[pos] != want:
        raise KeyProblem(f"expected DER tag {want:#x} at {pos}")
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise KeyProblem("bad DER length")
        length, pos = int.from_bytes(data[pos:pos + n], "big"), pos + n
    if pos + length > len(data):
        raise KeyProblem("DER element runs past the end")
    return data[pos:pos + length], pos + length


def parse_public_key(pem):
    """(n, e) of an RSA public key in PEM: SubjectPublicKeyInfo ("PUBLIC KEY",
    what `openssl pkey -pubout` writes) or PKCS#1 ("RSA PUBLIC KEY")."""
    m = re.search(r"-----BEGIN (RSA )?PUBLIC KEY-----(.*?)-----END", pem or "", re.S)
    if not m:
        raise KeyProblem("not a PEM public key")
    try:
        der = base64.b64decode("".join(m.group(2).split()), validate=True)
    except (ValueError, binascii.Error):
        raise KeyProblem("the PEM body is not base64")
    outer, _ = _der(der, 0, 0x30)
    if m.group(1):
        rsa_key = outer
    else:
        algorithm, pos = _der(outer, 0, 0x30)
        oid, _ = _der(algorithm, 0, 0x06)
        if oid != RSA_OID:
            raise KeyProblem("not an RSA key")
        bits, _ = _der(outer, pos, 0x03)
        if not bits or bits[0] != 0:
            raise KeyProblem("bad BIT STRING")
        rsa_key, _ = _der(bits[1:], 0, 0x30)
    n, pos = _der(rsa_key, 0, 0x02)
    e, _ = _der(rsa_key, pos, 0x02)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


def rs256_valid(n, e, signing_input, signature):
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 8.2.2), by hand."""
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    t = SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    if k < len(t) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(em, expected)


def b64url_decode(text):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unverified_claims(assertion):
    """The claims of an assertion, unchecked (for stats and fault filters), or {}."""
    try:
        claims = json.loads(b64url_decode(assertion.split(".")[1]))
        return claims if isinstance(claims, dict) else {}
    except (ValueError, IndexError, AttributeError):
        return {}


class ServiceAccounts:
    """The registry and the grant; thread-safe on its own lock."""

    FIELDS = {"client_email", "client_id", "key_id", "public_key", "scopes", "domain", "clock_skew_s"}

    def __init__(self):
        self.lock = threading.Lock()
        self.accounts = {}          # client_email (lower case) -> dict
        self.grants = 0             # JWT grants answered
        self.issued = 0             # ... with a token

    def _checked(self, body, current=None):
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        unknown = set(body) - self.FIELDS
        if unknown:
            raise ValueError(f"unknown service account fields: {sorted(unknown)}")
        sa = dict(current or {"scopes": [], "domain": None, "clock_skew_s": 0})
        sa.update(body)
        for name in ("client_email", "client_id", "key_id", "public_key"):
            if not isinstance(sa.get(name), str) or not sa[name]:
                raise ValueError(f"{name} is required")
        if not isinstance(sa["scopes"], list) or not all(isinstance(s, str) for s in sa["scopes"]):
            raise ValueError("scopes must be a list of strings")
        if sa["domain"] is not None and not isinstance(sa["domain"], str):
            raise ValueError("domain must be a string")
        if not isinstance(sa["clock_skew_s"], (int, float)) or isinstance(sa["clock_skew_s"], bool):
            raise ValueError("clock_skew_s must be a number")
        try:
            sa["n"], sa["e"] = parse_public_key(sa["public_key"])
        except KeyProblem as err:
            raise ValueError(f"public_key: {err}")
        return sa

    @staticmethod
    def summary(sa):
        return {k: sa[k] for k in ("client_email", "client_id", "key_id", "scopes", "domain",
                                   "clock_skew_s")} | {"modulus_bits": sa["n"].bit_length()}

    def register(self, body):
        sa = self._checked(body)
        with self.lock:
            self.accounts[sa["client_email"].lower()] = sa
        return self.summary(sa)

    def update(self, client_email, body):
        """Grant or revoke delegation (scopes, domain), move the clock, rotate the key."""
        with self.lock:
            current = self.accounts.get(client_email.lower())
        if current is None:
            raise LookupError(f"no service account {client_email}")
        sa = self._checked(body, current)
        with self.lock:
            self.accounts[client_email.lower()] = sa
        return self.summary(sa)

    def list(self):
        with self.lock:
            return [self.summary(sa) for sa in self.accounts.values()]

    def grant(self, assertion, token_url, user_exists):
        """Check an assertion as Google does: (HTTP status, body, subject or None)."""
        with self.lock:
            self.grants += 1

        def refuse(status, pair):
            return status, {"error": pair[0], "error_description": pair[1]}, None

        parts = (assertion or "").split(".")
        if len(parts) != 3:
            return refuse(400, BAD_SIGNATURE)
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError:
            return refuse(400, BAD_SIGNATURE)
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return refuse(400, BAD_SIGNATURE)
        with self.lock:
            sa = self.accounts.get(str(claims.get("iss", "")).lower())
        if sa is None:
            return refuse(400, UNKNOWN_ACCOUNT)
        if (header.get("alg") != "RS256" or header.get("kid") not in (None, sa["key_id"])
                or not rs256_valid(sa["n"], sa["e"], f"{parts[0]}.{parts[1]}".encode(), signature)):
            return refuse(400, BAD_SIGNATURE)
        if claims.get("aud") != token_url:
            return refuse(400, ("invalid_grant", "Invalid JWT: Failed audience check. The expected "
                                                 f"value was {token_url}"))
        iat, exp = claims.get("iat"), claims.get("exp")
        now = time.time() + sa["clock_skew_s"]
        if (not isinstance(iat, int) or not isinstance(exp, int) or isinstance(iat, bool)
                or isinstance(exp, bool) or exp <= iat or exp - iat > MAX_LIFETIME_S
                or iat > now + LEEWAY_S or exp < now - LEEWAY_S):
            return refuse(400, BAD_TIME)
        sub = claims.get("sub")
        if sub is None:
            scopes = str(claims.get("scope", "")).split()
            if scopes and set(scopes) <= PUBSUB_SCOPES:
                with self.lock:
                    self.issued += 1
                return 200, {"scope": " ".join(scopes), "account": sa["client_email"]}, None
        if not isinstance(sub, str) or "@" not in sub:
            return 400, {"error": "invalid_request",
                         "error_description": "This double issues delegated tokens only: sub is required."}, None
        scopes = str(claims.get("scope", "")).split()
        if (not scopes or not set(scopes) <= set(sa["scopes"])
                or sa["domain"] is None or sub.rpartition("@")[2].lower() != sa["domain"].lower()):
            return refuse(401, UNAUTHORIZED)
        if not user_exists(sub):
            return refuse(400, UNKNOWN_USER)
        with self.lock:
            self.issued += 1
        return 200, {"scope": " ".join(scopes)}, sub
