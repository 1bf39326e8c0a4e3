#!/usr/bin/env python3
"""A simulated Exchange CAS for benchmarks: HTTP on IP:PORT answering GET /<vdir>/healthcheck.htm
with 200 "200 OK<br/>cas". Counts accepted connections into COUNTFILE and requests into
COUNTFILE.req (what a prober costs the server).
Usage: backend.py IP PORT COUNTFILE"""
import asyncio, os, sys

ip, port, countfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
accepted = 0
requests = 0


def publish(path, n):
    """Writes n to path atomically, so a reader never sees an empty file."""
    with open(path + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(path + ".tmp", path)


async def handle(reader, writer):
    global accepted, requests
    accepted += 1
    publish(countfile, accepted)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            requests += 1
            publish(countfile + ".req", requests)
            body = b"200 OK<br/>cas.mail.example.test"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    writer.close()


async def main():
    server = await asyncio.start_server(handle, ip, port, reuse_address=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
