#!/usr/bin/env python3
"""Holds N event streams open on one API node and reports what they cost it.

usage: event_streams.py --url http://127.0.0.1:18081 --sale SALE_ID --pid PID [-n 2000]

Opens N anonymous GET /api/flash-sale/events streams, waits until each has
received its first `sale` event, reads the node's resident memory
(/proc/PID/status VmRSS) before and after, holds them for --hold seconds
while reading every event, and prints one JSON line. Python stdlib only.
"""
import argparse
import asyncio
import json
import time
from urllib.parse import urlparse

from sse_client import events, open_events


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def follow(host, port, sale, opened, sale_events):
    """Reads one stream until cancelled, counting its `sale` events."""
    reader, _ = await open_events(host, port, sale)
    first = True
    async for name, _ in events(reader):
        if name == "sale":
            sale_events[0] += 1
            if first:
                first = False
                opened.release()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--sale", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=10)
    args = parser.parse_args()
    url = urlparse(args.url)
    before = rss_kib(args.pid)
    opened = asyncio.Semaphore(0)
    sale_events = [0]
    started = time.monotonic()
    tasks = [asyncio.create_task(follow(url.hostname, url.port, args.sale, opened, sale_events))
             for _ in range(args.n)]
    for _ in range(args.n):
        await opened.acquire()
    open_seconds = time.monotonic() - started
    await asyncio.sleep(args.hold)
    after = rss_kib(args.pid)
    for task in tasks:
        task.cancel()
    print(json.dumps({
        "streams": args.n, "open_seconds": round(open_seconds, 2),
        "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
        "kib_per_stream": round((after - before) / args.n, 1), "sale_events_received": sale_events[0],
    }))


asyncio.run(main())
