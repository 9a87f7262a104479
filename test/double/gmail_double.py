#!/usr/bin/env python3
"""
gmail_double: an in-memory stand-in for the Gmail REST API v1 and Google's
OAuth 2.0 token endpoint, used by gmail_ingest's tests and benchmarks.

Owns: the HTTP(S) server; OAuth refresh-token grants and access-token expiry
(the JWT bearer grant of service accounts is checked by double_jwt.py);
the read-only Gmail endpoints gmail_ingest calls (profile, labels.list,
messages.list/get, attachments.get, threads.list/get, history.list) with
Gmail's response shapes and quirks; a mailbox-wide history log; per-mailbox
quota accounting and optional enforcement (units per minute, concurrent
requests); latency and fault injection; and an admin API under /admin/ that
tests use to create mailboxes, mutate them and read statistics.  Message
content comes from gmail_mailgen.py.  Standard library only.

    python3 test/gmail_double.py --port 0 --port-file /tmp/x.port
        [--host 127.0.0.1] [--tls-cert CERT --tls-key KEY] [--verbose]

Where this double chooses a behaviour Gmail leaves open (see GMAIL_FACTS.md):
  * q supports only "after:<epoch s>" and "before:<epoch s>" (anything else
    is 400 invalidArgument).  A message matches after:N iff
    internalDate >= N*1000 ms and before:N iff internalDate < N*1000 ms.
  * messages.list and threads.list leave out DRAFT messages, and SPAM/TRASH
    ones unless includeSpamTrash=true; a label named in labelIds is never
    left out.  threads.get returns every message of the thread.
  * raw, body.data and attachments.get data are base64url, padded when the
    message id is even and unpadded when it is odd.
  * format=full/metadata header values are the raw header text, unfolded,
    not RFC 2047 decoded; filename is decoded (RFC 2231 and 2047).
  * Every part with a filename is served through an attachmentId.  Ids are
    signed tokens naming (message, partId) with a random nonce, so they differ
    on every fetch, need no server memory and work only for their message.
  * Responses are pretty-printed unless prettyPrint=false, like Google's.
  * Quota 429s carry "Retry after <ISO time>" in the message and no
    Retry-After header; status faults can add the header.

Test isolation (several tests share one double): a fault rule with "email"
fires only for that mailbox (the token endpoint knows the mailbox by its
refresh token), GET/DELETE /admin/faults?email=X see or clear only its
rules, and POST /admin/mailboxes/X/config overrides latency_ms,
quota_units_per_minute and max_concurrent_per_user for one mailbox (null
drops an override).  A mailbox created with "content_email" holds exactly
the messages, ids and history ids a mailbox of that address would hold, so
two mailboxes can serve identical data under different logins.

Benchmarks: a mailbox created with "warm": true keeps the gzip body of each
message's messages.get?format=raw answer (built for every message at
creation, on all CPUs, and rebuilt when its labels change) and parses every
message's format=full tree at creation ("warm": "raw" skips the parsing), so
serving costs this Python process little and the client's side is what a
benchmark measures.  The bytes sent are those of the ordinary answer.

Fleets (gmail_fleet.py): POST /admin/fleet creates N small mailboxes from
one spec in one call (PREFIX-0001@fleet.test ..., refresh-<address>, a seed
per member), all or nothing; GET /admin/fleet/stats?prefix=P sums their
counters and gives per member its token/profile/list/history calls; POST
/admin/fleet/mail adds new mail to many members; POST
/admin/fleet/stats/reset zeroes the members' counters.  Members are
ordinary mailboxes for every other endpoint.
"""

import argparse
import base64
import concurrent.futures
import binascii
import email
import email.policy
import gzip
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import select
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gmail_fleet  # noqa: E402
import gmail_mailgen  # noqa: E402
import double_jwt  # noqa: E402
import gmail_pubsub  # noqa: E402

SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_PREFIX = "/gmail/v1/users/"

# Gmail's two quota models (GMAIL_FACTS.md): the per-method costs published
# before 2026 ("legacy"), and those charged to projects new since May 2026.
# The double charges what config["costs"] says; setting "quota_model" loads
# a model's table.  The default is a new (2026) project's, as the
# extension's default gmail_ingest.quota_model.
QUOTA_MODELS = {
    "legacy": {"profile": 1, "labels.list": 1, "history.list": 2, "messages.list": 5,
               "messages.get": 5, "attachments.get": 5, "threads.list": 10,
               "threads.get": 10, "watch": 100, "stop": 50, "token": 0},
    "2026": {"profile": 1, "labels.list": 1, "history.list": 2, "messages.list": 5,
             "messages.get": 20, "attachments.get": 20, "threads.list": 10,
             "threads.get": 40, "watch": 100, "stop": 50, "token": 0},
}
DEFAULT_COSTS = QUOTA_MODELS["2026"]
# Gmail's answer when a project's per-minute quota is spent (all its users).
PROJECT_LIMIT_MESSAGE = ("Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' "
                         "of service 'gmail.googleapis.com' for consumer 'project_number:{}'.")
PROJECT_NUMBER = 424242424242
CHARGE_LOG_MAX = 200_000             # request times kept for GET /admin/charges
DEFAULT_CONFIG = {
    "client_id": "test-client-id",
    "client_secret": "test-client-secret",
    "token_ttl": 3599,               # seconds an access token lives
    "latency_ms": 0,                 # added before every Gmail/token response
    "quota_units_per_minute": 0,     # per user; 0 = no enforcement
    "project_quota_units_per_minute": 0,  # all mailboxes together; 0 = no enforcement
    "quota_model": "2026",
    "max_concurrent_per_user": 0,    # 0 = no enforcement
    "costs": DEFAULT_COSTS,
    "empty_history_pages": True,     # a record-less page before the last one
    "fault_seed": 0,                 # seeds the RNG behind fault probabilities
}
GRPC_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 409: "ABORTED",
               429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
               502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
DEFAULT_REASON = {400: "invalidArgument", 401: "authError", 403: "userRateLimitExceeded",
                  404: "notFound", 429: "rateLimitExceeded", 500: "backendError",
                  502: "backendError", 503: "backendError", 504: "backendError"}
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded",
                "quotaExceeded"}
NOT_FOUND_MESSAGE = "Requested entity was not found."
GMAIL_ENDPOINTS = ["profile", "labels.list", "messages.list", "messages.get",
                   "attachments.get", "threads.list", "threads.get", "history.list",
                   "watch", "stop"]
FAULT_KINDS = {"status", "delay", "slow_body", "hang", "truncate", "invalid_json", "reset", "gone",
               "body", "corrupt_gzip"}
HISTORY_TYPES = {"messageAdded": "messagesAdded", "messageDeleted": "messagesDeleted",
                 "labelAdded": "labelsAdded", "labelRemoved": "labelsRemoved"}
FORMATS = ("minimal", "full", "raw", "metadata")
HANG_SECONDS = 600
# Generation parameters of POST /admin/mailboxes (and of a fleet's members), with defaults.
MAILBOX_PARAMS = {"seed": 1, "threads": 60, "messages": 240, "days": 30, "window_days": 7,
                  "attachments": 50, "attachment_size_min": 1024,
                  "attachment_size_max": 40 * 1024, "attachment_size_dist": "uniform",
                  "drafts": None, "spam": None, "trash": None, "labelless": None,
                  "header_quirks": True, "name": None}


# ------------------------------------------------------------------ errors

class ApiError(Exception):
    """An error answered in Google's JSON error shape."""

    def __init__(self, code, message, reason=None, domain=None, status=None,
                 headers=(), extra=None, detail_message=None):
        super().__init__(message)
        reason = reason or DEFAULT_REASON.get(code, "badRequest")
        self.code, self.headers = code, list(headers)
        detail = {"message": detail_message or message,
                  "domain": domain or ("usageLimits" if reason in RATE_REASONS else "global"),
                  "reason": reason}
        detail.update(extra or {})
        self.body = {"error": {"code": code, "message": message, "errors": [detail],
                               "status": status or GRPC_STATUS.get(code, "UNKNOWN")}}


def not_found():
    return ApiError(404, NOT_FOUND_MESSAGE, "notFound")


def invalid(message):
    return ApiError(400, message, "invalidArgument")


def unauthenticated():
    return ApiError(
        401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "authError", extra={"location": "Authorization", "locationType": "header"},
        detail_message="Invalid Credentials",
        headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", '
                  'error="invalid_token"')])


def oauth_error(error, description):
    """Body of a token-endpoint error."""
    return {"error": error, "error_description": description}


class AdminError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ClientGone(Exception):
    """The client disconnected (or must be dropped); nothing more to send."""


# ----------------------------------------------------------------- helpers

def b64url(data, padded=True):
    text = base64.urlsafe_b64encode(data).decode("ascii")
    return text if padded else text.rstrip("=")


def b64decode_any(text):
    """Decode base64 in either alphabet, padded or not."""
    text = re.sub(r"\s", "", text).replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def padded_for(message_id):
    """Real Gmail varies; here even ids get padded base64url and odd ids don't."""
    return int(message_id, 16) % 2 == 0


