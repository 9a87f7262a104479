#!/usr/bin/python3
"""
push_load.py: changes injected into the double's mailboxes at random times,
and the delay until each is visible in the database (test/scripts/push.sh
and the freshness benchmark, test/bench/freshness.sh).

    push_load.py --db DB --double URL --prefix P --changes N --seconds S
                 [--seed K] [--kill-listener-at S2 --subscription NAME
                  --listener-cmd CMD] [--wait S3] [--out FILE]

Each change is one of: a new message (visible when its row exists), a label
added to a stored message (visible when label_ids holds it), a deletion
(visible when deleted_at is set), in the proportions 2:1:1, in a random
mailbox of the fleet PREFIX-*.  A poller reads the database every 50 ms, so
a delay is measured from the injection to the first read that sees it.

--kill-listener-at: at that second, acknowledgements are held by the double
(ack_delay_ms), and once a batch is committed but not acknowledged the
listener's backend (application_name gi_push_listener) is terminated and a
new one started with --listener-cmd: the committed batch is never
acknowledged and comes back after its ack deadline.

Prints one JSON object: the delays (ms) and their percentiles, what was not
seen, and the kill's batch.  Standard library and python3-psycopg.
"""

import argparse
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg


def admin(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
    return json.loads(text) if text.strip() else None


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--double", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--wait", type=float, default=60, help="how long to wait for the last changes")
    ap.add_argument("--kill-listener-at", type=float)
    ap.add_argument("--subscription")
    ap.add_argument("--listener-cmd")
    ap.add_argument("--kinds", default="new,new,label,delete")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    conn = psycopg.connect(dbname=args.db, autocommit=True)
    mailboxes = conn.execute(
        "SELECT id, provider_email FROM gmail_ingest.mailboxes WHERE provider_email LIKE %s ORDER BY id",
        (args.prefix + "-%",)).fetchall()
    if not mailboxes:
        sys.exit(f"no mailboxes {args.prefix}-*")
    stored = {}
    for mid, msg in conn.execute(
            "SELECT mailbox_id, provider_message_id FROM gmail_ingest.mail_messages x "
            "JOIN gmail_ingest.mailboxes m ON m.id = x.mailbox_id "
            "WHERE m.provider_email LIKE %s AND x.deleted_at IS NULL", (args.prefix + "-%",)):
        stored.setdefault(mid, []).append(msg)

    kinds = args.kinds.split(",")
    plan = sorted(rng.uniform(0, args.seconds) for _ in range(args.changes))
    changes = []            # dicts: kind, mailbox, message, label, t (monotonic), seen
    lock = threading.Lock()
    done_injecting = threading.Event()
    label_no = [0]

    def inject_one(at):
        mid, email = mailboxes[rng.randrange(len(mailboxes))]
        kind = rng.choice(kinds)
        pool = stored.get(mid, [])
        if kind != "new" and not pool:
            kind = "new"
        c = {"kind": kind, "mailbox": mid, "at": round(at, 3)}
        t = time.monotonic()
        if kind == "new":
            r = admin(args.double, "POST", f"/admin/mailboxes/{email}/messages", {})
            c["message"] = r["id"]
        else:
            msg = pool.pop(rng.randrange(len(pool)))   # each stored message changes once
            c["message"] = msg
            if kind == "label":
                label_no[0] += 1
                c["label"] = f"Label_push_{args.seed}_{label_no[0]}"
                admin(args.double, "POST", f"/admin/mailboxes/{email}/messages/{msg}/labels",
                      {"add": [c["label"]]})
            else:
                admin(args.double, "DELETE", f"/admin/mailboxes/{email}/messages/{msg}")
        c["t"] = t
        with lock:
            changes.append(c)

    kill = {}

    def kill_listener():
        admin(args.double, "POST", "/admin/pubsub/faults",
              {"subscription": args.subscription, "ack_delay_ms": 4000})
        since = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT id FROM gmail_ingest.push_batches WHERE pulled_at >= %s AND acked_at IS NULL "
                "ORDER BY id LIMIT 1", (since,)).fetchone()
            if row:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'gi_push_listener'").fetchone()[0]
                kill.update(batch=row[0], terminated=killed)
                break
            time.sleep(0.02)
        time.sleep(0.3)
        admin(args.double, "POST", "/admin/pubsub/faults",
              {"subscription": args.subscription, "ack_delay_ms": 0})
        subprocess.Popen(args.listener_cmd, shell=True)

    def injector():
        start = time.monotonic()
        killer = None
        for at in plan:
            if (args.kill_listener_at is not None and killer is None
                    and at >= args.kill_listener_at):
                killer = threading.Thread(target=kill_listener)
                killer.start()
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            inject_one(at)
        if killer:
            killer.join()
        done_injecting.set()

    def poll():
        with lock:
            pending = [c for c in changes if "seen" not in c]
        if not pending:
            return 0
        ids = [c["message"] for c in pending]
        rows = conn.execute(
            "SELECT mailbox_id, provider_message_id, label_ids, deleted_at IS NOT NULL "
            "FROM gmail_ingest.mail_messages WHERE provider_message_id = ANY(%s)", (ids,)).fetchall()
        now = time.monotonic()
        found = {(r[0], r[1]): r for r in rows}
        left = 0
        for c in pending:
            r = found.get((c["mailbox"], c["message"]))
            ok = r is not None and (c["kind"] == "new" or
                                    (c["kind"] == "label" and c["label"] in (r[2] or [])) or
                                    (c["kind"] == "delete" and r[3]))
            if ok:
                c["seen"] = now
            else:
                left += 1
        return left

    t = threading.Thread(target=injector)
    t.start()
    end_wait = None
    while True:
        left = poll()
        if done_injecting.is_set():
            if end_wait is None:
                end_wait = time.monotonic() + args.wait
            if left == 0 or time.monotonic() > end_wait:
                break
        time.sleep(0.05)
    t.join()

    delays = [round((c["seen"] - c["t"]) * 1000) for c in changes if "seen" in c]
    unseen = [{k: v for k, v in c.items() if k != "t"} for c in changes if "seen" not in c]
    by_kind = {}
    for c in changes:
        by_kind[c["kind"]] = by_kind.get(c["kind"], 0) + 1
    out = {"changes": len(changes), "by_kind": by_kind, "seen": len(delays),
           "unseen": unseen[:10], "unseen_count": len(unseen),
           "p50_ms": percentile(delays, 50), "p95_ms": percentile(delays, 95),
           "p99_ms": percentile(delays, 99), "max_ms": max(delays) if delays else None,
           "new_messages": by_kind.get("new", 0), "kill": kill}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
