#!/usr/bin/env python3
"""Shoppers who watch their purchase live while the stampede runs (scripts/bench --watchers).

usage: watchers.py --url http://127.0.0.1:8080 --sale SALE_ID --tokens FILE -n W
                   --ready FILE --expect FILE --out FILE

The first W shoppers of the tokens file (one JWT per line) each hold one
authenticated GET /api/flash-sale/events stream through nginx, as the shop
page does. Once every stream has its first `sale` event the shoppers' ids are
written to --ready, one per line. On SIGUSR1 the number of outcomes to wait
for is read from --expect; when that many shoppers have a final `purchase`
event (or 30 s pass) one JSON document goes to --out: per shopper the final
status, reservation and arrival time, and how many `sale` events came.
Python stdlib only.
"""
import argparse
import asyncio
import base64
import json
import signal
import time
from itertools import islice
from urllib.parse import urlparse

from sse_client import events, open_events

SETTLE_DEADLINE_SECS = 30
FINAL_STATUSES = ("confirmed", "failed")


def shopper_id(token):
    """The JWT's subject: the shopper's id, as purchase_attempts.user_id."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


class Watcher:
    def __init__(self, token):
        self.token = token
        self.user_id = shopper_id(token)
        self.sale_events = 0
        self.outcome = None
        self.ended_early = False
        self.error = None

    def on_event(self, name, data, opened, settled):
        if name == "sale":
            self.sale_events += 1
            if self.sale_events == 1:
                opened.release()
        elif name == "purchase":
            purchase = json.loads(data)
            if purchase["status"] in FINAL_STATUSES and self.outcome is None:
                self.outcome = {"status": purchase["status"], "reservation_id": purchase["reservation_id"],
                                "at": time.time()}
                settled.release()

    async def follow(self, host, port, sale, opened, settled):
        try:
            reader, writer = await open_events(host, port, sale, self.token)
            async for name, data in events(reader):
                self.on_event(name, data, opened, settled)
            writer.close()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure is reported, not raised
            self.error = repr(error)
        self.ended_early = True
        if self.sale_events == 0:
            opened.release()  # so the opening phase ends and reports this stream


async def main():
    parser = argparse.ArgumentParser()
    for flag in ("--url", "--sale", "--tokens", "--ready", "--expect", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("-n", type=int, required=True)
    args = parser.parse_args()
    url = urlparse(args.url)
    with open(args.tokens) as tokens:
        watchers = [Watcher(line.strip()) for line in islice(tokens, args.n)]
    if len(watchers) < args.n:
        raise SystemExit(f"only {len(watchers)} tokens in {args.tokens}, {args.n} watchers asked for")

    opened, settled, asked_to_settle = asyncio.Semaphore(0), asyncio.Semaphore(0), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, asked_to_settle.set)
    started = time.monotonic()
    tasks = [asyncio.create_task(w.follow(url.hostname, url.port, args.sale, opened, settled))
             for w in watchers]
    for _ in watchers:
        await opened.acquire()
    open_seconds = time.monotonic() - started
    refused = [w.error for w in watchers if w.error]
    if refused:
        raise SystemExit(f"{len(refused)} of {len(watchers)} streams did not open, e.g. {refused[0]}")
    with open(args.ready, "w") as ready:
        ready.writelines(f"{w.user_id}\n" for w in watchers)

    await asked_to_settle.wait()
    with open(args.expect) as expect:
        expected = int(expect.read())
    deadline = time.monotonic() + SETTLE_DEADLINE_SECS
    arrived = 0
    while arrived < expected and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(settled.acquire(), deadline - time.monotonic())
            arrived += 1
        except asyncio.TimeoutError:
            break
    for task in tasks:
        task.cancel()
    held_seconds = time.monotonic() - started - open_seconds

    with open(args.out, "w") as out:
        json.dump({
            "streams": len(watchers),
            "open_seconds": round(open_seconds, 2),
            "held_seconds": round(held_seconds, 2),
            "streams_ended_early": sum(w.ended_early for w in watchers),
            "stream_errors": [w.error for w in watchers if w.error][:5],
            "sale_events": sum(w.sale_events for w in watchers),
            "outcomes": {w.user_id: w.outcome for w in watchers},
        }, out)


asyncio.run(main())
