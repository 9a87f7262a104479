"""
gmail_fleet: the fleet fixture of the Gmail API double -- many small
generated mailboxes from one spec, their counters in one answer, and new
mail for many of them in one call.

Owns: reading a fleet spec (which addresses and refresh tokens it names,
the generation parameters its mailboxes share, a distinct seed for each),
the fleet-wide statistics built from the mailboxes' own counters, and the
reading of a "new mail for the fleet" request.  Standard library only.

The mailboxes themselves are ordinary mailboxes of the double: gmail_double
generates, stores and serves them exactly as it does one made by
POST /admin/mailboxes, so every Gmail endpoint, fault rule, per-mailbox
config and admin call treats them alike.  This module imports nothing from
gmail_double (which runs as __main__: importing it would load a second copy
with its own classes); it reads the mailboxes it is given by duck typing and
signals bad input with ValueError, which the double answers as 400.

Naming: member n of fleet PREFIX is PREFIX-NNNN@DOMAIN, n zero-padded to
four digits (more when the fleet's last number needs them), numbered from
"first" (default 1); its refresh token is refresh-<address>, the double's
default.  Its seed is "<seed>/<n>": the content differs from member to
member, and two fleets with the same seed hold the same conversations under
different ids, as two mailboxes of one seed do.
"""

import re
from collections import Counter

MAX_COUNT = 100_000
PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
DOMAIN_RE = re.compile(r"(?=.{1,100}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+")

# Small by default: a fleet test wants many mailboxes, each cheap to generate,
# serve and sync; every message inside the last 7 days, so a 7-day sync
# stores them all.  Any generation parameter of POST /admin/mailboxes
# overrides these.
FLEET_DEFAULTS = {"messages": 5, "threads": 2, "attachments": 1, "days": 7, "window_days": 7,
                  "attachment_size_max": 4096}
SPEC_KEYS = {"count", "prefix", "domain", "first", "now_ms"}
# Keys of POST /admin/mailboxes that name one mailbox, not a fleet.
NOT_FOR_FLEETS = {"email", "refresh_token", "content_email", "warm"}

# Per-mailbox request counts in the statistics: enough to tell how often
# each member was synced (a sync asks for a token, the profile, then lists
# or reads history).
PER_MAILBOX = ("token", "profile", "messages.list", "history.list")

MAIL_KEYS = {"prefix", "count_per_mailbox", "every", "labels", "reply"}


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _prefix(body):
    prefix = body.get("prefix")
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise ValueError("prefix must be 1-40 characters of a-z 0-9 . _ -, starting with a letter "
                         "or digit")
    return prefix


class FleetSpec:
    """A validated POST /admin/fleet body.  mailbox_params: the generation
    parameters POST /admin/mailboxes accepts, with their defaults."""

    def __init__(self, body, mailbox_params):
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        refused = set(body) & NOT_FOR_FLEETS
        if refused:
            raise ValueError(f"not for a fleet (each member has its own): {sorted(refused)}")
        unknown = set(body) - SPEC_KEYS - set(mailbox_params)
        if unknown:
            raise ValueError(f"unknown fleet parameters: {sorted(unknown)}")
        self.count = body.get("count")
        if not _integer(self.count) or not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count must be an integer from 1 to {MAX_COUNT}")
        self.first = body.get("first", 1)
        if not _integer(self.first) or self.first < 0:
            raise ValueError("first must be an integer >= 0")
        self.prefix = _prefix(body)
        self.domain = body.get("domain", "fleet.test")
        if not isinstance(self.domain, str) or not DOMAIN_RE.fullmatch(self.domain):
            raise ValueError("domain must be a lower-case DNS name such as fleet.test")
        self.now_ms = body.get("now_ms")
        if self.now_ms is not None and (not _integer(self.now_ms) or self.now_ms <= 0):
            raise ValueError("now_ms must be a positive integer")
        self.params = dict(mailbox_params)
        self.params.update(FLEET_DEFAULTS)
        self.params.update({k: v for k, v in body.items() if k in mailbox_params})
        if not _integer(self.params["seed"]):
            raise ValueError("seed must be an integer")

    def members(self):
        """(address, refresh token, generation parameters) of every member, in order."""
        last = self.first + self.count - 1
        width = max(4, len(str(last)))
        for n in range(self.first, last + 1):
            address = f"{self.prefix}-{n:0{width}d}@{self.domain}"
            yield address, f"refresh-{address}", dict(self.params, seed=f"{self.params['seed']}/{n}")


def stats(prefix, members):
    """Fleet-wide totals of the members' counters, and per member the calls
    that tell how often it was synced, its history id and its message count.
    Callers hold the double's lock."""
    requests, units_by_endpoint, errors = Counter(), Counter(), Counter()
    units = bytes_sent = peak = in_flight = messages = 0
    per_mailbox = {}
    for mb in members:
        st = mb.stats
        requests.update(st.requests)
        units_by_endpoint.update(st.units_by_endpoint)
        errors.update(st.errors_sent)
        units += st.units
        bytes_sent += st.bytes_sent
        peak = max(peak, st.peak_concurrency)
        in_flight += mb.in_flight
        messages += len(mb.messages)
        row = {name: st.requests.get(name, 0) for name in PER_MAILBOX}
        row.update(units=st.units, messages=len(mb.messages), history_id=str(mb.history_id))
        per_mailbox[mb.email] = row
    return {"prefix": prefix, "mailboxes": len(per_mailbox), "messages": messages,
            "requests": dict(requests), "units": units,
            "units_by_endpoint": dict(units_by_endpoint), "errors_sent": dict(errors),
            "errors_4xx": sum(n for status, n in errors.items() if status.startswith("4")),
            "errors_5xx": sum(n for status, n in errors.items() if status.startswith("5")),
            "bytes_sent": bytes_sent, "peak_concurrency": peak, "in_flight": in_flight,
            "per_mailbox": per_mailbox}


class MailRequest:
    """A validated POST /admin/fleet/mail body: count_per_mailbox new
    messages (default 1, at most 100) for every every-th member (default
    each), starting with the first; labels default to INBOX and UNREAD;
    reply: true files them in the member's newest thread instead of new
    threads."""

    def __init__(self, body):
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        unknown = set(body) - MAIL_KEYS
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        self.prefix = _prefix(body)
        self.count = body.get("count_per_mailbox", 1)
        if not _integer(self.count) or not 1 <= self.count <= 100:
            raise ValueError("count_per_mailbox must be an integer from 1 to 100")
        self.every = body.get("every", 1)
        if not _integer(self.every) or self.every < 1:
            raise ValueError("every must be an integer >= 1")
        self.labels = body.get("labels", ["INBOX", "UNREAD"])
        if not isinstance(self.labels, list) or not all(isinstance(lb, str) and lb
                                                        for lb in self.labels):
            raise ValueError("labels must be a list of label ids")
        self.reply = body.get("reply", False)
        if not isinstance(self.reply, bool):
            raise ValueError("reply must be true or false")

    def targets(self, members):
        return members[::self.every]
