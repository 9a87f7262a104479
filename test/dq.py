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
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from double_client import call  # noqa: E402

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


def main(argv):
    cmd = argv[1]
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
        call(base(), "DELETE", "/admin/faults")
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
