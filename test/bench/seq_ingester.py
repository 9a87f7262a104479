#!/usr/bin/env python3
"""
seq_ingester: the benchmark's baseline, a Gmail ingester written the way a
typical hand-written service is: one request at a time, threads.list, then
threads.get?format=full per thread and attachments.get per attachment part,
and one INSERT statement per row fed to a single psql process on stdin
(autocommit, ON CONFLICT DO NOTHING).  Python standard library + psql.
One keep-alive connection; no gzip unless --gzip (on loopback compression
would only add the double's CPU time to this side).

    seq_ingester.py --base URL --refresh-token RT --db DB --days 7 [--schema seqbench]

It stores threads, messages (envelope headers, text and HTML bodies, labels)
and attachments (bytes as bytea) of the messages Gmail lists in the window:
internalDate >= now - days, not DRAFT, SPAM or TRASH, i.e. what
gmail_ingest stores.  Prints one JSON line: wall seconds, requests, rows.
"""

import argparse
import base64
import gzip
import http.client
import json
import subprocess
import sys
import time
import urllib.parse

HIDDEN = {"DRAFT", "SPAM", "TRASH"}
SCHEMA_SQL = """
DROP SCHEMA IF EXISTS {s} CASCADE;
CREATE SCHEMA {s};
CREATE TABLE {s}.threads (id text PRIMARY KEY, snippet text, history_id bigint);
CREATE TABLE {s}.messages (id text PRIMARY KEY, thread_id text NOT NULL REFERENCES {s}.threads,
  internal_date timestamptz, labels text[], subject text, from_address text, to_addresses text,
  cc_addresses text, date_header text, message_id_header text, snippet text, size_estimate int,
  body_text text, body_html text);
CREATE TABLE {s}.attachments (message_id text NOT NULL REFERENCES {s}.messages, part_id text NOT NULL,
  filename text, mime_type text, size_bytes int, data bytea, PRIMARY KEY (message_id, part_id));
"""


def lit(value):
    """An SQL literal (standard_conforming_strings on)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "'\\x" + value.hex() + "'::bytea"
    if isinstance(value, (list, tuple)):
        return "ARRAY[" + ",".join(lit(v) for v in value) + "]::text[]" if value else "'{}'::text[]"
    return "'" + str(value).replace("\x00", "").replace("'", "''") + "'"


def b64(data):
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class Gmail:
    """One keep-alive connection, gzip on, one request at a time."""

    def __init__(self, base, refresh_token, use_gzip=False):
        self.use_gzip = use_gzip
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.requests = 0
        form = urllib.parse.urlencode({"client_id": "test-client-id",
                                       "client_secret": "test-client-secret",
                                       "refresh_token": refresh_token,
                                       "grant_type": "refresh_token"})
        self.token = self._call("POST", "/token", form,
                                {"Content-Type": "application/x-www-form-urlencoded"})["access_token"]

    def _call(self, method, path, body=None, headers=None):
        hdrs = ({"Accept-Encoding": "gzip", "User-Agent": "seq-ingester/1.0 (gzip)"} if self.use_gzip
                else {"User-Agent": "seq-ingester/1.0"})
        hdrs.update(headers or {})
        for attempt in range(5):
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt == 4:
                    raise
        self.requests += 1
        if resp.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:300]!r}")
        return json.loads(data)

    def get(self, path, **params):
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._call("GET", "/gmail/v1/users/me/" + path + ("?" + q if q else ""), None,
                          {"Authorization": "Bearer " + self.token})


def walk(part, out):
    """Bodies and attachment parts of a format=full payload."""
    mime = part.get("mimeType", "")
    body = part.get("body") or {}
    if part.get("filename") and body.get("attachmentId"):
        out["attachments"].append(part)
    elif mime == "text/plain" and out["text"] is None and "data" in body:
        out["text"] = decode(b64(body["data"]), part)
    elif mime == "text/html" and out["html"] is None and "data" in body:
        out["html"] = decode(b64(body["data"]), part)
    for p in part.get("parts") or []:
        walk(p, out)


def decode(data, part):
    charset = "utf-8"
    for h in part.get("headers") or []:
        if h["name"].lower() == "content-type" and "charset=" in h["value"].lower():
            charset = h["value"].lower().split("charset=")[1].split(";")[0].strip(' "')
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--refresh-token", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--schema", default="seqbench")
    ap.add_argument("--page-size", type=int, default=500)
    ap.add_argument("--gzip", action="store_true",
                    help="ask for gzip (off by default: on loopback it only costs the double's CPU)")
    args = ap.parse_args()
    s = args.schema

    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", args.db, "-c",
                    SCHEMA_SQL.format(s=s)], check=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    psql = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", args.db],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    out = psql.stdin

    def execute(sql):
        out.write(sql.encode("utf-8", "replace") + b";\n")

    gmail = Gmail(args.base, args.refresh_token, args.gzip)
    after = int(time.time() - args.days * 86400)
    cutoff_ms = after * 1000
    rows = {"threads": 0, "messages": 0, "attachments": 0}
    page = None
    thread_ids = []
    while True:
        ans = gmail.get("threads", q=f"after:{after}", maxResults=args.page_size, pageToken=page)
        thread_ids += [t["id"] for t in ans.get("threads", [])]
        page = ans.get("nextPageToken")
        if not page:
            break
    for tid in thread_ids:
        th = gmail.get(f"threads/{tid}", format="full")
        msgs = [m for m in th.get("messages", [])
                if int(m["internalDate"]) >= cutoff_ms and not HIDDEN & set(m.get("labelIds", []))]
        if not msgs:
            continue
        execute(f"INSERT INTO {s}.threads VALUES ({lit(tid)}, {lit(msgs[-1].get('snippet'))}, "
                f"{lit(int(th['historyId']))}) ON CONFLICT DO NOTHING")
        rows["threads"] += 1
        for m in msgs:
            payload = m.get("payload") or {}
            hdr = {}
            for h in payload.get("headers") or []:
                hdr.setdefault(h["name"].lower(), h["value"])
            found = {"text": None, "html": None, "attachments": []}
            walk(payload, found)
            execute(f"INSERT INTO {s}.messages VALUES ({lit(m['id'])}, {lit(tid)}, "
                    f"to_timestamp({int(m['internalDate'])} / 1000.0), {lit(m.get('labelIds', []))}, "
                    f"{lit(hdr.get('subject'))}, {lit(hdr.get('from'))}, {lit(hdr.get('to'))}, "
                    f"{lit(hdr.get('cc'))}, {lit(hdr.get('date'))}, {lit(hdr.get('message-id'))}, "
                    f"{lit(m.get('snippet'))}, {lit(m.get('sizeEstimate'))}, "
                    f"{lit(found['text'])}, {lit(found['html'])}) "
                    f"ON CONFLICT DO NOTHING")
            rows["messages"] += 1
            for part in found["attachments"]:
                att = gmail.get(f"messages/{m['id']}/attachments/{part['body']['attachmentId']}")
                data = b64(att["data"])
                execute(f"INSERT INTO {s}.attachments VALUES ({lit(m['id'])}, {lit(part['partId'])}, "
                        f"{lit(part['filename'])}, {lit(part['mimeType'])}, {len(data)}, {lit(data)}) "
                        f"ON CONFLICT DO NOTHING")
                rows["attachments"] += 1
    out.close()
    rc = psql.wait()
    wall = time.monotonic() - started
    if rc != 0:
        print(f"seq_ingester: psql exited with {rc}", file=sys.stderr)
        return 1
    print(json.dumps({"wall_s": round(wall, 3), "requests": gmail.requests, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
