#!/usr/bin/env python3
"""The shoppers and the payment provider of `scripts/chaos hold-storm`
(standard library only).

  login BASE PREFIX COUNT THREADS     COUNT development logins, one token per line
  buy BASE TOKENS SALE THREADS        one purchase per token (its own key);
                                      prints the answers by status
  pay BASE SECRET ORDERS THREADS      pays orders as a provider would: ORDERS has
                                      one `order_id amount currency mode` per line,
                                      mode `pay` (one delivery), `dup` (the same
                                      event three times at once) or `forged` (a
                                      delivery signed with a wrong secret, then
                                      the genuine one); a delivery answered 503 is
                                      redelivered after its Retry-After, one with
                                      no answer after 1 s (20 deliveries at most);
                                      prints the answers by label, the events whose
                                      taking answer was lost, by the outcome
                                      their redelivery was told (answers_lost),
                                      and how many events were answered any
                                      other wrong way (misanswered)
  join BASE TOKENS SALE THREADS       each token joins the sale's waitlist; prints
                                      the answers by status
  buyers BASE TOKENS SALE SECONDS THREADS
                                      new shoppers trying to buy for SECONDS
                                      (each retries its one key until it gets a
                                      202 or the time is up); prints the 202s

Each prints one JSON object.
"""

import base64
import hashlib
import hmac
import http.client
import json
import sys
import threading
import time
import urllib.parse


# How many times the provider delivers one event that gets no answer or 503.
DELIVERIES = 20


def connect(base):
    parts = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def exchange(conn, method, path, body=None, headers=None):
    """One request on a kept-alive connection; returns (status, json or None, reply)."""
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    raw = reply.read()
    try:
        return reply.status, json.loads(raw), reply
    except ValueError:
        return reply.status, None, reply


def request(conn, method, path, body=None, headers=None):
    """One request on a kept-alive connection; returns (status, json or None)."""
    status, answer, _ = exchange(conn, method, path, body, headers)
    return status, answer


def in_threads(items, threads, work):
    """Runs work(conn, item) over items on THREADS threads with a connection each."""
    queue, lock = iter(items), threading.Lock()

    def worker():
        conn = connect(BASE)
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            try:
                work(conn, item)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = connect(BASE)
                work(conn, item)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def login(prefix, count, threads):
    tokens, lock = [None] * count, threading.Lock()

    def one(conn, index):
        _, body = request(conn, "POST", "/api/auth/login",
                          json.dumps({"email": f"{prefix}-{index}@load.local"}),
                          {"Content-Type": "application/json"})
        with lock:
            tokens[index] = body["token"]

    in_threads(range(count), threads, one)
    for token in tokens:
        print(token)


def read_lines(path):
    with open(path) as lines:
        return [line.strip() for line in lines if line.strip()]


