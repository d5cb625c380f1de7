"""Reading a flashsale event stream over a plain asyncio connection, for the
bench helpers (event_streams.py, watchers.py). Python stdlib only."""
import asyncio


async def open_events(host, port, sale, token=None):
    """Opens GET /api/flash-sale/events for `sale` (as the shopper `token`
    when given) and returns the connection once the node answered 200."""
    reader, writer = await asyncio.open_connection(host, port)
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET /api/flash-sale/events?sale_id={sale} HTTP/1.1\r\nHost: {host}\r\n"
                 f"{authorization}\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    if b" 200 " not in status_line:
        writer.close()
        raise RuntimeError(f"stream refused: {status_line!r}")
    while (await reader.readline()).strip():
        pass  # headers; the body is chunked (hyper and nginx both stream that way)
    return reader, writer


async def events(reader):
    """Each (name, data) event of the stream until it ends; comments
    (heartbeats) and `retry:` lines are skipped."""
    pending, name, data = b"", None, None
    async for chunk in _dechunked(reader):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r").decode()
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and name:
                yield name, data
                name, data = None, None


async def _dechunked(reader):
    """The body of a chunked HTTP/1.1 response, one chunk at a time."""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        chunk = await reader.readexactly(size)
        await reader.readexactly(2)
        yield chunk
