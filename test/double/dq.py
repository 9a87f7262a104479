#!/usr/bin/env python3
"""dq.py: one-line answers from the Gmail API double, for psql's backticks.

The regression tests compare what the extension stored with what the double
holds, instead of hard-coding counts:

  dq.py window-count EMAIL DAYS     messages Gmail lists in the last DAYS days
  dq.py window-attachments EMAIL DAYS  attachment parts of those messages
  dq.py requests EMAIL ENDPOINT     requests the double served (e.g. messages.get)
  dq.py units EMAIL                 quota units charged
  dq.py token-requests EMAIL        token endpoint calls for the mailbox
  dq.py errors-sent EMAIL STATUS    error answers of that HTTP status sent
  dq.py unauthenticated             401s sent for tokens the double no longer knows
  dq.py reset-stats                 zero every counter
  dq.py labels EMAIL ID ADD REMOVE  change labels (comma lists, '-' for none)
  dq.py add EMAIL [THREAD_ID]       add a message now; prints its id
  dq.py nth-id EMAIL DAYS N         id of the N-th newest listed message (0 = newest)
  dq.py delete EMAIL ID             delete a message for good
  dq.py expire-history EMAIL        make Gmail forget the mailbox's history so far
  dq.py faults JSON | clear-faults  set or clear fault rules
  dq.py faults-for EMAIL JSON       add rules that fire only for EMAIL's requests
  dq.py clear-faults EMAIL          drop only EMAIL's rules
  dq.py fired EMAIL                 times EMAIL's rules fired, one number per rule
  dq.py fault-report EMAIL          the stats line plus fired=N,N (per rule); then drops
                                    EMAIL's rules
  dq.py stats EMAIL                 one line: requests per endpoint, errors sent (e429=...),
                                    units and peak concurrency, as key=value pairs
  dq.py mailbox-config EMAIL JSON   per-mailbox latency_ms / quota_units_per_minute /
                                    max_concurrent_per_user (null drops one)
  dq.py apply EMAIL JSON            mailbox changes, in order: {"op": "add", "thread_id",
                                    "internal_date_ms", "labels"}, {"op": "labels", "id",
                                    "add", "remove"}, {"op": "delete", "id"}; prints new ids

Fleets (gmail_fleet.py), one admin call each whatever the fleet's size:
  dq.py fleet N PREFIX [JSON]       create PREFIX-0001@fleet.test ... (JSON: more spec
                                    fields: domain, first, messages, seed, ...); prints
                                    "EMAIL REFRESH_TOKEN" per mailbox
  dq.py fleet-stats PREFIX          one line: mailboxes, messages, requests per endpoint,
                                    errors sent (e429=..., e4xx, e5xx), units, peak
  dq.py fleet-calls PREFIX KEY      how many members made how many calls: "CALLS:MEMBERS"
                                    pairs, fewest calls first (KEY: token, profile,
                                    messages.list, history.list; also units, messages);
                                    "1:1000" = each member once
  dq.py fleet-history PREFIX        "EMAIL HISTORY_ID" per member
  dq.py fleet-mail PREFIX [PER_MAILBOX [EVERY]]  new mail for every EVERY-th member;
                                    prints how many messages were added
  dq.py fleet-reset-stats PREFIX    zero the members' counters
"""
import json
import os
import sys
import time
from collections import Counter
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from double_client import DoubleError, call  # noqa: E402

EXCLUDED = {"SPAM", "TRASH", "DRAFT"}


def base():
    return os.environ["DOUBLE_URL"]


def listed_in_window(email, days):
    cutoff = (time.time() - int(days) * 86400) * 1000
    msgs = call(base(), "GET", "/admin/mailboxes/%s/messages" % email)
    if isinstance(msgs, dict):
        msgs = msgs.get("messages", [])
    return [m for m in msgs
            if int(m["internalDate"]) >= cutoff and not EXCLUDED & set(m.get("labelIds") or [])]


def stats_line(email):
    st = call(base(), "GET", "/admin/stats?email=" + quote(email))["mailboxes"].get(email, {})
    pairs = dict(st.get("requests", {}))
    pairs.update({"e" + k: v for k, v in st.get("errors_sent", {}).items()})
    pairs["units"] = st.get("units", 0)
    pairs["peak"] = st.get("peak_concurrency", 0)
    return " ".join(f"{k}={v}" for k, v in sorted(pairs.items()))


def fleet_stats(prefix):
    return call(base(), "GET", "/admin/fleet/stats?prefix=" + quote(prefix))


def fleet_command(cmd, argv):
    """The fleet subcommands; False when cmd is not one."""
    if cmd == "fleet":
        spec = dict(json.loads(argv[4]) if len(argv) > 4 else {}, count=int(argv[2]), prefix=argv[3])
        for m in call(base(), "POST", "/admin/fleet", spec)["mailboxes"]:
            print(m["email"], m["refresh_token"])
    elif cmd == "fleet-stats":
        st = fleet_stats(argv[2])
        pairs = dict(st["requests"])
        pairs.update({"e" + k: v for k, v in st["errors_sent"].items()})
        pairs.update(e4xx=st["errors_4xx"], e5xx=st["errors_5xx"], units=st["units"],
                     peak=st["peak_concurrency"], mailboxes=st["mailboxes"], messages=st["messages"])
        print(" ".join(f"{k}={v}" for k, v in sorted(pairs.items())))
    elif cmd == "fleet-calls":
        per = fleet_stats(argv[2])["per_mailbox"].values()
        if per and argv[3] not in next(iter(per)):
            sys.exit("fleet-calls: no per-mailbox count " + argv[3])
        counts = Counter(row[argv[3]] for row in per)
        print(" ".join(f"{n}:{counts[n]}" for n in sorted(counts)))
    elif cmd == "fleet-history":
        for email, row in fleet_stats(argv[2])["per_mailbox"].items():
            print(email, row["history_id"])
    elif cmd == "fleet-mail":
        body = {"prefix": argv[2], "count_per_mailbox": int(argv[3]) if len(argv) > 3 else 1,
                "every": int(argv[4]) if len(argv) > 4 else 1}
        print(call(base(), "POST", "/admin/fleet/mail", body)["added"])
    elif cmd == "fleet-reset-stats":
        call(base(), "POST", "/admin/fleet/stats/reset", {"prefix": argv[2]})
    else:
        return False
    return True