def iso_utc(epoch_seconds):
    dt = datetime.fromtimestamp(epoch_seconds, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def encode_page_token(*state):
    return b64url(json.dumps(state, separators=(",", ":")).encode(), padded=False)


def decode_page_token(token, kind):
    try:
        state = json.loads(b64decode_any(token))
        if state[0] == kind:
            return state[1:]
    except (ValueError, TypeError, IndexError, binascii.Error):
        pass
    raise invalid("Invalid pageToken")


def one(query, name, default=None):
    values = query.get(name)
    return values[-1] if values else default


def many(query, name):
    """A repeated parameter, also accepting comma-separated values."""
    return [v for item in query.get(name, []) for v in item.split(",") if v]


def parse_bool(query, name):
    value = one(query, name, "false").lower()
    if value not in ("true", "false"):
        raise invalid(f"Invalid value for {name}: {value}")
    return value == "true"


def parse_max_results(query, default=100, maximum=500):
    value = one(query, "maxResults")
    if value in (None, ""):
        return default
    if not re.fullmatch(r"\d+", value) or int(value) < 1:
        raise invalid(f"Invalid value for maxResults: {value}")
    return min(int(value), maximum)


def parse_search(q):
    """(after_ms, before_ms) for the supported q grammar; see module docstring."""
    after = before = None
    for term in q.split():
        m = re.fullmatch(r"(after|before):(\d+)", term)
        if not m:
            raise invalid(f"Unsupported search term for this test double: {term!r} "
                          "(only after:<epoch seconds> and before:<epoch seconds>)")
        if m[1] == "after":
            after = int(m[2]) * 1000
        else:
            before = int(m[2]) * 1000
    return after, before


# --------------------------------------------------- partial responses (fields=)

_FIELD_TOKENS = re.compile(r"\s*([A-Za-z_*][\w*]*|[,()/])")


def parse_fields(spec):
    """Parse 'a,b(c,d/e),f/g' into {'a': None, 'b': {'c': None, 'd': {'e': None}}, ...};
    None means "the whole value"."""
    tokens, pos = [], 0
    while pos < len(spec.rstrip()):
        m = _FIELD_TOKENS.match(spec, pos)
        if not m:
            raise invalid(f"Invalid field selection {spec}")
        tokens.append(m[1])
        pos = m.end()
    tokens.append("")
    i = 0

    def name():
        nonlocal i
        tok = tokens[i]
        if not tok or tok in ",()/":
            raise invalid(f"Invalid field selection {spec}")
        i += 1
        return tok

    def merge(sel, path, sub):
        for key in path[:-1]:
            if key in sel and sel[key] is None:
                return
            sel = sel.setdefault(key, {})
        key = path[-1]
        if sub is None or sel.get(key, {}) is None:
            sel[key] = None
        else:
            for k, v in sub.items():
                merge(sel.setdefault(key, {}), [k], v)

    def selection():
        nonlocal i
        sel = {}
        while True:
            path = [name()]
            while tokens[i] == "/":
                i += 1
                path.append(name())
            sub = None
            if tokens[i] == "(":
                i += 1
                sub = selection()
                if tokens[i] != ")":
                    raise invalid(f"Invalid field selection {spec}")
                i += 1
            merge(sel, path, sub)
            if tokens[i] != ",":
                return sel
            i += 1

    result = selection()
    if tokens[i] != "":
        raise invalid(f"Invalid field selection {spec}")
    return result


def apply_fields(value, sel):
    if sel is None:
        return value
    if isinstance(value, list):
        return [apply_fields(v, sel) for v in value]
    if isinstance(value, dict):
        if "*" in sel:
            return value
        return {k: apply_fields(v, sel[k]) for k, v in value.items() if k in sel}
    return value


# --------------------------------------------------------------- messages

def _unfold(value):
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def _build_payload(raw, padded):
    """The format=full MessagePart tree of raw, and the decoded bytes of every
    part served through attachments.get, keyed by partId.  Attachment bodies
    hold an "attachmentId": None placeholder that each fetch fills in."""
    attachments = {}

    def walk(part, part_id):
        try:
            filename = part.get_filename() or ""
        except Exception:           # unparseable parameters: show no name
            filename = ""
        node = {"partId": part_id, "mimeType": part.get_content_type(), "filename": filename,
                "headers": [{"name": n, "value": _unfold(v)} for n, v in part.raw_items()]}
        if part.is_multipart():
            node["body"] = {"size": 0}
            node["parts"] = [walk(child, f"{part_id}.{n}" if part_id else str(n))
                             for n, child in enumerate(part.get_payload())]
            return node
        data = part.get_payload(decode=True) or b""
        if filename:
            attachments[part_id] = data
            node["body"] = {"attachmentId": None, "size": len(data)}
        elif data:
            node["body"] = {"size": len(data), "data": b64url(data, padded)}
        else:
            node["body"] = {"size": 0}
        return node

    tree = walk(email.message_from_bytes(raw, policy=email.policy.default), "")
    return tree, attachments


class Message:
    """A stored message.  Content never changes; labels and history_id do
    (under the Double's lock)."""

    __slots__ = ("id", "thread_id", "internal_date", "raw", "snippet",
                 "attachment_count", "labels", "history_id", "_payload", "gz_raw")

    def __init__(self, id, thread_id, internal_date, raw, snippet, attachment_count, labels):
        self.id, self.thread_id, self.internal_date = id, thread_id, internal_date
        self.raw, self.snippet, self.attachment_count = raw, snippet, attachment_count
        self.labels, self.history_id, self._payload = list(labels), 0, None
        self.gz_raw = None        # (key, gzip body) of the format=raw answer, warm mailboxes only

    def payload(self):
        """(tree, attachment bytes by partId); parsed once, then cached."""
        if self._payload is None:
            self._payload = _build_payload(self.raw, padded_for(self.id))
        return self._payload


@dataclass
class HistoryRecord:
    id: int
    kind: str                 # a value of HISTORY_TYPES
    message_id: str
    thread_id: str
    labels: tuple             # the message's labels after the change
    changed: tuple = ()       # labels added or removed


@dataclass
class MailboxStats:
    requests: Counter = field(default_factory=Counter)
    units: int = 0
    units_by_endpoint: Counter = field(default_factory=Counter)
    errors_sent: Counter = field(default_factory=Counter)
    peak_concurrency: int = 0
    bytes_sent: int = 0

    def as_json(self, in_flight):
        return {"requests": dict(self.requests), "units": self.units,
                "units_by_endpoint": dict(self.units_by_endpoint),
                "errors_sent": dict(self.errors_sent), "peak_concurrency": self.peak_concurrency,
                "bytes_sent": self.bytes_sent, "in_flight": in_flight}


class Mailbox:
    """One user's mail, history log and counters.  Callers hold the lock."""

    change_listener = None                       # (email, historyId) per record: push

    def __init__(self, email_address, refresh_token, seed, content_email=None):
        self.email, self.refresh_token, self.revoked = email_address, refresh_token, False
        self.content_email = content_email or email_address
        self.warm = False                        # keep gzip bodies of format=raw answers
        self.limits = {}                         # per-mailbox overrides of DEFAULT_CONFIG keys
        # Drives history-id gaps, ids of added messages and composed replies.
        self.rng = random.Random(f"{seed}/{self.content_email}/changes")
        self.history_id = self.rng.randrange(10_000, 1_000_000)
        self.history_floor = self.history_id     # smallest startHistoryId still served
        self.messages = {}                       # id -> Message
        self.threads = {}                        # thread id -> [Message], oldest first
        self.thread_history = {}                 # thread id -> historyId
        self.history = []                        # HistoryRecord, ascending id
        self._newest_first = None
        self.stats = MailboxStats()
        self.in_flight = 0
        self.quota_window = deque()              # (monotonic time, units)
        self.quota_window_units = 0

    def _record(self, kind, msg, changed=()):
        self.history_id += self.rng.randint(1, 5)
        self.history.append(HistoryRecord(self.history_id, kind, msg.id, msg.thread_id,
                                          tuple(msg.labels), tuple(changed)))
        msg.history_id = self.history_id
        self.thread_history[msg.thread_id] = self.history_id
        if Mailbox.change_listener is not None:
            Mailbox.change_listener(self.email, self.history_id)

    def new_message_id(self, date_ms):
        while True:
            mid = f"{((date_ms << 20) | self.rng.getrandbits(20)) & (2**64 - 1):016x}"
            if mid not in self.messages:
                return mid

    def add(self, msg):
        self.messages[msg.id] = msg
        thread = self.threads.setdefault(msg.thread_id, [])
        thread.append(msg)
        thread.sort(key=lambda m: (m.internal_date, m.id))
        self._newest_first = None
        self._record("messagesAdded", msg)

    def relabel(self, msg, add, remove):
        added = [lb for lb in dict.fromkeys(add) if lb not in msg.labels]
        if added:
            msg.labels.extend(added)
            self._record("labelsAdded", msg, added)
        removed = [lb for lb in dict.fromkeys(remove) if lb in msg.labels]
        if removed:
            msg.labels = [lb for lb in msg.labels if lb not in removed]
            self._record("labelsRemoved", msg, removed)

    def delete(self, msg):
        del self.messages[msg.id]
        thread = self.threads[msg.thread_id]
        thread.remove(msg)
        self._newest_first = None
        self._record("messagesDeleted", msg)
        if not thread:
            del self.threads[msg.thread_id]

    def newest_first(self):
        if self._newest_first is None:
            self._newest_first = sorted(self.messages.values(),
                                        key=lambda m: (m.internal_date, m.id), reverse=True)
        return self._newest_first

    def expire_history(self, floor):
        self.history_floor = max(self.history_floor, floor)
        self.history = [r for r in self.history if r.id > self.history_floor]

    def summary(self):
        return {"email": self.email, "refresh_token": self.refresh_token,
                "revoked": self.revoked, "messages": len(self.messages),
                "threads": len(self.threads), "history_id": str(self.history_id),
                "history_floor": str(self.history_floor)}


# ------------------------------------------------------------------ faults

@dataclass
class FaultRule:
    endpoint: str
    kind: str
    count: int = 1            # requests still to hit; -1 = forever
    after: int = 0            # matching requests to let through first
    probability: float | None = None
    message_id: str | None = None
    status: int = 503
    reason: str | None = None
    message: str | None = None
    retry_after: float | None = None
    ms: int = 0
    email: str | None = None  # only this mailbox's requests
    body: list | None = None  # kind "body": the answer, as parts (see body_bytes)
    seen: int = 0             # matching requests so far
    fired: int = 0

    @classmethod
    def from_json(cls, spec):
        if not isinstance(spec, dict):
            raise AdminError(400, "a fault rule must be an object")
        names = {"endpoint", "kind", "count", "after", "probability", "message_id", "status",
                 "reason", "message", "retry_after", "ms", "email", "body"}
        unknown = set(spec) - names
        if unknown:
            raise AdminError(400, f"unknown fault rule keys: {sorted(unknown)}")
        if "endpoint" not in spec or "kind" not in spec:
            raise AdminError(400, "a fault rule needs endpoint and kind")
        rule = cls(**{k: spec[k] for k in spec})
        if rule.endpoint not in GMAIL_ENDPOINTS + ["token", "*"]:
            raise AdminError(400, f"unknown endpoint {rule.endpoint!r}")
        if rule.kind not in FAULT_KINDS:
            raise AdminError(400, f"unknown fault kind {rule.kind!r}")
        if rule.kind == "status" and not 400 <= int(rule.status) <= 599:
            raise AdminError(400, "status must be 4xx or 5xx")
        if rule.kind == "body":
            if "status" not in spec:
                rule.status = 200
            rule.body_bytes()             # refuse a bad spec now, not when it fires
        return rule

    def body_bytes(self):
        """A hostile answer, built from parts so that a test can ask for 60 MB
        or invalid UTF-8 without sending it: each part is {"text": str} (UTF-8),
        {"hex": str} (raw bytes) or {"counter": true} (how often the rule has
        fired, in decimal: a page token that never repeats), repeated "repeat"
        times (default 1)."""
        if not isinstance(self.body, list):
            raise AdminError(400, "body must be a list of parts")
        out = []
        for part in self.body:
            if not isinstance(part, dict) or len(set(part) - {"text", "hex", "counter", "repeat"}) \
                    or sum(k in part for k in ("text", "hex", "counter")) != 1:
                raise AdminError(400, "a body part is {\"text\"|\"hex\"|\"counter\": ..., \"repeat\": n}")
            chunk = part["text"].encode("utf-8") if "text" in part \
                else bytes.fromhex(part["hex"]) if "hex" in part else str(self.fired).encode()
            repeat = int(part.get("repeat", 1))
            if not 0 <= repeat or len(chunk) * repeat > 256 << 20:
                raise AdminError(400, "a body part may expand to at most 256 MB")
            out.append(chunk * repeat)
        return b"".join(out)

    def matches(self, endpoint, target_id, email=None):
        # "*" is every Gmail endpoint; the token endpoint must be named.
        if self.endpoint != endpoint and (self.endpoint != "*" or endpoint == "token"):
            return False
        if self.email is not None and (email or "").lower() != self.email.lower():
            return False
        return self.message_id is None or self.message_id == target_id

    def as_json(self):
        return {k: v for k, v in self.__dict__.items() if v is not None}


# ------------------------------------------------------------ attachment ids

class AttachmentIds:
    """Ephemeral attachment ids: nonce + partId + MAC over (message id, nonce,
    partId).  Every fetch gets a new id; any id resolves only for its message."""

    PREFIX = "ANGjdJ"

    def __init__(self):
        self.key = secrets.token_bytes(32)

    def _mac(self, message_id, blob):
        return hmac.new(self.key, message_id.encode() + b"|" + blob, hashlib.sha256).digest()[:16]

    def issue(self, message_id, part_id):
        blob = os.urandom(48) + part_id.encode()
        return self.PREFIX + b64url(blob + self._mac(message_id, blob), padded=False)

    def resolve(self, message_id, attachment_id):
        """partId named by attachment_id, or None if it is not for this message."""
        try:
            data = b64decode_any(attachment_id[len(self.PREFIX):])
        except (ValueError, binascii.Error):
            return None
        blob, mac = data[:-16], data[-16:]
        if (not attachment_id.startswith(self.PREFIX) or len(blob) < 48
                or not hmac.compare_digest(mac, self._mac(message_id, blob))):
            return None
        return blob[48:].decode()


# ------------------------------------------------------------------ double

class Double:
    """All server state, guarded by one lock, and the logic of every endpoint.
    Methods named gmail_* and admin_* are called by the HTTP handler; nothing
    here sleeps while holding the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attachment_ids = AttachmentIds()
        self.pubsub = gmail_pubsub.PubSub()         # watches, topics, pull subscriptions
        Mailbox.change_listener = self.pubsub.on_change
        self._reset_state()

    def _reset_state(self):
        self.config = json.loads(json.dumps(DEFAULT_CONFIG))
        self.mailboxes = {}          # email -> Mailbox
        self.by_refresh_token = {}   # refresh token -> Mailbox
        self.access_tokens = {}      # access token -> (Mailbox, monotonic expiry)
        self.faults = []
        self.fault_rng = random.Random(self.config["fault_seed"])
        self.fleets = {}             # fleet prefix -> [Mailbox], in address order
        self.token_requests = 0
        self.unauthenticated = 0
        self.service_accounts = double_jwt.ServiceAccounts()   # the JWT bearer grant's
        self.pubsub_tokens = {}      # Pub/Sub access token -> monotonic expiry
        self._reset_project()

    def _reset_project(self):
        self.project_window = deque()            # (monotonic time, units), every mailbox
        self.project_window_units = 0
        self.charge_log = deque(maxlen=CHARGE_LOG_MAX)   # (wall time, units, email)
        self.user_limited = 0                    # 429s of the per-user rate limit
        self.project_limited = 0                 # 429s of the per-project rate limit

    # --- OAuth

    def token_grant(self, form, basic_auth, token_url=None):
        """Answer a refresh-token or JWT bearer grant: (mailbox or None, HTTP status, body)."""
        def form_field(name):
            values = form.get(name)
            return values[-1] if values else None
        if form_field("grant_type") == double_jwt.JWT_BEARER:
            return self._jwt_grant(form_field("assertion"), token_url)
        client_id, client_secret = basic_auth or (form_field("client_id"),
                                                  form_field("client_secret"))
        grant_type, refresh_token = form_field("grant_type"), form_field("refresh_token")
        with self.lock:
            mb = self.by_refresh_token.get(refresh_token)
            if (client_id, client_secret) != (self.config["client_id"], self.config["client_secret"]):
                return mb, 401, oauth_error("invalid_client", "The OAuth client was not found.")
            if grant_type != "refresh_token":
                return mb, 400, oauth_error("unsupported_grant_type",
                                            f"Invalid grant_type: {grant_type or ''}")
            if not refresh_token:
                return mb, 400, oauth_error("invalid_request",
                                            "Missing required parameter: refresh_token")
            if mb is None or mb.revoked:
                return mb, 400, oauth_error("invalid_grant", "Token has been expired or revoked.")
            now = time.monotonic()
            for tok, (_, expiry) in list(self.access_tokens.items()):
                if expiry <= now:
                    del self.access_tokens[tok]
            token = "ya29.a0" + secrets.token_urlsafe(120)
            ttl = self.config["token_ttl"]
            self.access_tokens[token] = (mb, now + ttl)
            return mb, 200, {"access_token": token, "expires_in": int(ttl), "scope": SCOPE,
                             "token_type": "Bearer"}

    def mailbox_by_email(self, address):
        """The mailbox of an address, any case (callers hold the lock)."""
        mb = self.mailboxes.get(address)
        if mb is None:
            mb = next((m for m in self.mailboxes.values() if m.email.lower() == address.lower()), None)
        return mb

    def _jwt_grant(self, assertion, token_url):
        """A service account's token for the user it names (double_jwt checks it)."""
        def user_exists(address):
            with self.lock:
                return self.mailbox_by_email(address) is not None
        status, body, sub = self.service_accounts.grant(assertion, token_url, user_exists)
        if status == 200 and sub is None:     # the account's own token: Pub/Sub
            return None, 200, self._pubsub_token(body["account"], body["scope"])
        with self.lock:
            mb = self.mailbox_by_email(sub) if sub else None
            if status != 200 or mb is None:
                return mb, status, body
            now = time.monotonic()
            token = "ya29.c." + secrets.token_urlsafe(120)
            ttl = self.config["token_ttl"]
            self.access_tokens[token] = (mb, now + ttl)    # good for the sub's mailbox only
            return mb, 200, {"access_token": token, "expires_in": int(ttl), "scope": body["scope"],
                             "token_type": "Bearer"}

    def authenticate(self, authorization, user_id):
        with self.lock:
            token = None
            if authorization and authorization[:7].lower() == "bearer ":
                token = authorization[7:].strip()
            entry = self.access_tokens.get(token)
            if entry is None or entry[1] <= time.monotonic():
                self.unauthenticated += 1
                raise unauthenticated()
            mb = entry[0]
        if user_id != "me" and user_id.lower() != mb.email.lower():
            raise ApiError(403, f"Delegation denied for {mb.email}", "forbidden")
        return mb

    # --- admission: concurrency, quota, faults

    def admit(self, mb, endpoint, target_id):
        """Count the request and return the fault rule that fires for it, if
        any.  Always raises the in-flight count; the caller must release()."""
        with self.lock:
            mb.in_flight += 1
            stats = mb.stats
            stats.peak_concurrency = max(stats.peak_concurrency, mb.in_flight)
            stats.requests[endpoint] += 1
            limit = self.limit(mb, "max_concurrent_per_user")
            if limit and mb.in_flight > limit:
                raise ApiError(429, "Too many concurrent requests for user", "rateLimitExceeded")
            cost = self.config["costs"].get(endpoint, 0)
            self._charge_quota(mb, cost)
            if cost:
                self.charge_log.append((time.time(), cost, mb.email))
            stats.units += cost
            stats.units_by_endpoint[endpoint] += cost
            return self._pick_fault(endpoint, target_id, mb.email)

    def limit(self, mb, key):
        """A mailbox's override of a config value, else the global one."""
        value = mb.limits.get(key) if mb is not None else None
        return self.config[key] if value is None else value

    def release(self, mb):
        with self.lock:
            mb.in_flight -= 1

    @staticmethod
    def _window_units(window, units, now):
        """Drop charges older than 60 s from a (time, units) deque; the units left."""
        while window and window[0][0] <= now - 60:
            units -= window.popleft()[1]
        return units

    @staticmethod
    def _retry_at(window, in_window, cost, limit, now):
        """The earliest moment enough units will have left the window."""
        excess, freed = in_window + cost - limit, 0
        for t, units in window:
            freed += units
            if freed >= excess:
                return t + 60
        return now + 60

    def _charge_quota(self, mb, cost):
        """Book a request in the user's and the project's sliding minute, or
        raise the 429 of the first limit it would exceed (booking nothing).
        The project window counts every charged request, enforced or not, so
        the stats can say what the last minute cost."""
        if not cost:
            return
        now = time.monotonic()
        limit = self.limit(mb, "quota_units_per_minute")
        project_limit = self.config["project_quota_units_per_minute"]
        mb.quota_window_units = self._window_units(mb.quota_window, mb.quota_window_units, now)
        self.project_window_units = self._window_units(self.project_window,
                                                       self.project_window_units, now)
        if limit and mb.quota_window_units + cost > limit:
            self.user_limited += 1
            retry_at = self._retry_at(mb.quota_window, mb.quota_window_units, cost, limit, now)
            retry_wall = time.time() + (retry_at - now)
            raise ApiError(429, f"User-rate limit exceeded.  Retry after {iso_utc(retry_wall)}",
                           "rateLimitExceeded", "usageLimits")
        if project_limit and self.project_window_units + cost > project_limit:
            # Gmail names the quota and the project; no retry time is given.
            self.project_limited += 1
            raise ApiError(429, PROJECT_LIMIT_MESSAGE.format(PROJECT_NUMBER),
                           "rateLimitExceeded", "usageLimits")
        if limit:
            mb.quota_window.append((now, cost))
            mb.quota_window_units += cost
        self.project_window.append((now, cost))
        self.project_window_units += cost

    def _pick_fault(self, endpoint, target_id, email=None):
        """First rule that fires for this request (callers hold the lock)."""
        for rule in self.faults:
            if not rule.matches(endpoint, target_id, email):
                continue
            rule.seen += 1
            if rule.seen <= rule.after or rule.count == 0:
                continue
            if rule.probability is not None and self.fault_rng.random() >= rule.probability:
                continue
            if rule.count > 0:
                rule.count -= 1
            rule.fired += 1
            return rule
        return None

    def token_fault(self, refresh_token=None, subject=None):
        """(fault rule or None, the mailbox the refresh token or JWT subject names or None)."""
        with self.lock:
            self.token_requests += 1            # every call, a faulted one too
            mb = self.by_refresh_token.get(refresh_token)
            if mb is None and isinstance(subject, str):
                mb = self.mailbox_by_email(subject)
            if mb is not None:
                mb.stats.requests["token"] += 1
            return self._pick_fault("token", None, mb.email if mb else None), mb

    def count_sent(self, mb, status, nbytes):
        with self.lock:
            if mb is not None:
                mb.stats.bytes_sent += nbytes
                if status >= 400:
                    mb.stats.errors_sent[str(status)] += 1

    # --- Gmail endpoints

    def gmail_profile(self, mb, query):
        with self.lock:
            return {"emailAddress": mb.email, "messagesTotal": len(mb.messages),
                    "threadsTotal": len(mb.threads), "historyId": str(mb.history_id)}

    def gmail_labels(self, mb, query):
        with self.lock:
            used = {lb for m in mb.messages.values() for lb in m.labels}
        labels = [{"id": lb, "name": lb, "type": "system"} for lb in gmail_mailgen.SYSTEM_LABELS]
        labels += [{"id": lid, "name": name, "type": "user", "messageListVisibility": "show",
                    "labelListVisibility": "labelShow"}
                   for lid, name in gmail_mailgen.USER_LABELS.items() if lid in used]
        return {"labels": labels}

    @staticmethod
    def _list_filter(query):
        """Predicate for messages.list / threads.list (see module docstring)."""
        after, before = parse_search(one(query, "q", ""))
        include_spam_trash = parse_bool(query, "includeSpamTrash")
        wanted = many(query, "labelIds")
        hidden = {"DRAFT"} if include_spam_trash else {"DRAFT", "SPAM", "TRASH"}
        hidden -= set(wanted)

        def matches(msg):
            labels = msg.labels
            if hidden.intersection(labels):
                return False
            if after is not None and msg.internal_date < after:
                return False
            if before is not None and msg.internal_date >= before:
                return False
            return all(lb in labels for lb in wanted)
        return matches

    @staticmethod
    def _page(items, key, query, kind):
        """Slice newest-first items after the page token; (page, next token)."""
        size = parse_max_results(query)
        token = one(query, "pageToken")
        if token:
            last = tuple(decode_page_token(token, kind))
            items = [it for it in items if key(it) < last]
        page = items[:size]
        more = len(items) > size
        return page, (encode_page_token(kind, *key(page[-1])) if more else None)

    def gmail_messages_list(self, mb, query):
        matches = self._list_filter(query)
        with self.lock:
            found = [m for m in mb.newest_first() if matches(m)]
            page, next_token = self._page(found, lambda m: (m.internal_date, m.id), query, "m")
            result = {}
            if page:
                result["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
            if next_token:
                result["nextPageToken"] = next_token
            result["resultSizeEstimate"] = len(found)
            return result

    def gmail_threads_list(self, mb, query):
        matches = self._list_filter(query)
        with self.lock:
            newest = []          # each thread's newest matching message, newest first
            seen = set()
            for m in mb.newest_first():
                if m.thread_id not in seen and matches(m):
                    seen.add(m.thread_id)
                    newest.append(m)
            page, next_token = self._page(newest, lambda m: (m.internal_date, m.id), query, "t")
            result = {}
            if page:
                result["threads"] = [{"id": m.thread_id, "snippet": m.snippet,
                                      "historyId": str(mb.thread_history[m.thread_id])}
                                     for m in page]
            if next_token:
                result["nextPageToken"] = next_token
            result["resultSizeEstimate"] = len(newest)
            return result

    @staticmethod
    def _format(query):
        fmt = one(query, "format", "full").lower()
        if fmt not in FORMATS:
            raise invalid(f"Invalid value at 'format' ({fmt})")
        return fmt

    def _message_resource(self, msg, labels, history_id, fmt, query):
        """messages.get shape; labels/history_id were read under the lock."""
        res = {"id": msg.id, "threadId": msg.thread_id}
        if labels:
            res["labelIds"] = labels
        res["snippet"] = msg.snippet
        if fmt == "full":
            res["payload"] = self._fresh_attachment_ids(msg.id, msg.payload()[0])
        elif fmt == "metadata":
            tree = msg.payload()[0]
            wanted = {h.lower() for h in many(query, "metadataHeaders")}
            headers = [h for h in tree["headers"] if not wanted or h["name"].lower() in wanted]
            res["payload"] = {"partId": "", "mimeType": tree["mimeType"], "filename": "",
                              "headers": headers, "body": {"size": 0}}
        res["sizeEstimate"] = len(msg.raw)
        if fmt == "raw":
            res["raw"] = b64url(msg.raw, padded_for(msg.id))
        res["historyId"] = str(history_id)
        res["internalDate"] = str(msg.internal_date)
        return res

    def _fresh_attachment_ids(self, message_id, node):
        copy = dict(node)
        if "attachmentId" in node["body"]:
            copy["body"] = {"attachmentId": self.attachment_ids.issue(message_id, node["partId"]),
                            "size": node["body"]["size"]}
        if "parts" in node:
            copy["parts"] = [self._fresh_attachment_ids(message_id, p) for p in node["parts"]]
        return copy

    def _snapshot(self, mb, message_id):
        with self.lock:
            msg = mb.messages.get(message_id)
            if msg is None:
                raise not_found()
            return msg, list(msg.labels), msg.history_id

    def gmail_message_get(self, mb, query, message_id):
        fmt = self._format(query)
        msg, labels, history_id = self._snapshot(mb, message_id)
        return self._message_resource(msg, labels, history_id, fmt, query)

    def cached_raw(self, mb, message_id, query):
        """gzip body of a plain messages.get?format=raw answer (no fields=),
        for a warm mailbox; None when the request is not that, or the
        message is gone (the normal path answers it)."""
        if (not mb.warm or one(query, "format", "full").lower() != "raw"
                or set(query) - {"format", "prettyPrint"}):
            return None
        pretty = one(query, "prettyPrint", "true").lower() != "false"
        with self.lock:
            msg = mb.messages.get(message_id)
            if msg is None:
                return None
            labels, history_id = list(msg.labels), msg.history_id
        key = (tuple(labels), history_id, pretty)
        entry = msg.gz_raw
        if entry is not None and entry[0] == key:
            return entry[1]
        text = json.dumps(self._message_resource(msg, labels, history_id, "raw", query),
                          ensure_ascii=False, indent=2 if pretty else None)
        body = gzip.compress(text.encode("utf-8"), compresslevel=5)
        msg.gz_raw = (key, body)
        return body

    def gmail_attachment_get(self, mb, query, message_id, attachment_id):
        msg, _, _ = self._snapshot(mb, message_id)
        part_id = self.attachment_ids.resolve(message_id, attachment_id)
        data = msg.payload()[1].get(part_id) if part_id is not None else None
        if data is None:
            raise invalid("Invalid attachment token")
        return {"size": len(data), "data": b64url(data, padded_for(msg.id))}

    def gmail_thread_get(self, mb, query, thread_id):
        fmt = self._format(query)
        if fmt == "raw":
            raise invalid("Invalid value at 'format' (raw is not supported for threads)")
        with self.lock:
            thread = mb.threads.get(thread_id)
            if not thread:
                raise not_found()
            snapshot = [(m, list(m.labels), m.history_id) for m in thread]
            history_id = mb.thread_history[thread_id]
        return {"id": thread_id, "historyId": str(history_id),
                "messages": [self._message_resource(m, labels, hid, fmt, query)
                             for m, labels, hid in snapshot]}

    def gmail_history_list(self, mb, query):
        start = one(query, "startHistoryId")
        if not start or not re.fullmatch(r"\d{1,20}", start):
            raise invalid("Missing/invalid parameter: startHistoryId")
        start = int(start)
        types = set()
        for t in many(query, "historyTypes"):
            if t not in HISTORY_TYPES:
                raise invalid(f"Invalid value for historyTypes: {t}")
            types.add(HISTORY_TYPES[t])
        label_id = one(query, "labelId")
        size = parse_max_results(query)
        after, empty_page_served = start, False
        if one(query, "pageToken"):
            after, empty_page_served = decode_page_token(one(query, "pageToken"), "h")
        with self.lock:
            if start == 0 or start < mb.history_floor:
                raise not_found()
            current = str(mb.history_id)
            records = [r for r in mb.history if r.id > after
                       and (not types or r.kind in types)
                       and (label_id is None or label_id in r.labels or label_id in r.changed)]
        if not records:
            return {"historyId": current}
        page, more = records[:size], len(records) > size
        if not more and self.config["empty_history_pages"] and not empty_page_served:
            # Real Gmail sometimes sends a page with a token and no records.
            return {"historyId": current, "nextPageToken": encode_page_token("h", after, True)}
        result = {"history": [self._history_json(r) for r in page], "historyId": current}
        if more:
            result["nextPageToken"] = encode_page_token("h", page[-1].id, empty_page_served)
        return result

    @staticmethod
    def _history_json(r):
        ref = {"id": r.message_id, "threadId": r.thread_id}
        full = dict(ref, labelIds=list(r.labels)) if r.labels else dict(ref)
        if r.kind == "messagesAdded":
            change = {"message": full}
        elif r.kind == "messagesDeleted":
            change = {"message": ref}
        else:
            change = {"message": full, "labelIds": list(r.changed)}
        return {"id": str(r.id), "messages": [ref], r.kind: [change]}

    # --- admin

    def _mailbox(self, email_address):
        mb = self.mailboxes.get(email_address)
        if mb is None:
            raise AdminError(404, f"no mailbox {email_address}")
        return mb

    def _message(self, mb, message_id):
        msg = mb.messages.get(message_id)
        if msg is None:
            raise AdminError(404, f"no message {message_id} in {mb.email}")
        return msg

    def admin_reset(self, body):
        with self.lock:
            self._reset_state()
        self.pubsub.reset()
        return {"ok": True}

    # --- push: users.watch / users.stop and the Pub/Sub admin (gmail_pubsub.py)

    def gmail_watch(self, mb, query, body=None):
        with self.lock:
            history_id = mb.history_id
        try:
            return self.pubsub.watch(mb.email, history_id, body)
        except gmail_pubsub.PubSubError as e:
            raise ApiError(e.code, str(e), {400: "invalidArgument", 403: "forbidden",
                                            404: "notFound"}.get(e.code))

    def gmail_stop(self, mb, query, body=None):
        self.pubsub.stop(mb.email)
        return None

    def _pubsub_token(self, account, scope):
        token = "ya29.p." + secrets.token_urlsafe(100)
        ttl = self.config["token_ttl"]
        with self.lock:
            self.pubsub_tokens[token] = (account, time.monotonic() + ttl)
        return {"access_token": token, "expires_in": int(ttl), "scope": scope, "token_type": "Bearer"}

    def authenticate_pubsub(self, authorization):
        """The service account a Pub/Sub token was issued to (None: the self-test's)."""
        token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
        with self.lock:
            account, expiry = self.pubsub_tokens.get(token, (None, 0))
            if expiry <= time.monotonic():
                self.unauthenticated += 1
                raise gmail_pubsub.PubSubError(
                    401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                         "token, login cookie or other valid authentication credential.")
            return account

    def _pubsub_admin(self, name, *args):
        try:
            return getattr(self.pubsub, name)(*args)
        except ValueError as e:
            raise AdminError(400, str(e))

    def admin_pubsub_topic(self, body):
        return self._pubsub_admin("admin_topic", body)

    def admin_pubsub_subscription(self, body):
        return self._pubsub_admin("admin_subscription", body)

    def admin_pubsub_faults(self, body):
        return self._pubsub_admin("admin_faults", body)

    def admin_pubsub_publish(self, body):
        return self._pubsub_admin("admin_publish", body)

    def admin_pubsub_clock(self, body):
        return self._pubsub_admin("admin_clock", body)

    def admin_pubsub_config(self, body):
        return self._pubsub_admin("admin_config", body)

    def admin_pubsub_token(self, body):
        """A Pub/Sub access token without the JWT grant, for the self-test."""
        return self._pubsub_token(None, "https://www.googleapis.com/auth/pubsub")

    def admin_pubsub_stats(self, body, query):
        return self._pubsub_admin("admin_stats", query)

    def admin_get_config(self, body):
        with self.lock:
            return json.loads(json.dumps(self.config))

    def admin_set_config(self, body):
        checks = {
            "client_id": lambda v: isinstance(v, str),
            "client_secret": lambda v: isinstance(v, str),
            "token_ttl": lambda v: _number(v) and v > 0,
            "latency_ms": lambda v: _number(v) and v >= 0,
            "quota_units_per_minute": lambda v: _integer(v) and v >= 0,
            "project_quota_units_per_minute": lambda v: _integer(v) and v >= 0,
            "quota_model": lambda v: v in QUOTA_MODELS,
            "max_concurrent_per_user": lambda v: _integer(v) and v >= 0,
            "costs": lambda v: (isinstance(v, dict) and set(v) <= set(DEFAULT_COSTS)
                                and all(_integer(c) and c >= 0 for c in v.values())),
            "empty_history_pages": lambda v: isinstance(v, bool),
            "fault_seed": _integer,
        }
        _require_object(body)
        for key, value in body.items():
            if key not in checks:
                raise AdminError(400, f"unknown config key {key!r}")
            if not checks[key](value):
                raise AdminError(400, f"bad value for {key}: {value!r}")
        with self.lock:
            if "quota_model" in body:                # the model's table, then "costs" over it
                self.config["quota_model"] = body["quota_model"]
                self.config["costs"] = dict(QUOTA_MODELS[body["quota_model"]])
            for key, value in body.items():
                if key == "costs":
                    self.config["costs"].update(value)
                elif key != "quota_model":
                    self.config[key] = value
            if "quota_units_per_minute" in body:     # start enforcement from a clean window
                for mb in self.mailboxes.values():
                    mb.quota_window.clear()
                    mb.quota_window_units = 0
            if "project_quota_units_per_minute" in body:
                self.project_window.clear()
                self.project_window_units = 0
            if "fault_seed" in body:
                self.fault_rng = random.Random(body["fault_seed"])
            return json.loads(json.dumps(self.config))

    def admin_get_faults(self, body, query=None):
        email = one(query or {}, "email")
        with self.lock:
            return [r.as_json() for r in self.faults
                    if email is None or (r.email or "").lower() == email.lower()]

    def admin_add_faults(self, body):
        rules = [FaultRule.from_json(s) for s in (body if isinstance(body, list) else [body])]
        with self.lock:
            self.faults.extend(rules)
            return [r.as_json() for r in self.faults]

    def admin_clear_faults(self, body, query=None):
        email = one(query or {}, "email")
        with self.lock:
            if email is None:
                self.faults = []
                self.fault_rng = random.Random(self.config["fault_seed"])
            else:
                self.faults = [r for r in self.faults if (r.email or "").lower() != email.lower()]
        return []

    def admin_mailbox_config(self, body, email_address):
        """Per-mailbox overrides; null removes one.  Returns the overrides."""
        checks = {"latency_ms": lambda v: _number(v) and v >= 0,
                  "quota_units_per_minute": lambda v: _integer(v) and v >= 0,
                  "max_concurrent_per_user": lambda v: _integer(v) and v >= 0}
        _require_object(body)
        for key, value in (body or {}).items():
            if key not in checks:
                raise AdminError(400, f"unknown mailbox config key {key!r}")
            if value is not None and not checks[key](value):
                raise AdminError(400, f"bad value for {key}: {value!r}")
        with self.lock:
            mb = self._mailbox(email_address)
            for key, value in (body or {}).items():
                if value is None:
                    mb.limits.pop(key, None)
                else:
                    mb.limits[key] = value
            if "quota_units_per_minute" in (body or {}):     # a clean window
                mb.quota_window.clear()
                mb.quota_window_units = 0
            return dict(mb.limits)

    def admin_list_mailboxes(self, body):
        with self.lock:
            return [mb.summary() for mb in self.mailboxes.values()]

    def admin_get_mailbox(self, body, email_address):
        with self.lock:
            return self._mailbox(email_address).summary()

    def admin_create_mailbox(self, body):
        _require_object(body)
        params = dict(MAILBOX_PARAMS)
        allowed = set(params) | {"email", "refresh_token", "now_ms", "content_email", "warm"}
        unknown = set(body) - allowed
        if unknown:
            raise AdminError(400, f"unknown mailbox parameters: {sorted(unknown)}")
        address = body.get("email")
        if not isinstance(address, str) or "@" not in address:
            raise AdminError(400, "email is required")
        refresh_token = body.get("refresh_token") or f"refresh-{address}"
        content_email = body.get("content_email") or address
        if not isinstance(content_email, str) or "@" not in content_email:
            raise AdminError(400, "content_email must be an e-mail address")
        params.update({k: v for k, v in body.items() if k in params})
        now_ms = body.get("now_ms") or int(time.time()) // 60 * 60_000
        with self.lock:
            self._refuse_taken([(address, refresh_token)])
        mb = self._generate_mailbox(address, refresh_token, params, content_email, now_ms)
        if body.get("warm"):
            mb.warm = True
            query = {"format": ["raw"]}

            def warm(m):
                self.cached_raw(mb, m.id, query)
                if body["warm"] != "raw":
                    m.payload()
            with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                list(pool.map(warm, list(mb.messages.values())))
        with self.lock:
            self._refuse_taken([(address, refresh_token)])
            self.mailboxes[address] = mb
            self.by_refresh_token[refresh_token] = mb
            return {"email": address, "messages": len(mb.messages), "threads": len(mb.threads),
                    "history_id": str(mb.history_id), "refresh_token": refresh_token,
                    "now_ms": now_ms}

    @staticmethod
    def _generate_mailbox(address, refresh_token, params, content_email, now_ms):
        """A new Mailbox holding the generated mail; not yet registered."""
        generated = []
        if params["messages"] or params["threads"]:
            try:
                generated = gmail_mailgen.generate_mailbox(content_email, now_ms=now_ms, **params)
            except (ValueError, TypeError) as e:
                raise AdminError(400, str(e))
        mb = Mailbox(address, refresh_token, params["seed"], content_email)
        for g in generated:        # oldest first, one messagesAdded record each
            mb.add(Message(g.id, g.thread_id, g.internal_date, g.raw, g.snippet,
                           g.attachment_count, g.labels))
        mb.history_floor = mb.history[0].id - 1 if mb.history else mb.history_id
        return mb

    def _refuse_taken(self, logins):
        """409 unless every (address, refresh token) is new; callers hold the lock."""
        taken = [a for a, t in logins if a in self.mailboxes or t in self.by_refresh_token]
        if taken:
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise AdminError(409, f"mailbox {taken[0]} or its refresh token already exists{more}")

    def admin_list_messages(self, body, email_address):
        with self.lock:
            mb = self._mailbox(email_address)
            return [{"id": m.id, "threadId": m.thread_id, "labelIds": list(m.labels),
                     "internalDate": str(m.internal_date), "historyId": str(m.history_id),
                     "size": len(m.raw), "attachment_count": m.attachment_count}
                    for m in reversed(mb.newest_first())]

    def admin_get_raw(self, body, email_address, message_id):
        with self.lock:
            return self._message(self._mailbox(email_address), message_id).raw

    def admin_add_message(self, body, email_address):
        _require_object(body)
        unknown = set(body) - {"raw_b64", "thread_id", "labels", "internal_date_ms"}
        if unknown:
            raise AdminError(400, f"unknown keys: {sorted(unknown)}")
        labels = body.get("labels", ["INBOX", "UNREAD"])
        date_ms = body.get("internal_date_ms") or int(time.time() * 1000)
        raw = None
        if body.get("raw_b64"):
            try:
                raw = b64decode_any(body["raw_b64"])
            except (ValueError, binascii.Error):
                raise AdminError(400, "raw_b64 is not base64")
        with self.lock:
            mb = self._mailbox(email_address)
            thread_id = body.get("thread_id")
            if thread_id and thread_id not in mb.threads:
                raise AdminError(404, f"no thread {thread_id}")
            msg = self._add_message(mb, thread_id, labels, date_ms, raw)
            return {"id": msg.id, "threadId": msg.thread_id, "historyId": str(msg.history_id)}

    @staticmethod
    def _add_message(mb, thread_id, labels, date_ms, raw=None):
        """Add raw, or a composed message (a reply when thread_id names a
        thread); callers hold the lock."""
        if raw is None:
            parent = mb.threads[thread_id][-1].raw if thread_id else None
            raw, snippet = gmail_mailgen.compose_message(mb.content_email, mb.rng, date_ms=date_ms,
                                                         parent_raw=parent)
            attachment_count = 0
        else:
            snippet, attachment_count = gmail_mailgen.describe_raw(raw)
        mid = mb.new_message_id(date_ms)
        msg = Message(mid, thread_id or mid, date_ms, raw, snippet, attachment_count, labels)
        mb.add(msg)
        return msg

    def admin_relabel(self, body, email_address, message_id):
        _require_object(body)
        with self.lock:
            mb = self._mailbox(email_address)
            msg = self._message(mb, message_id)
            mb.relabel(msg, body.get("add", []), body.get("remove", []))
            return {"id": msg.id, "threadId": msg.thread_id, "labelIds": list(msg.labels),
                    "historyId": str(msg.history_id)}

    def admin_delete_message(self, body, email_address, message_id):
        with self.lock:
            mb = self._mailbox(email_address)
            mb.delete(self._message(mb, message_id))
            return {"id": message_id, "historyId": str(mb.history_id)}

    def admin_expire_history(self, body, email_address):
        with self.lock:
            mb = self._mailbox(email_address)
            floor = (body or {}).get("history_id", mb.history_id)
            mb.expire_history(int(floor))
            return {"history_floor": str(mb.history_floor), "history_id": str(mb.history_id)}

    def admin_revoke(self, body, email_address):
        with self.lock:
            mb = self._mailbox(email_address)
            mb.revoked = (body or {}).get("revoked", True)
            if mb.revoked:     # revoking a grant also kills its access tokens
                self.access_tokens = {t: e for t, e in self.access_tokens.items() if e[0] is not mb}
            return mb.summary()

    def admin_expire_tokens(self, body):
        with self.lock:
            self.access_tokens = {t: (mb, 0) for t, (mb, _) in self.access_tokens.items()}
            return {"expired": len(self.access_tokens)}

    def admin_add_service_account(self, body):
        try:
            return self.service_accounts.register(body)
        except ValueError as e:
            raise AdminError(400, str(e))

    def admin_list_service_accounts(self, body):
        return self.service_accounts.list()

    def admin_update_service_account(self, body, client_email):
        """Grant or revoke delegation ("scopes", "domain"), shift its clock, change its key."""
        try:
            return self.service_accounts.update(client_email, body or {})
        except LookupError as e:
            raise AdminError(404, str(e))
        except ValueError as e:
            raise AdminError(400, str(e))

    def admin_stats(self, body, query):
        wanted = one(query, "email")
        with self.lock:
            self.project_window_units = self._window_units(
                self.project_window, self.project_window_units, time.monotonic())
            return {"mailboxes": {mb.email: mb.stats.as_json(mb.in_flight)
                                  for mb in self.mailboxes.values()
                                  if wanted is None or mb.email == wanted},
                    "token_requests": self.token_requests,
                    "jwt_grants": self.service_accounts.grants,
                    "jwt_tokens_issued": self.service_accounts.issued,
                    "unauthenticated": self.unauthenticated,
                    "rate_limited": {"user": self.user_limited, "project": self.project_limited},
                    "units_last_minute": self.project_window_units}

    def admin_reset_stats(self, body):
        with self.lock:
            for mb in self.mailboxes.values():
                mb.stats = MailboxStats()
            self.token_requests = self.unauthenticated = 0
            self.user_limited = self.project_limited = 0
            self.charge_log.clear()
        return {"ok": True}

    # --- the fleet fixture (gmail_fleet.py reads the specs and sums the counters)

    def _fleet(self, prefix):
        if not prefix:
            raise AdminError(400, "prefix is required")
        members = self.fleets.get(prefix)
        if not members:
            raise AdminError(404, f"no fleet {prefix}")
        return members

    def admin_fleet_create(self, body):
        """Every member or none: 409 when any address or token is taken."""
        try:
            spec = gmail_fleet.FleetSpec(body, MAILBOX_PARAMS)
        except ValueError as e:
            raise AdminError(400, str(e))
        members = list(spec.members())
        with self.lock:
            self._refuse_taken([(a, t) for a, t, _ in members])
        now_ms = spec.now_ms or int(time.time()) // 60 * 60_000
        started = time.monotonic()
        made = [self._generate_mailbox(a, t, params, a, now_ms) for a, t, params in members]
        seconds = time.monotonic() - started
        with self.lock:
            self._refuse_taken([(a, t) for a, t, _ in members])
            for mb in made:
                self.mailboxes[mb.email] = mb
                self.by_refresh_token[mb.refresh_token] = mb
            self.fleets.setdefault(spec.prefix, []).extend(made)
        return {"prefix": spec.prefix, "created": len(made),
                "messages": sum(len(mb.messages) for mb in made), "now_ms": now_ms,
                "generation_seconds": round(seconds, 3),
                "mailboxes": [{"email": mb.email, "refresh_token": mb.refresh_token} for mb in made]}

    def admin_fleet_stats(self, body, query):
        prefix = one(query, "prefix")
        with self.lock:
            return gmail_fleet.stats(prefix, self._fleet(prefix))

    def admin_fleet_reset_stats(self, body):
        prefix = (body or {}).get("prefix") if isinstance(body, dict) else None
        with self.lock:
            members = self._fleet(prefix)
            for mb in members:
                mb.stats = MailboxStats()
        return {"mailboxes": len(members)}

    def admin_fleet_mail(self, body):
        """New mail for many members; the lock is taken member by member so
        Gmail requests go on meanwhile."""
        try:
            req = gmail_fleet.MailRequest(body)
        except ValueError as e:
            raise AdminError(400, str(e))
        with self.lock:
            targets = req.targets(list(self._fleet(req.prefix)))
        added = 0
        for mb in targets:
            with self.lock:
                for _ in range(req.count):
                    newest = mb.newest_first()
                    thread_id = newest[0].thread_id if req.reply and newest else None
                    self._add_message(mb, thread_id, list(req.labels), int(time.time() * 1000))
                    added += 1
        return {"mailboxes": len(targets), "added": added, "emails": [mb.email for mb in targets]}

    def admin_charges(self, body, query):
        """The charged requests since a wall time (epoch s), oldest first:
        [time, units, email], as the double booked them on arrival."""
        since = float(one(query, "since") or 0)
        with self.lock:
            return {"charges": [list(c) for c in self.charge_log if c[0] >= since]}


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _require_object(body):
    if body is not None and not isinstance(body, dict):
        raise AdminError(400, "expected a JSON object")


# ------------------------------------------------------------------ routing

_M = r"/admin/mailboxes/(?P<email_address>[^/]+)"
ADMIN_ROUTES = [(method, re.compile(pattern + r"/?"), handler) for method, pattern, handler in [
    ("POST", r"/admin/reset", "admin_reset"),
    ("GET", r"/admin/config", "admin_get_config"),
    ("POST", r"/admin/config", "admin_set_config"),
    ("GET", r"/admin/faults", "admin_get_faults"),
    ("POST", r"/admin/faults", "admin_add_faults"),
    ("DELETE", r"/admin/faults", "admin_clear_faults"),
    ("GET", r"/admin/mailboxes", "admin_list_mailboxes"),
    ("POST", r"/admin/mailboxes", "admin_create_mailbox"),
    ("POST", r"/admin/fleet", "admin_fleet_create"),
    ("GET", r"/admin/fleet/stats", "admin_fleet_stats"),
    ("POST", r"/admin/fleet/stats/reset", "admin_fleet_reset_stats"),
    ("POST", r"/admin/fleet/mail", "admin_fleet_mail"),
    ("GET", _M, "admin_get_mailbox"),
    ("GET", _M + r"/messages", "admin_list_messages"),
    ("POST", _M + r"/messages", "admin_add_message"),
    ("GET", _M + r"/messages/(?P<message_id>[^/]+)/raw", "admin_get_raw"),
    ("POST", _M + r"/messages/(?P<message_id>[^/]+)/labels", "admin_relabel"),
    ("DELETE", _M + r"/messages/(?P<message_id>[^/]+)", "admin_delete_message"),
    ("POST", _M + r"/expire_history", "admin_expire_history"),
    ("POST", _M + r"/revoke", "admin_revoke"),
    ("POST", _M + r"/config", "admin_mailbox_config"),
    ("POST", r"/admin/expire_tokens", "admin_expire_tokens"),
    ("GET", r"/admin/stats", "admin_stats"),
    ("POST", r"/admin/pubsub/topics", "admin_pubsub_topic"),
    ("POST", r"/admin/pubsub/subscriptions", "admin_pubsub_subscription"),
    ("POST", r"/admin/pubsub/faults", "admin_pubsub_faults"),
    ("POST", r"/admin/pubsub/publish", "admin_pubsub_publish"),
    ("POST", r"/admin/pubsub/clock", "admin_pubsub_clock"),
    ("POST", r"/admin/pubsub/config", "admin_pubsub_config"),
    ("GET", r"/admin/pubsub/stats", "admin_pubsub_stats"),
    ("POST", r"/admin/pubsub/token", "admin_pubsub_token"),
    ("POST", r"/admin/service_accounts", "admin_add_service_account"),
    ("GET", r"/admin/service_accounts", "admin_list_service_accounts"),
    ("POST", r"/admin/service_accounts/(?P<client_email>[^/]+)", "admin_update_service_account"),
    ("GET", r"/admin/charges", "admin_charges"),
    ("POST", r"/admin/stats/reset", "admin_reset_stats"),
]]

# Paths under /gmail/v1/users/{userId}/ -> (endpoint, handler, id used by fault filters).
GMAIL_ROUTES = [(re.compile(pattern), endpoint, handler) for pattern, endpoint, handler in [
    (r"profile", "profile", "gmail_profile"),
    (r"labels", "labels.list", "gmail_labels"),
    (r"messages", "messages.list", "gmail_messages_list"),
    (r"messages/(?P<message_id>[^/]+)", "messages.get", "gmail_message_get"),
    (r"messages/(?P<message_id>[^/]+)/attachments/(?P<attachment_id>[^/]+)",
     "attachments.get", "gmail_attachment_get"),
    (r"threads", "threads.list", "gmail_threads_list"),
    (r"threads/(?P<thread_id>[^/]+)", "threads.get", "gmail_thread_get"),
    (r"history", "history.list", "gmail_history_list"),
    (r"watch", "watch", "gmail_watch"),
    (r"stop", "stop", "gmail_stop"),
]]
POST_ENDPOINTS = {"watch", "stop"}


def route_gmail(path):
    """(user id, endpoint, handler name, path arguments) for a Gmail path."""
    rest = path[len(GMAIL_PREFIX):]
    user, _, rest = rest.partition("/")
    for pattern, endpoint, handler in GMAIL_ROUTES:
        m = pattern.fullmatch(rest)
        if m:
            args = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            return urllib.parse.unquote(user), endpoint, handler, args
    raise ApiError(404, f"Method not found: {path}", "notFound")


# --------------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive; every response has Content-Length
    timeout = 300                      # drop idle keep-alive connections
    # Headers and body go out in separate writes; without TCP_NODELAY the body
    # waits for the client's delayed ACK (~40 ms per keep-alive request).
    disable_nagle_algorithm = True

    # --- plumbing

    def version_string(self):
        return "ESF"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def handle(self):
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()
            super().handle()
        except (OSError, ClientGone):   # the peer went away; nothing left to do
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise AdminError(411, "chunked request bodies are not supported")
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method):
        self.double = self.server.double
        self.mailbox, self.latency_ms, self.headers_sent = None, 0, False
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            body = self._read_body()
            if url.path.startswith("/admin/"):
                self._admin(method, url.path, query, body)
            elif url.path == "/token":
                self._token(method, body)
            elif url.path.startswith(GMAIL_PREFIX):
                self._gmail(method, url.path, query, body)
            elif url.path.startswith("/v1/projects/"):
                self._pubsub(method, url.path, body)
            else:
                self._send_json(404, {"error": f"no such path {url.path}"})
        except ClientGone:
            raise
        except (OSError, ssl.SSLError):
            raise ClientGone()
        except AdminError as e:
            self._send_json(e.code, {"error": str(e)})
        except Exception:
            traceback.print_exc()
            if not self.headers_sent:
                self._send_json(500, ApiError(500, "Backend Error", "backendError").body)
            self.close_connection = True

    def _wait(self, seconds):
        """Sleep up to seconds; False as soon as the client disconnects.  A
        client that sends anything while waiting for its answer counts as gone."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                return False
        return True

    def _pause(self, ms):
        if ms > 0 and not self._wait(ms / 1000):
            raise ClientGone()

    def _reset_connection(self):
        """Close with SO_LINGER 0 so the peer gets a RST instead of a FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()
        raise ClientGone()

    def _send(self, status, body, content_type="application/json; charset=UTF-8",
              headers=(), fault=None, compress=False):
        """Write a response, applying latency, gzip and body-level faults."""
        self._pause(self.latency_ms)
        kind = fault.kind if fault else None
        if kind == "invalid_json":
            status = 200
            body = body[:len(body) // 2] + b'\x00<html><body>502 Bad Gateway'
        headers = list(headers)
        if compress or kind == "corrupt_gzip":
            body = gzip.compress(body, compresslevel=5)
            headers.append(("Content-Encoding", "gzip"))
        if kind == "corrupt_gzip":
            # a damaged gzip member of the right length (a proxy's bit rot):
            # one byte inside the deflate data flipped, so the data no longer
            # inflates to what the CRC-32 and length in its trailer say
            middle = 10 + (len(body) - 18) // 2
            body = body[:middle] + bytes([body[middle] ^ 0x55]) + body[middle + 1:]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.headers_sent = True
        self.double.count_sent(self.mailbox, status, len(body))
        if kind == "truncate":
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
        elif kind == "slow_body":
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self._pause(fault.ms)
            self.wfile.write(body[len(body) // 2:])
        else:
            self.wfile.write(body)

    def _send_json(self, status, obj, pretty=False, **kw):
        text = json.dumps(obj, ensure_ascii=False, indent=2 if pretty else None)
        self._send(status, text.encode("utf-8"), **kw)

    # --- admin

    def _admin(self, method, path, query, body):
        for route_method, pattern, name in ADMIN_ROUTES:
            m = pattern.fullmatch(path)
            if m and route_method == method:
                break
        else:
            raise AdminError(404, f"no admin route {method} {path}")
        args = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            raise AdminError(400, "body is not JSON")
        if name in ("admin_stats", "admin_get_faults", "admin_clear_faults", "admin_fleet_stats",
                    "admin_charges", "admin_pubsub_stats"):
            args["query"] = query
        result = getattr(self.double, name)(data, **args)
        if isinstance(result, bytes):
            self._send(200, result, "application/octet-stream")
        else:
            self._send_json(200, result)

    # --- OAuth

    def _token(self, method, body):
        d = self.double
        self.latency_ms = d.config["latency_ms"]
        if method != "POST":
            self._send_json(405, {"error": "invalid_request", "error_description": "POST only"})
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        assertion = (form.get("assertion") or [None])[-1]
        fault, mb = d.token_fault((form.get("refresh_token") or [None])[-1],
                                  double_jwt.unverified_claims(assertion).get("sub") if assertion else None)
        self.latency_ms = d.limit(mb, "latency_ms")
        if fault and self._early_fault(fault, oauth=True):
            return
        basic = None
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                basic = tuple(base64.b64decode(auth[6:]).decode().split(":", 1))
            except (ValueError, binascii.Error):
                basic = ("", "")
        # The assertion's aud must name this endpoint, as Google's must name its own.
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        token_url = f"{scheme}://{self.headers.get('Host', '')}/token"
        self.mailbox, status, answer = d.token_grant(form, basic, token_url)
        self._send_json(status, answer, pretty=True, fault=fault,
                        headers=[("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")])

    # --- Gmail

    def _wants_gzip(self):
        # Gmail's rule: both an Accept-Encoding with gzip and "gzip" in the User-Agent.
        return ("gzip" in self.headers.get("Accept-Encoding", "").lower()
                and "gzip" in self.headers.get("User-Agent", "").lower())

    def _early_fault(self, fault, oauth=False):
        """Faults that replace the answer.  True when the request is done."""
        kind = fault.kind
        if kind == "delay":
            self._pause(fault.ms)
            return False
        if kind == "hang":
            self._wait(HANG_SECONDS)
            raise ClientGone()
        if kind == "reset":
            self._reset_connection()
        if kind == "body":
            headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
            self._send(int(fault.status), fault.body_bytes(), headers=headers,
                       compress=not oauth and self._wants_gzip())
            return True
        if kind not in ("status", "gone"):
            return False          # applied while sending the body
        status = 404 if kind == "gone" else int(fault.status)
        headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        if oauth:
            body = {"error": fault.reason or ("invalid_request" if status < 500 else "server_error"),
                    "error_description": fault.message or "Injected fault"}
            self._send_json(status, body, pretty=True, headers=headers)
        elif kind == "gone":
            self._send_json(404, not_found().body, pretty=True, compress=self._wants_gzip())
        else:
            err = ApiError(status, fault.message or _default_message(status), fault.reason)
            self._send_json(status, err.body, pretty=True, headers=headers,
                            compress=self._wants_gzip())
        return True

    def _gmail(self, method, path, query, body=b""):
        d = self.double
        self.latency_ms = d.config["latency_ms"]
        compress = self._wants_gzip()
        try:
            user, endpoint, handler, args = route_gmail(path)
            if method != ("POST" if endpoint in POST_ENDPOINTS else "GET"):
                raise ApiError(405, f"Method {method} not supported by this test double",
                               "badRequest")
            if endpoint in POST_ENDPOINTS:
                try:
                    args["body"] = json.loads(body) if body.strip() else {}
                except ValueError:
                    raise ApiError(400, "Invalid JSON payload received.", "parseError")
            mb = d.authenticate(self.headers.get("Authorization"), user)
        except ApiError as e:
            self._send_json(e.code, e.body, pretty=True, headers=e.headers, compress=compress)
            return
        self.mailbox = mb
        self.latency_ms = d.limit(mb, "latency_ms")
        try:
            target = args.get("message_id") or args.get("thread_id")
            fault = d.admit(mb, endpoint, target)
            if fault and self._early_fault(fault):
                return
            if fault is None and compress and endpoint == "messages.get":
                cached = d.cached_raw(mb, args["message_id"], query)
                if cached is not None:
                    self._send(200, cached, headers=[("Content-Encoding", "gzip")])
                    return
            fields = one(query, "fields")
            result = getattr(d, handler)(mb, query, **args)
            if result is None:          # users.stop: 204, no body
                self._send(204, b"", headers=[])
                return
            if fields:
                result = apply_fields(result, parse_fields(fields))
            pretty = one(query, "prettyPrint", "true").lower() != "false"
            self._send_json(200, result, pretty=pretty, fault=fault, compress=compress)
        except ApiError as e:
            self._send_json(e.code, e.body, pretty=True, headers=e.headers, compress=compress)
        finally:
            d.release(mb)


    # --- Cloud Pub/Sub (gmail_pubsub.py)

    def _pubsub(self, method, path, body):
        d = self.double
        try:
            routed = d.pubsub.route(path)
            if routed is None or method != "POST":
                raise gmail_pubsub.PubSubError(404, f"Method not found: {method} {path}")
            account = d.authenticate_pubsub(self.headers.get("Authorization"))
            try:
                data = json.loads(body) if body.strip() else {}
            except ValueError:
                raise gmail_pubsub.PubSubError(400, "Invalid JSON payload received.")
            result = d.pubsub.call(routed[0], routed[1], data, self._client_gone, account)
            self._send_json(200, result)
        except gmail_pubsub.PubSubError as e:
            self._send_json(e.code, e.body, pretty=True)
        except gmail_pubsub.ClientLeft:
            raise ClientGone()

    def _client_gone(self):
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable)


def _default_message(status):
    return {400: "Bad Request", 401: "Invalid Credentials", 403: "User Rate Limit Exceeded",
            404: NOT_FOUND_MESSAGE, 429: "Resource has been exhausted (e.g. check quota).",
            500: "Backend Error", 503: "The service is currently unavailable."}.get(
                status, "Injected fault")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, double, verbose=False, tls_context=None):
        self.double, self.verbose = double, verbose
        super().__init__(address, Handler)
        if tls_context is not None:
            # Handshake in the connection's thread (Handler.handle), not in accept().
            self.socket = tls_context.wrap_socket(self.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = ap.parse_args(argv)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            ap.error("--tls-cert and --tls-key go together")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = Server((args.host, args.port), Double(), args.verbose, tls)
    port = server.server_address[1]
    if args.port_file:      # write-then-rename: readers never see a partial file
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    if args.verbose:
        sys.stderr.write(f"gmail_double listening on {'https' if tls else 'http'}://{args.host}:{port}\n")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
