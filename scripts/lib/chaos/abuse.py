#!/usr/bin/env python3
"""Abusive clients for `scripts/chaos abuse` (standard library only).

  flood URL SECONDS THREADS [--spoof]      GETs as fast as possible from one
                                           address (--spoof: a random
                                           X-Forwarded-For on each)
  one-user URL TOKEN SALE SECONDS THREADS  purchase attempts of one shopper over
                                           many connections, a new key each
  slowloris HOST PORT SOCKETS SECONDS      half-sent requests, one byte a second
  idle HOST PORT SOCKETS SECONDS           connections that never send anything

Each prints one JSON object with what it saw.
"""

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


def one_user(url, token, sale_id, seconds, threads):
    counter = iter(range(10**9))
    body = json.dumps({"sale_id": sale_id}).encode()

    def worker(deadline, record):
        parts, conn = connect(url)
        while time.monotonic() < deadline:
            key = f"abuse-{time.time_ns()}-{next(counter)}"
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key,
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
    print(json.dumps({"seconds": seconds, "answers": tally,
                      "not_throttled": sum(n for s, n in tally.items() if not s.startswith("429"))}))


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
        one_user(args[1], args[2], args[3], float(args[4]), int(args[5]))
    elif command == "slowloris":
        slowloris(args[1], int(args[2]), int(args[3]), float(args[4]))
    elif command == "idle":
        idle(args[1], int(args[2]), int(args[3]), float(args[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
