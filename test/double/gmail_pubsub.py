"""
gmail_pubsub: the push side of the Gmail API double (SPEC 7c).

Owns: Gmail's users.watch / users.stop state (which mailbox publishes to
which topic, until when, on the double's own clock), the Cloud Pub/Sub
topics and pull subscriptions of the same server (:pull, :acknowledge,
:modifyAckDeadline over REST, at-least-once: an unacknowledged delivery
comes back after its ack deadline), Gmail's notification rate cap, and a
fault switch per subscription that duplicates and reorders deliveries.
gmail_double.py routes the HTTP requests here and calls on_change() for
every history record of a mailbox.  Standard library only.

Where this double chooses a behaviour Google leaves open:
  * Notifications are capped at one per second per mailbox, as Gmail caps
    them; a change inside that second is not dropped but folded into one
    notification sent when the second is over, carrying the newest
    historyId (Gmail may also drop some: the listener must not rely on
    every one arriving, and polling stays the safety net).
  * A pull with nothing to deliver is held open up to pull_wait_ms (default
    2 s) and answers {} then; it answers as soon as something is published.
  * users.watch refuses a topic that does not exist (404) and one that does
    not grant publish to gmail-api-push@system.gserviceaccount.com (403),
    with Gmail's texts; topics and subscriptions are created through the
    admin API (POST /admin/pubsub/topics, /admin/pubsub/subscriptions); a
    subscription made with "subscribers" answers 403 to any other service
    account's token (a token from POST /admin/pubsub/token passes).
  * Faults per subscription (POST /admin/pubsub/faults): "duplicate" sends a
    delivery twice with that probability, "reorder" shuffles each pull,
    "fail" answers the next calls with those statuses, "ack_delay_ms" holds
    acknowledgements and drops those whose client left meanwhile (a
    listener killed between its commit and its ack).
  * The clock (POST /admin/pubsub/clock {"advance_ms"} or {"offset_ms"}) moves watch
    expirations only: a watch whose expiration the clock passed publishes
    nothing more until it is renewed.
"""

import base64
import json
import random
import re
import secrets
import threading
import time
from collections import deque

PUSH_ACCOUNT = "gmail-api-push@system.gserviceaccount.com"
WATCH_TTL_MS = 7 * 24 * 3600 * 1000
NAME = r"[A-Za-z0-9._~%+-]{1,255}"
TOPIC_RE = re.compile(rf"projects/({NAME})/topics/({NAME})")
SUBSCRIPTION_RE = re.compile(rf"projects/({NAME})/subscriptions/({NAME})")
PATH_RE = re.compile(rf"/v1/(projects/{NAME}/subscriptions/{NAME}):(pull|acknowledge|modifyAckDeadline)")


class PubSubError(Exception):
    """An error answered in Google's JSON error shape (Pub/Sub's v2 form)."""

    STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
              404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.body = {"error": {"code": code, "message": message,
                               "status": self.STATUS.get(code, "UNKNOWN")}}


class ClientLeft(Exception):
    """The client went away while its request was held: nothing to answer."""


class Subscription:
    def __init__(self, name, topic, ack_deadline_s, subscribers=None):
        self.name, self.topic, self.ack_deadline_s = name, topic, ack_deadline_s
        self.subscribers = subscribers   # service accounts with the Subscriber role; None: any
        self.backlog = deque()          # (message_id, data, publish_time) to deliver
        self.outstanding = {}           # ack id -> (message, deadline in monotonic s)
        self.duplicate = 0.0            # fault: probability a delivery is sent twice
        self.reorder = False            # fault: deliveries in random order
        self.fail = deque()             # fault: statuses the next pulls/acks answer
        self.ack_delay_ms = 0           # fault: acks held this long, dropped if the client left
        self.counts = {"published": 0, "delivered": 0, "redelivered": 0, "duplicated": 0,
                       "acked": 0, "late_acks": 0, "pulls": 0, "empty_pulls": 0,
                       "deadline_changes": 0, "failed": 0, "dropped_acks": 0}

    def stats(self):
        return dict(self.counts, outstanding=len(self.outstanding), backlog=len(self.backlog),
                    topic=self.topic, ack_deadline_seconds=self.ack_deadline_s,
                    duplicate=self.duplicate, reorder=self.reorder, ack_delay_ms=self.ack_delay_ms)