def buy(tokens_file, sale_id, threads):
    answers, lock = {}, threading.Lock()
    body = json.dumps({"sale_id": sale_id})

    def one(conn, item):
        index, token = item
        status, _ = request(conn, "POST", "/api/purchase/attempt", body, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Idempotency-Key": f"hold-storm-{index}"})
        with lock:
            answers[str(status)] = answers.get(str(status), 0) + 1

    in_threads(list(enumerate(read_lines(tokens_file))), threads, one)
    print(json.dumps({"answers": answers}))


def join(tokens_file, sale_id, threads):
    answers, lock = {}, threading.Lock()

    def one(conn, token):
        status, answer = request(conn, "POST", f"/api/flash-sale/{sale_id}/waitlist", None, {
            "Authorization": f"Bearer {token}"})
        code = str(status) if status < 300 else f"{status} {(answer or {}).get('error', {}).get('code')}"
        with lock:
            answers[code] = answers.get(code, 0) + 1

    in_threads(read_lines(tokens_file), threads, one)
    print(json.dumps({"answers": answers}))


def signature(key, event_id, timestamp, body):
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def pay(secret, orders_file, threads):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    forged_key = hashlib.sha256(b"not the shop's secret").digest()
    outcomes, lock = {}, threading.Lock()
    # Events whose taking answer was lost, by the outcome their redelivery
    # was told (as a duplicate); events answered any other wrong way.
    answers_lost, misanswered = {}, [0]

    def tally(name):
        with lock:
            outcomes[name] = outcomes.get(name, 0) + 1

    def deliver(conn, event_id, body, signing_key):
        """Delivers one event as a provider does: what was answered 503 (the
        node's bound on PostgreSQL passed in the burst) is redelivered after
        the Retry-After it was given, and what got no answer at all (a
        dropped connection) after a second; each redelivery is counted, not
        hidden. Returns the last answer's status and label, and whether an
        earlier delivery's answer was lost."""
        lost = False
        for attempt in range(1, DELIVERIES + 1):
            timestamp = int(time.time())
            try:
                status, answer, reply = exchange(conn, "POST", "/api/payments/webhook", body, {
                    "Content-Type": "application/json", "webhook-id": event_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": signature(signing_key, event_id, timestamp, body)})
            except (OSError, http.client.HTTPException):
                conn.close()  # http.client connects again on the next request
                status, answer, reply = None, None, None
            if status not in (None, 503) or attempt == DELIVERIES:
                break
            lost = True
            tally("redelivered after no answer" if status is None else "redelivered after 503")
            time.sleep(int(reply.getheader("Retry-After", "1")) if reply else 1)
        if status == 200:
            label = ("duplicate " if answer["duplicate"] else "") + str(answer["outcome"])
        else:
            label = f"{status} {(answer or {}).get('error', {}).get('code')}"
        tally(label)
        return status, label, lost

    def judge(answers):
        """An event is answered right when exactly one genuine delivery took
        it and the others were told duplicate. The taking delivery's answer
        can be lost (the node passed its bound after PostgreSQL committed,
        or the connection dropped): then every delivery was told duplicate,
        and at least one was redelivered."""
        taking = [label for status, label, _ in answers
                  if status == 200 and not label.startswith("duplicate ")]
        told_duplicate = [label for status, label, _ in answers
                          if status == 200 and label.startswith("duplicate ")]
        with lock:
            if len(taking) == 1 and len(taking) + len(told_duplicate) == len(answers):
                return
            if len(told_duplicate) == len(answers) and any(lost for _, _, lost in answers):
                outcome = told_duplicate[0].removeprefix("duplicate ")
                answers_lost[outcome] = answers_lost.get(outcome, 0) + 1
                return
            misanswered[0] += 1

    def one(conn, line):
        order_id, amount, currency, mode = line.split()
        event_id = f"evt_{order_id}"
        body = json.dumps({"type": "payment.succeeded", "data": {
            "order_id": order_id, "amount": int(amount), "currency": currency}}).encode()
        if mode == "forged":
            deliver(conn, event_id, body, forged_key)
        answers = []
        if mode == "dup":
            extra = [threading.Thread(target=lambda: answers.append(deliver(connect(BASE), event_id, body, key)))
                     for _ in range(2)]
            for thread in extra:
                thread.start()
            answers.append(deliver(conn, event_id, body, key))
            for thread in extra:
                thread.join()
        else:
            answers.append(deliver(conn, event_id, body, key))
        judge(answers)

    started = time.monotonic()
    orders = read_lines(orders_file)
    in_threads(orders, threads, one)
    seconds = time.monotonic() - started
    print(json.dumps({"orders": len(orders), "outcomes": outcomes, "answers_lost": answers_lost,
                      "misanswered": misanswered[0], "seconds": round(seconds, 2),
                      "orders_per_sec": round(len(orders) / seconds, 1)}))


def buyers(tokens_file, sale_id, seconds, threads):
    deadline = time.monotonic() + seconds
    accepted, answers, lock = [0], {}, threading.Lock()
    body = json.dumps({"sale_id": sale_id})

    def one(conn, item):
        index, token = item
        while time.monotonic() < deadline:
            status, answer = request(conn, "POST", "/api/purchase/attempt", body, {
                "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                "Idempotency-Key": f"late-buyer-{index}"})
            code = str(status) if status == 202 else f"{status} {(answer or {}).get('error', {}).get('code')}"
            with lock:
                answers[code] = answers.get(code, 0) + 1
            if status == 202:
                with lock:
                    accepted[0] += 1
                return
            time.sleep(0.25)

    in_threads(list(enumerate(read_lines(tokens_file))), threads, one)
    print(json.dumps({"accepted": accepted[0], "answers": answers}))


def main(args):
    global BASE
    if len(args) < 2:
        sys.exit(__doc__)
    command, BASE = args[0], args[1]
    if command == "login":
        login(args[2], int(args[3]), int(args[4]))
    elif command == "buy":
        buy(args[2], args[3], int(args[4]))
    elif command == "pay":
        pay(args[2], args[3], int(args[4]))
    elif command == "join":
        join(args[2], args[3], int(args[4]))
    elif command == "buyers":
        buyers(args[2], args[3], float(args[4]), int(args[5]))
    else:
        sys.exit(__doc__)


BASE = ""

if __name__ == "__main__":
    main(sys.argv[1:])
