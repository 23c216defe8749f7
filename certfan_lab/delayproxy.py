"""A TCP proxy that delays each direction by a fixed time: latency without netem.

The lab redirects a node's ports (iptables ``nat OUTPUT ... REDIRECT``) to this
proxy, which finds the original destination with SO_ORIGINAL_DST and dials it
with SO_MARK set, a mark the redirect rule skips, so the proxy's own
connections are not redirected back to it. Every chunk read on one side is
written to the other `delay` after it arrived, in order; the dial to the node
waits `delay` too (the SYN's trip).

Run as a child process by path: ``python -I -S delayproxy.py [--tag T] --delay-ms 100
--mark 0x4346``; it prints the port it listens on (127.0.0.1) as its first
line, and exits on SIGTERM or when its parent goes away. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    (port,) = struct.unpack("!H", raw[2:4])
    return socket.inet_ntoa(raw[4:8]), port


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(receive(), send())


async def handle(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, delay: float, mark: int
) -> None:
    upstream_w = None
    try:
        dest = original_destination(client_w.get_extra_info("socket"))
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        up.setblocking(False)
        await asyncio.sleep(delay)
        try:
            await asyncio.get_running_loop().sock_connect(up, dest)
        except OSError:
            up.close()
            raise
        upstream_r, upstream_w = await asyncio.open_connection(sock=up)
        tasks = [
            asyncio.create_task(pump(client_r, upstream_w, delay)),
            asyncio.create_task(pump(upstream_r, client_w, delay)),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    except OSError:
        pass  # either side went away: close both
    finally:
        for w in (client_w, upstream_w):
            if w is not None:
                w.close()


async def serve(delay: float, mark: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    server = await asyncio.start_server(lambda r, w: handle(r, w, delay, mark), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", help="ignored: identifies the process (its lab's pidfile)")
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--mark", type=lambda s: int(s, 0), required=True)
    args = ap.parse_args(argv)
    asyncio.run(serve(args.delay_ms / 1000.0, args.mark))
    return 0


if __name__ == "__main__":
    sys.exit(main())