class PubSub:
    """Topics, subscriptions and watches, under one lock of their own (never
    the Gmail double's: a held pull waits on it)."""

    def __init__(self):
        self.cond = threading.Condition(threading.Lock())
        self.reset()

    def reset(self):
        with self.cond:
            self.topics = {}            # name -> {"publish_grant": bool}
            self.subs = {}              # name -> Subscription
            self.watches = {}           # email (lower) -> {"topic", "expiration_ms", "history_id"}
            self.clock_offset_ms = 0
            self.pull_wait_ms = 2000
            self.last_sent = {}         # email -> monotonic time of its last notification
            self.pending = {}           # email -> newest historyId waiting out the cap
            self.next_message_id = 1000
            self.counts = {"watch": 0, "stop": 0, "notifications": 0, "folded": 0,
                           "lapsed_changes": 0}
            self.cond.notify_all()

    def now_ms(self):
        return int(time.time() * 1000) + self.clock_offset_ms

    # --- Gmail: users.watch, users.stop, changes

    def watch(self, email, history_id, body):
        """users.watch for the mailbox; (status, answer)."""
        topic = body.get("topicName") if isinstance(body, dict) else None
        if not isinstance(topic, str) or not TOPIC_RE.fullmatch(topic):
            raise PubSubError(400, "Invalid topicName does not match projects/SOME-PROJECT/topics/*")
        with self.cond:
            t = self.topics.get(topic)
            if t is None:
                raise PubSubError(404, f"Resource not found (resource={TOPIC_RE.fullmatch(topic).group(2)}).")
            if not t["publish_grant"]:
                raise PubSubError(403, f"Error sending test message to Cloud PubSub {topic} : "
                                       "User not authorized to perform this action.")
            expiration = self.now_ms() + WATCH_TTL_MS
            self.watches[email.lower()] = {"topic": topic, "expiration_ms": expiration,
                                           "history_id": history_id}
            self.counts["watch"] += 1
        return {"historyId": str(history_id), "expiration": str(expiration)}

    def stop(self, email):
        with self.cond:
            self.watches.pop(email.lower(), None)
            self.pending.pop(email.lower(), None)
            self.counts["stop"] += 1

    def on_change(self, email, history_id):
        """A history record of the mailbox (the Gmail double's lock is held:
        this never blocks on anything but its own short lock)."""
        key = email.lower()
        with self.cond:
            w = self.watches.get(key)
            if w is None:
                return
            if self.now_ms() >= w["expiration_ms"]:
                self.counts["lapsed_changes"] += 1
                return
            now = time.monotonic()
            last = self.last_sent.get(key)
            if key in self.pending:
                self.pending[key] = max(self.pending[key], history_id)
                self.counts["folded"] += 1
                return
            if last is not None and now - last < 1.0:
                self.pending[key] = history_id
                timer = threading.Timer(1.0 - (now - last), self._flush, (key, email))
                timer.daemon = True
                timer.start()
                return
            self._publish_locked(email, w["topic"], history_id)

    def _flush(self, key, email):
        with self.cond:
            history_id = self.pending.pop(key, None)
            w = self.watches.get(key)
            if history_id is None or w is None or self.now_ms() >= w["expiration_ms"]:
                return
            self._publish_locked(email, w["topic"], history_id)

    def _publish_locked(self, email, topic, history_id):
        self.last_sent[email.lower()] = time.monotonic()
        self.counts["notifications"] += 1
        data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
        self._deliver_locked(topic, base64.b64encode(data).decode())

    def _deliver_locked(self, topic, data):
        self.next_message_id += 1
        message = (str(self.next_message_id), data,
                   time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        for sub in self.subs.values():
            if sub.topic == topic:
                sub.backlog.append(message)
                sub.counts["published"] += 1
        self.cond.notify_all()

    # --- Pub/Sub REST

    def route(self, path):
        """(subscription, verb) of a Pub/Sub path, or None when it is not one."""
        m = PATH_RE.fullmatch(path)
        return (m.group(1), m.group(2)) if m else None

    def _sub(self, name, account=None):
        sub = self.subs.get(name)
        if sub is None:
            raise PubSubError(404, f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
        if sub.subscribers is not None and account is not None and account.lower() not in sub.subscribers:
            raise PubSubError(403, "User not authorized to perform this action.")
        if sub.fail:
            status = sub.fail.popleft()
            sub.counts["failed"] += 1
            raise PubSubError(status, "The service was unable to fulfill your request. "
                                      "Please try again. [code=8a75]")
        return sub

    def _expire_locked(self, sub):
        now = time.monotonic()
        for ack_id, (msg, deadline) in list(sub.outstanding.items()):
            if deadline <= now:
                del sub.outstanding[ack_id]
                sub.backlog.appendleft(msg)
                sub.counts["redelivered"] += 1

    def _next_deadline_locked(self, sub):
        return min((d for _, d in sub.outstanding.values()), default=None)

    def call(self, name, verb, body, gone, account=None):
        """Answer :pull, :acknowledge or :modifyAckDeadline; gone() says
        whether the client went away (a held pull stops waiting)."""
        if not isinstance(body, dict):
            raise PubSubError(400, "Invalid JSON payload received.")
        if verb == "pull":
            return self._pull(name, body, gone, account)
        ack_ids = body.get("ackIds")
        if not isinstance(ack_ids, list) or not ack_ids or not all(isinstance(a, str) for a in ack_ids):
            raise PubSubError(400, "No ack ids specified.")
        with self.cond:
            sub = self._sub(name, account)
            if verb == "acknowledge" and sub.ack_delay_ms:
                # A client killed while this waits never acknowledged anything.
                until = time.monotonic() + sub.ack_delay_ms / 1000
                while (left := until - time.monotonic()) > 0 and not gone():
                    self.cond.wait(min(left, 0.05))
                if gone():
                    sub.counts["dropped_acks"] += len(ack_ids)
                    raise ClientLeft()
            if verb == "acknowledge":
                for a in ack_ids:
                    if sub.outstanding.pop(a, None) is not None:
                        sub.counts["acked"] += 1
                    else:
                        sub.counts["late_acks"] += 1   # expired or unknown: Pub/Sub says nothing
                return {}
            seconds = body.get("ackDeadlineSeconds")
            if not isinstance(seconds, int) or not 0 <= seconds <= 600:
                raise PubSubError(400, "Invalid ackDeadlineSeconds.")
            for a in ack_ids:
                entry = sub.outstanding.get(a)
                if entry is not None:
                    sub.outstanding[a] = (entry[0], time.monotonic() + seconds)
                    sub.counts["deadline_changes"] += 1
            self.cond.notify_all()
            return {}

    def _pull(self, name, body, gone, account=None):
        n = body.get("maxMessages")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
            raise PubSubError(400, "maxMessages must be between 1 and 1000.")
        held_until = time.monotonic() + self.pull_wait_ms / 1000
        with self.cond:
            sub = self._sub(name, account)
            sub.counts["pulls"] += 1
            while True:
                self._expire_locked(sub)
                if sub.backlog:
                    break
                left = held_until - time.monotonic()
                if left <= 0 or gone():
                    sub.counts["empty_pulls"] += 1
                    return {}
                nd = self._next_deadline_locked(sub)
                if nd is not None:
                    left = min(left, max(0.01, nd - time.monotonic()))
                self.cond.wait(min(left, 0.2))
            batch = []
            while sub.backlog and len(batch) < n:
                batch.append(sub.backlog.popleft())
            extra = []
            for msg in batch:
                if sub.duplicate and random.random() < sub.duplicate:
                    extra.append(msg)
                    sub.counts["duplicated"] += 1
            batch += extra
            if sub.reorder:
                random.shuffle(batch)
            out = []
            deadline = time.monotonic() + sub.ack_deadline_s
            for msg in batch:
                ack_id = "ack-" + secrets.token_urlsafe(48)
                sub.outstanding[ack_id] = (msg, deadline)
                sub.counts["delivered"] += 1
                out.append({"ackId": ack_id,
                            "message": {"data": msg[1], "messageId": msg[0], "message_id": msg[0],
                                        "publishTime": msg[2], "publish_time": msg[2]}})
            return {"receivedMessages": out}

    # --- admin

    def admin_topic(self, body):
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not TOPIC_RE.fullmatch(name):
            raise ValueError("name must be projects/P/topics/T")
        grant = body.get("publish_grant", True)
        with self.cond:
            self.topics[name] = {"publish_grant": bool(grant)}
        return {"name": name, "publish_grant": bool(grant), "grantee": PUSH_ACCOUNT}

    def admin_subscription(self, body):
        name = body.get("name") if isinstance(body, dict) else None
        topic = body.get("topic") if isinstance(body, dict) else None
        deadline = body.get("ack_deadline_seconds", 10) if isinstance(body, dict) else 10
        if not isinstance(name, str) or not SUBSCRIPTION_RE.fullmatch(name):
            raise ValueError("name must be projects/P/subscriptions/S")
        if topic not in self.topics:
            raise ValueError("topic must name an existing topic")
        if not isinstance(deadline, (int, float)) or not 0.1 <= deadline <= 600:
            raise ValueError("ack_deadline_seconds must be between 0.1 and 600")
        subscribers = body.get("subscribers")
        if subscribers is not None and (not isinstance(subscribers, list)
                                        or not all(isinstance(x, str) for x in subscribers)):
            raise ValueError("subscribers is a list of service account emails")
        with self.cond:
            self.subs[name] = Subscription(name, topic, deadline,
                                           None if subscribers is None else {x.lower() for x in subscribers})
        return {"name": name, "topic": topic, "ack_deadline_seconds": deadline, "subscribers": subscribers}

    def admin_faults(self, body):
        """{"subscription", "duplicate": p, "reorder": bool, "fail": [status, ...],
        "ack_delay_ms": ms}"""
        with self.cond:
            sub = self.subs.get(body.get("subscription") if isinstance(body, dict) else None)
            if sub is None:
                raise ValueError("subscription must name an existing subscription")
            if "duplicate" in body:
                p = body["duplicate"]
                if not isinstance(p, (int, float)) or not 0 <= p <= 1:
                    raise ValueError("duplicate is a probability")
                sub.duplicate = float(p)
            if "reorder" in body:
                sub.reorder = bool(body["reorder"])
            if "ack_delay_ms" in body:
                if not isinstance(body["ack_delay_ms"], int) or not 0 <= body["ack_delay_ms"] <= 60000:
                    raise ValueError("ack_delay_ms is 0..60000")
                sub.ack_delay_ms = body["ack_delay_ms"]
            if "fail" in body:
                if not isinstance(body["fail"], list) or not all(
                        isinstance(s, int) and 400 <= s <= 599 for s in body["fail"]):
                    raise ValueError("fail is a list of HTTP statuses")
                sub.fail = deque(body["fail"])
            return sub.stats()

    def admin_publish(self, body):
        """Publish raw data (base64 text, or "json" to encode) to a topic: bad notifications."""
        topic = body.get("topic") if isinstance(body, dict) else None
        with self.cond:
            if topic not in self.topics:
                raise ValueError("topic must name an existing topic")
            if "json" in body:
                data = base64.b64encode(json.dumps(body["json"]).encode()).decode()
            else:
                data = body.get("data")
                if not isinstance(data, str):
                    raise ValueError("data (text) or json is required")
            self._deliver_locked(topic, data)
        return {"ok": True}

    def admin_clock(self, body):
        """{"advance_ms": N} moves the clock on; {"offset_ms": N} sets it N ms from real time."""
        body = body if isinstance(body, dict) else {}
        advance, offset = body.get("advance_ms", 0), body.get("offset_ms")
        if not isinstance(advance, int) or (offset is not None and not isinstance(offset, int)):
            raise ValueError("advance_ms and offset_ms are integers")
        with self.cond:
            if offset is not None:
                self.clock_offset_ms = offset
            self.clock_offset_ms += advance
            return {"now_ms": self.now_ms(), "offset_ms": self.clock_offset_ms}

    def admin_config(self, body):
        with self.cond:
            if isinstance(body, dict) and "pull_wait_ms" in body:
                v = body["pull_wait_ms"]
                if not isinstance(v, int) or not 0 <= v <= 60000:
                    raise ValueError("pull_wait_ms is 0..60000")
                self.pull_wait_ms = v
            return {"pull_wait_ms": self.pull_wait_ms}

    def admin_stats(self, query):
        with self.cond:
            now = self.now_ms()
            watches = {e: dict(w, active=now < w["expiration_ms"]) for e, w in self.watches.items()}
            want = (query.get("email") or [None])[-1]
            if want:
                watches = {e: w for e, w in watches.items() if e == want.lower()}
            return {"now_ms": now, "counts": dict(self.counts),
                    "subscriptions": {n: s.stats() for n, s in self.subs.items()},
                    "watches": watches}
