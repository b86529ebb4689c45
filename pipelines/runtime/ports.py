"""Free TCP ports on 127.0.0.1 for the servers the jobs and tests start (Ray, Orthanc, MLflow).

`free_ports(n)` binds n sockets at once, so the n ports differ from each other (two calls of
a bind-to-port-0-and-close helper can hand back the same port). They are closed before
returning, so another process may still take one before our server binds it: a caller that
can tell (Orthanc logs "already in use") retries with new ports.
"""

from __future__ import annotations

import contextlib
import socket

HOST = "127.0.0.1"


def free_ports(n: int, host: str = HOST) -> list[int]:
    """`n` distinct TCP ports that were free on `host` a moment ago."""
    if n < 1:
        raise ValueError(f"need at least one port, asked for {n}")
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = HOST) -> int:
    """One TCP port that was free on `host` a moment ago."""
    return free_ports(1, host)[0]
