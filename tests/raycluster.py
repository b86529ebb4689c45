"""A real multi-node Ray cluster on this one machine, started and stopped by process ids.

A head (`ray start --head --block` on 127.0.0.1) and worker nodes (`ray start --address …
--block`), each its own raylet with its own ports (GCS, node manager, object manager, a
worker port range, dashboard agent, runtime-env agent, metrics), `--num-cpus` of its own,
token auth on as in `ray_cluster.yaml`, and a temp dir of the cluster's own (short: Ray's
socket paths must fit in 107 bytes). Each `ray start --block` runs in its own session; a
node is killed as a machine dies (SIGKILL to its raylet and every process below its
`ray start`), and the cluster is stopped by those ids, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.runtime.ports import free_ports
from tests.processes import alive, command, descendants, kill_all, wait_gone

BIN = Path(sys.executable).parent
WORKER_PORTS = 64  # per node: the range its workers listen on
_FIRST_WORKER_PORT = 20000  # below Linux's ephemeral range (32768-60999), above the defaults


@dataclass
class RayNode:
    """One `ray start --block` process and what it started."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    def pids(self) -> set[int]:
        return alive({self.process.pid, *descendants(self.process.pid)})

    def raylet(self) -> int | None:
        found = [p for p in descendants(self.process.pid) if "/raylet/raylet" in (command(p) or "")]
        return found[0] if found else None

    def workers(self) -> dict[int, str]:
        """Ray worker processes of this node (`ray::…`): id → title."""
        raylet = self.raylet()
        if raylet is None:
            return {}
        names = {pid: command(pid) or "" for pid in descendants(raylet)}
        return {pid: name for pid, name in names.items() if name.startswith("ray::")}

    def kill(self) -> set[int]:
        """The node dies as a machine does: SIGKILL to everything of it at once."""
        pids = self.pids()
        self.killed = True
        kill_all(pids)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        return pids


@dataclass
class RayCluster:
    """A head and `workers` worker nodes; see the module docstring."""

    root: Path
    cpus: float = 1
    head_cpus: float | None = None  # None: as `cpus`
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0
    temp_dir: Path | None = None

    @property
    def address(self) -> str:
        """What `--address` takes: the GCS."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a node, or of a driver joining with `--address`: token auth
        on, this cluster's token (`mura submit` clients drop RAY_AUTH_MODE: they talk HTTP)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        path = f"{BIN}:{env.get('PATH', '')}"
        return {
            **env,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",  # SIGTERM: 30 s of draining otherwise
            "PATH": path,
        }

    def _ports(self, index: int) -> list[str]:
        node_manager, object_manager, agent, agent_grpc, runtime_env, metrics = free_ports(6)
        first = _FIRST_WORKER_PORT + (os.getpid() % 40) * 256 + index * WORKER_PORTS
        return [
            *("--node-manager-port", str(node_manager)),
            *("--object-manager-port", str(object_manager)),
            *("--min-worker-port", str(first)),
            *("--max-worker-port", str(first + WORKER_PORTS - 1)),
            *("--dashboard-agent-listen-port", str(agent)),
            *("--dashboard-agent-grpc-port", str(agent_grpc)),
            *("--runtime-env-agent-port", str(runtime_env)),
            *("--metrics-export-port", str(metrics)),
        ]

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = self.root / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node = RayNode(name, process, log)
        self.nodes.append(node)
        return node

    def start(self, workers: int = 2, timeout: float = 180) -> RayCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mray-", dir="/tmp"))
        self.gcs_port, self.dashboard_port, client = free_ports(3)
        head = [
            *("--head", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs_port)),
            *("--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port)),
            *("--include-dashboard", "true", "--ray-client-server-port", str(client)),
            *("--num-cpus", str(self.head_cpus if self.head_cpus is not None else self.cpus)),
            *("--temp-dir", str(self.temp_dir)),
        ]
        try:
            self._start("head", [*head, *self._ports(0)])
            self.wait_for(1, timeout)
            for i in range(1, workers + 1):  # one at a time: two raylets starting together
                self.add_worker(f"worker{i}")  # on 2 cores timed out registering (30 s)
                self.wait_for(1 + i, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self, name: str) -> RayNode:
        index = len(self.nodes)
        return self._start(
            name,
            [
                *("--address", self.address, "--node-ip-address", "127.0.0.1"),
                *("--num-cpus", str(self.cpus)),
                *self._ports(index),
            ],
        )

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as alive (the dashboard's State API)."""
        request = urllib.request.Request(
            f"{self.dashboard}/api/v0/nodes?limit=100&detail=false",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return sum(n["state"] == "ALIVE" for n in nodes)

    def wait_for(self, nodes: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if not node.killed and node.process.poll() is not None:
                    raise AssertionError(f"ray start ({node.name}) exited: see {node.log}")
            with contextlib.suppress(urllib.error.URLError, OSError, KeyError, ValueError):
                if self.alive_nodes() >= nodes:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{nodes} Ray nodes not alive in {timeout:.0f}s")
            time.sleep(1)

    def stop(self) -> set[int]:
        """SIGTERM each `ray start` (it stops its node), then SIGKILL what is left of any;
        the ids of whatever had to be killed."""
        pids = set().union(*(node.pids() for node in self.nodes)) if self.nodes else set()
        for node in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
        left = wait_gone(pids, timeout=45)
        kill_all(left)
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=10)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
