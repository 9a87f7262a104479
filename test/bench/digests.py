#!/usr/bin/env python3
"""
digests.py: the stored-rows invariant of issue 15.  A deterministic reference
mailbox (fixed seed, fixed "now", so the same bytes, ids and history ids on
every run) is synced once, and every stored table of that sync is reduced to
one digest: sha256 over its rows' text, the rows sorted, with what depends on
the run left out (surrogate ids, mailbox_id, created_at/updated_at, the
window's start in mail_threads.synced_since, the run's own sync.* ledger
events) and surrogate references replaced by the provider ids they stand for.
The digests are compared with test/bench/fixtures/short_digests.txt, made
with the code before the efficiency work: an optimisation must store exactly
the same rows.

Used by bench.py --short; standalone:
  python3 test/bench/digests.py [--write]   (PGHOST/PGPORT/PGUSER and
  DOUBLE_URL in the environment, e.g. inside a test/lib/env.sh cluster)
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "short_digests.txt")

# The reference mailbox: every kind of message the generator makes (header
# quirks, drafts, spam, trash, attachments up to 200 KB), dated before a
# fixed instant so its Date headers, internal dates and bytes never move.
REFERENCE = {"threads": 60, "messages": 300, "attachments": 60, "attachment_size_min": 1024,
             "attachment_size_max": 200 * 1024, "attachment_size_dist": "log", "seed": 15,
             "days": 30, "window_days": 7}
REFERENCE_CONTENT = "digest-reference@example.com"
REFERENCE_NOW_MS = 1767225600000        # 2026-01-01 00:00 UTC
SYNC_DAYS = 3650                        # a window reaching well past the mailbox's oldest mail

# One query per table: (name, SQL giving one text per row).  Columns are
# named, never "*", so a column added later (e.g. a mailbox_id key) leaves
# the digest as it was unless it changes what is stored.
TABLES = [
    ("mail_threads", """
SELECT ROW(t.provider_thread_id, t.snippet, t.history_id, t.message_count,
           t.first_message_at, t.last_message_at, t.synced_since IS NULL)::text
  FROM gmail_ingest.mail_threads t"""),
    ("mail_messages", """
SELECT ROW(m.provider_message_id, t.provider_thread_id, m.provider_thread_id, m.history_id,
           m.internal_date, m.label_ids, m.subject, m.from_address, m.to_addresses,
           m.cc_addresses, m.bcc_addresses, m.reply_to, m.from_email, m.to_emails, m.cc_emails,
           m.bcc_emails, m.reply_to_emails, m.addresses, m.sent_at, m.rfc822_message_id,
           m.in_reply_to, m."references", m.snippet, m.body_text, m.body_html, m.size_estimate,
           m.headers, m.raw_sha256, m.parse_error, m.deleted_at IS NULL)::text
  FROM gmail_ingest.mail_messages m
  JOIN gmail_ingest.mail_threads t ON t.mailbox_id = m.mailbox_id AND t.id = m.thread_id"""),
    ("mail_attachments", """
SELECT ROW(m.provider_message_id, a.part_id, a.filename, a.filename_derived, a.mime_type,
           a.size_bytes, a.content_id, a.is_inline, a.sha256,
           substring(a.storage_path FROM '^[^/]*/[^/]*/(.*)$'))::text
  FROM gmail_ingest.mail_attachments a
  JOIN gmail_ingest.mail_messages m ON m.mailbox_id = a.mailbox_id AND m.id = a.message_id"""),
    ("blobs", """
SELECT ROW(b.sha256, b.size_bytes, b.data IS NULL,
           pg_catalog.encode(pg_catalog.sha256(b.data), 'hex'))::text
  FROM gmail_ingest.blobs b"""),
    ("ledger", """
