"""Real gateway processes for tests (``python -m gateway serve``), and a fast HTTP burst client.

The burst client writes many pipelined HTTP/1.1 requests on a few keep-alive connections and
reads the responses back, so a thousand requests reach the servers within a fraction of a
second (an aiohttp client would spend longer in Python than the servers do).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso_in(seconds: float) -> str:
    """The real clock's now + ``seconds``, as ISO-8601 (for GATEWAY_CLOCK)."""
    return dt.datetime.fromtimestamp(time.time() + seconds, dt.UTC).isoformat()


@dataclass
class GatewayProcess:
    port: int
    popen: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.popen)


def stop_process(popen: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=5)


def run_cli(redis_url: str, clock: str, *args: str, timeout: float = 120) -> None:
    """``python -m gateway ARGS`` on ``redis_url`` with the process clock at ``clock``;
    asserts that it succeeded."""
    env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_CLOCK": clock,
           "GATEWAY_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_gateways(redis_url: str, clocks: list[str | None],
                   env: dict[str, str] | None = None,
                   timeout: float = 60.0) -> list[GatewayProcess]:
    """Start one ``serve --role api`` process per entry of ``clocks`` (its GATEWAY_CLOCK,
    None for the real clock), all on ``redis_url``; wait until each answers /healthz."""
    procs = []
    for clock in clocks:
        port = free_port()
        child_env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_LOG_LEVEL": "WARNING",
                     **(env or {})}
        child_env.pop("GATEWAY_CLOCK", None)
        if clock is not None:
            child_env["GATEWAY_CLOCK"] = clock
        popen = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--role", "api", "--port", str(port)],
            cwd=ROOT, env=child_env)
        procs.append(GatewayProcess(port, popen, child_env))
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            while not _ready(proc.url):
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"gateway on :{proc.port} exited {proc.popen.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway on :{proc.port} did not start")
                time.sleep(0.05)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float = 0.0


async def _read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body)


async def burst(port: int, path: str, headers: dict[str, str], count: int,
                connections: int = 10) -> list[Reply]:
    """``count`` GET requests, pipelined over ``connections`` keep-alive connections."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()

    async def one_connection(n: int) -> list[Reply]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request * n)
            await writer.drain()
            return [await _read_reply(reader) for _ in range(n)]
        finally:
            writer.close()

    shares = [count // connections + (1 if i < count % connections else 0)
              for i in range(connections)]
    results = await asyncio.gather(*(one_connection(n) for n in shares if n))
    return [r for part in results for r in part]


async def get(port: int, path: str, headers: dict[str, str] | None = None,
              limit_s: float = 5.0) -> Reply:
    """One request on a fresh connection, timed (given up after ``limit_s``)."""
    started = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), limit_s)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        reply = await asyncio.wait_for(_read_reply(reader), limit_s)
    finally:
        writer.close()
    reply.seconds = time.perf_counter() - started
    return reply