def main(argv):
    cmd = argv[1]
    try:
        if fleet_command(cmd, argv):
            return
    except DoubleError as e:        # one line for the shell, not a traceback
        sys.exit(f"dq.py {cmd}: the double answered {e}")
    if cmd == "window-count":
        print(len(listed_in_window(argv[2], argv[3])))
    elif cmd == "window-attachments":
        print(sum(int(m.get("attachment_count", 0)) for m in listed_in_window(argv[2], argv[3])))
    elif cmd == "nth-id":
        msgs = sorted(listed_in_window(argv[2], argv[3]), key=lambda m: -int(m["internalDate"]))
        print(msgs[int(argv[4])]["id"])
    elif cmd == "requests":
        st = call(base(), "GET", "/admin/stats?email=" + argv[2])
        print(st["mailboxes"].get(argv[2], {}).get("requests", {}).get(argv[3], 0))
    elif cmd == "token-requests":
        st = call(base(), "GET", "/admin/stats?email=" + argv[2])
        print(st["mailboxes"].get(argv[2], {}).get("requests", {}).get("token", 0))
    elif cmd == "unauthenticated":
        print(call(base(), "GET", "/admin/stats").get("unauthenticated", 0))
    elif cmd == "errors-sent":
        st = call(base(), "GET", "/admin/stats?email=" + argv[2])
        print(st["mailboxes"].get(argv[2], {}).get("errors_sent", {}).get(argv[3], 0))
    elif cmd == "units":
        st = call(base(), "GET", "/admin/stats?email=" + argv[2])
        print(st["mailboxes"].get(argv[2], {}).get("units", 0))
    elif cmd == "reset-stats":
        call(base(), "POST", "/admin/stats/reset", {})
    elif cmd == "labels":
        add = [] if argv[4] == "-" else argv[4].split(",")
        rem = [] if argv[5] == "-" else argv[5].split(",")
        call(base(), "POST", "/admin/mailboxes/%s/messages/%s/labels" % (argv[2], argv[3]),
             {"add": add, "remove": rem})
    elif cmd == "add":
        body = {"labels": ["INBOX", "UNREAD"]}
        if len(argv) > 3:
            body["thread_id"] = argv[3]
        print(call(base(), "POST", "/admin/mailboxes/%s/messages" % argv[2], body)["id"])
    elif cmd == "delete":
        call(base(), "DELETE", "/admin/mailboxes/%s/messages/%s" % (argv[2], argv[3]))
    elif cmd == "expire-history":
        call(base(), "POST", "/admin/mailboxes/%s/expire_history" % argv[2], {})
    elif cmd == "faults":
        call(base(), "POST", "/admin/faults", json.loads(argv[2]))
    elif cmd == "clear-faults":
        email = argv[2] if len(argv) > 2 else None
        call(base(), "DELETE", "/admin/faults" + ("?email=" + quote(email) if email else ""))
    elif cmd == "faults-for":
        rules = json.loads(argv[3])
        rules = rules if isinstance(rules, list) else [rules]
        call(base(), "POST", "/admin/faults", [dict(r, email=argv[2]) for r in rules])
    elif cmd == "fired":
        rules = call(base(), "GET", "/admin/faults?email=" + quote(argv[2]))
        print(" ".join(str(r.get("fired", 0)) for r in rules))
    elif cmd in ("stats", "fault-report"):
        line = stats_line(argv[2])
        if cmd == "fault-report":
            rules = call(base(), "GET", "/admin/faults?email=" + quote(argv[2]))
            call(base(), "DELETE", "/admin/faults?email=" + quote(argv[2]))
            line += " fired=" + ",".join(str(r.get("fired", 0)) for r in rules)
        print(line)
    elif cmd == "mailbox-config":
        print(json.dumps(call(base(), "POST", "/admin/mailboxes/%s/config" % argv[2],
                              json.loads(argv[3]))))
    elif cmd == "apply":
        out = []
        for op in json.loads(argv[3]):
            kind = op.pop("op")
            if kind == "add":
                out.append(call(base(), "POST", "/admin/mailboxes/%s/messages" % argv[2], op)["id"])
            elif kind == "labels":
                call(base(), "POST", "/admin/mailboxes/%s/messages/%s/labels" % (argv[2], op["id"]),
                     {"add": op.get("add", []), "remove": op.get("remove", [])})
            elif kind == "delete":
                call(base(), "DELETE", "/admin/mailboxes/%s/messages/%s" % (argv[2], op["id"]))
            else:
                sys.exit("unknown op " + kind)
        print(" ".join(out))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
