"""A Ray cluster of separate `ray start` processes on this machine's loopback, for the tests and the benchmark.

Each node is `ray start --block` in a process group of its own, so a node is killed (a worker node dying
mid-job) or stopped by its group's id: `ray stop` would end every Ray process of the machine, another
user's cluster too. Three things make this work on a small, busy machine:

- Ray turns 127.0.0.1 into the machine's outward address, so the nodes get 127.0.0.2, 127.0.0.3... (the
  loopback network is all of 127/8): nothing leaves the machine;
- a node starts at a higher priority than its caller and is set back to the caller's once it runs (Ray's
  agents have 15 s to report their ports, a window the CPU share of a busy machine misses), and a node that
  still fails to start is tried again;
- one random token authenticates the nodes and the drivers (RAY_AUTH_TOKEN), as Ray's default token
  authentication asks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started"
START_TIMEOUT = 180  # seconds a node may take to start on a loaded machine
ATTEMPTS = 3
STARTUP_BOOST = 10  # niceness below the caller's while a node starts (see _hurried)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind((host, 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


@dataclass
class Node:
    """One `ray start --block` process group; `log` holds what it printed."""

    process: subprocess.Popen
    log: Path
    ip: str

    def processes(self) -> list:
        """The node's processes: `ray start`'s descendants, the workers among them (the raylet gives each worker a
        process group of its own)."""
        import psutil

        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """End the node at once, as a machine that dies: SIGKILL to each of its processes and its group."""
        for process in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        _signal_group(self.process, signal.SIGKILL)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the group (ray start stops its processes), SIGKILL to what is left after `grace` seconds."""
        left = self.processes()
        _signal_group(self.process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        for process in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait()


def _signal_group(process: subprocess.Popen, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, number)


@dataclass
class Cluster:
    """A head and worker nodes; `address` is the head's, `env` what a driver needs to connect (the token)."""

    folder: Path
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)
    address: str = ""

    def start_head(self, cpus: int, object_store_mb: int) -> Node:
        port = free_ports(1)[0]
        self.address = f"127.0.0.2:{port}"
        return self._start(
            ["--head", f"--port={port}", "--include-dashboard=false"], "127.0.0.2", cpus, object_store_mb
        )

    def add_node(self, cpus: int, object_store_mb: int) -> Node:
        ip = f"127.0.0.{len(self.nodes) + 2}"
        return self._start([f"--address={self.address}"], ip, cpus, object_store_mb)

    def _start(self, role: list[str], ip: str, cpus: int, object_store_mb: int) -> Node:
        """Start a node; on a busy machine Ray's own 30 s for a node to register can run out (a second try finds
        its Python files cached), so up to ATTEMPTS tries."""
        for attempt in range(1, ATTEMPTS + 1):
            node = self._launch(role, ip, cpus, object_store_mb, attempt)
            if _started(node):
                # back to the caller's priority: the readers it starts then share the machine as the caller does
                os.setpriority(os.PRIO_PGRP, node.process.pid, os.getpriority(os.PRIO_PROCESS, 0))
                self.nodes.append(node)
                return node
            node.stop()
        raise RuntimeError(f"ray start did not start a node: {node.log.read_text(errors='replace')[-2000:]}")

    def _launch(self, role: list[str], ip: str, cpus: int, object_store_mb: int, attempt: int) -> Node:
        ports = free_ports(6)
        log = self.folder / f"node-{len(self.nodes)}-{attempt}.log"
        command = [
            RAY, "start", "--block", *role, f"--node-ip-address={ip}", f"--num-cpus={cpus}",
            f"--object-store-memory={object_store_mb * 1_000_000}", "--disable-usage-stats",
            "--include-log-monitor=false", f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-grpc-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
            f"--metrics-export-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
        ]  # fmt: skip
        with open(log, "w") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_hurried,
            )
        return Node(process, log, ip)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def _hurried() -> None:
    """Starting, a node runs at a priority STARTUP_BOOST above its caller's where it may (root): Ray gives its
    agents 15 s to report their ports, and on a machine busy with other jobs their Python takes longer."""
    with contextlib.suppress(PermissionError):
        os.nice(-STARTUP_BOOST)


def _started(node: Node) -> bool:
    """Whether the node came up; False as soon as its raylet is gone (ray start itself takes long to notice)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if STARTED in node.log.read_text(errors="replace"):
            return True
        if node.process.poll() is not None or _raylet_died(node):
            return False
        time.sleep(0.5)
    return False


def _raylet_died(node: Node) -> bool:
    import psutil

    for process in node.processes():
        with contextlib.suppress(psutil.Error):
            if process.name() == "raylet" and process.status() == psutil.STATUS_ZOMBIE:
                return True
    return False


def cluster_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the nodes and their drivers: a fresh token, token authentication, the caller's
    PYTHONPATH (the workers import digitlab from it)."""
    env = dict(os.environ if base is None else base)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    return env