SELECT ROW(l.event, l.provider_id, l.detail,
           CASE WHEN l.event LIKE 'message.%' THEN m.provider_message_id
                WHEN l.event = 'thread.ingested' THEN t.provider_thread_id
                WHEN l.event = 'attachment.saved' THEN am.provider_message_id || '/' || a.part_id
           END)::text
  FROM gmail_ingest.ledger l
  LEFT JOIN gmail_ingest.mail_messages m
         ON l.event LIKE 'message.%' AND m.mailbox_id = l.mailbox_id AND m.id = l.entity_id
  LEFT JOIN gmail_ingest.mail_threads t
         ON l.event = 'thread.ingested' AND t.mailbox_id = l.mailbox_id AND t.id = l.entity_id
  LEFT JOIN gmail_ingest.mail_attachments a
         ON l.event = 'attachment.saved' AND a.mailbox_id = l.mailbox_id AND a.id = l.entity_id
  LEFT JOIN gmail_ingest.mail_messages am
         ON am.mailbox_id = a.mailbox_id AND am.id = a.message_id
 WHERE l.event NOT LIKE 'sync.%'"""),
]


def digest_sql():
    parts = []
    for name, rows in TABLES:
        parts.append(f"SELECT '{name}', count(*), pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to("
                     f"coalesce(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), ''), 'UTF8')), 'hex') "
                     f"FROM ({rows}) AS x(r)")
    return ("SET TimeZone = 'UTC';\nSET DateStyle = 'ISO, YMD';\nSET extra_float_digits = 1;\n"
            + "\nUNION ALL\n".join(parts) + ";\n")


def table_digests(db):
    """{table: (rows, sha256)} of database db (one mailbox in it)."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", " ", "-v", "ON_ERROR_STOP=1", "-d", db],
                       input=digest_sql(), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"digest query failed: {r.stderr.strip()[-2000:]}")
    out = {}
    for line in r.stdout.splitlines():
        name, count, sha = line.split()
        out[name] = (int(count), sha)
    return out


def read_fixture(path=FIXTURE):
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, count, sha = line.split()
                out[name] = (int(count), sha)
    return out


def write_fixture(digests, produced_by, path=FIXTURE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("# Stored-row digests of the reference mailbox (test/bench/digests.py), one line\n"
                "# per table: name, rows, sha256 of the sorted row texts.\n"
                f"# Produced by {produced_by}.\n")
        for name, _ in TABLES:
            count, sha = digests[name]
            f.write(f"{name} {count} {sha}\n")


def sync_reference(admin, psql, fresh_db, add_mailbox, drop_db, tag, settings=""):
    """Generate the reference mailbox under a unique login, sync it at
    latency 0 into a new database, settings (SET statements) first;
    (digests, run row: "status messages_inserted bytes_downloaded")."""
    email = f"digestref-{tag}@example.com"
    body = dict(REFERENCE, email=email, refresh_token="rt-" + email, content_email=REFERENCE_CONTENT,
                now_ms=REFERENCE_NOW_MS)
    admin("POST", "/admin/mailboxes", body)
    admin("POST", f"/admin/mailboxes/{email}/config",
          {"latency_ms": 0, "quota_units_per_minute": 0, "max_concurrent_per_user": 0})
    db = f"bench_digest_{tag}"
    fresh_db(db)
    try:
        mb = add_mailbox(db, email)
        run = psql(db, "SET client_min_messages = warning;\n" + settings +
                       "SELECT status || ' ' || messages_inserted || ' ' || bytes_downloaded "
                       f"FROM gmail_ingest.gmail_sync({mb}, {SYNC_DAYS}, true);")
        return table_digests(db), run
    finally:
        drop_db(db)


def main():
    import bench                                  # noqa: E402  (this directory)
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="(re)write the fixture from this code")
    ap.add_argument("--produced-by", default=None)
    args = ap.parse_args()
    tag = f"{os.getpid()}_{int(time.time())}"
    got, run = sync_reference(bench.admin, bench.psql, bench.fresh_db, bench.add_mailbox, bench.drop_db, tag)
    print(f"reference sync: {run}")
    for name, _ in TABLES:
        print(f"{name} {got[name][0]} {got[name][1]}")
    if args.write:
        rev = args.produced_by or subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()
        write_fixture(got, f"commit {rev}")
        print(f"wrote {FIXTURE}")
        return 0
    want = read_fixture()
    bad = [n for n in want if got.get(n) != want[n]]
    for n in bad:
        print(f"DIFFERS: {n}: fixture {want[n]}, now {got.get(n)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
