"""Where the server listens and who may reach it: loopback or not, a port that is free, the
URL clients use, and the Host headers and origins MLflow's security middleware accepts."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

from mura_core.errors import ConfigError
from pipelines.registry.server.config import WILDCARD_HOSTS, MlflowServerError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_or_taken(host: str, port: int) -> int:
    """The port to use (0: a free one), or a one-line error when it cannot be bound."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0..65535, not {port}")
    bind_host = "" if host in WILDCARD_HOSTS and host != "::" else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as uvicorn binds: TIME_WAIT leftovers do not count, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind_host, port))
        except socket.gaierror as exc:
            raise MlflowServerError(f"cannot bind --host {host}: unknown host") from exc
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MlflowServerError(
                    f"port {port} on {host} is already in use (another server?): "
                    "stop it or choose another --port"
                ) from exc
            if exc.errno == errno.EACCES:
                raise MlflowServerError(
                    f"port {port} on {host}: permission denied (ports below 1024 need root)"
                ) from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                raise MlflowServerError(
                    f"cannot bind --host {host}: not an address of this machine"
                ) from exc
            raise MlflowServerError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
        return probe.getsockname()[1]


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_host(host: str) -> str:
    if host == "::":
        return "::1"
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def advertised_host(host: str) -> str:
    """What other machines should connect to: the host itself, or this node's address."""
    if host not in WILDCARD_HOSTS:
        return host
    return primary_address() or socket.gethostname()


def primary_address() -> str | None:
    """This node's outward IPv4 address (the route to a public address; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            address = None
    if address and not ipaddress.ip_address(address).is_loopback:
        return address
    with contextlib.suppress(OSError):
        for found in socket.gethostbyname_ex(socket.gethostname())[2]:
            if not ipaddress.ip_address(found).is_loopback:
                return found
    return None


def own_names(host: str) -> list[str]:
    """Names and addresses clients may use for this machine (Host headers to accept)."""
    names = [socket.gethostname(), socket.getfqdn()]
    if host not in WILDCARD_HOSTS:
        names.append(host)
    names.append(primary_address() or "")
    with contextlib.suppress(OSError):
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    seen: list[str] = []
    for name in names:
        # IPv6 literals are left to MLflow's defaults (private fc00::/7) and --allowed-hosts
        if name and ":" not in name and name not in seen and not is_loopback(name):
            seen.append(name)
    return seen


# MLflow 3.x's default Host allow-list (mlflow.server.security_utils.get_default_allowed_hosts,
# copied: importing mlflow.server loads the whole server app). --allowed-hosts replaces it.
MLFLOW_DEFAULT_ALLOWED_HOSTS = (
    *("localhost", "127.0.0.1", "[::1]", "0.0.0.0"),
    *("localhost:*", "127.0.0.1:*", "[[]::1]:*", "0.0.0.0:*"),
    *("192.168.*", "10.*", *(f"172.{i}.*" for i in range(16, 32)), "fc00:*", "fd00:*"),
)


def allowed_hosts(names: list[str], extra: tuple[str, ...]) -> list[str]:
    hosts = list(MLFLOW_DEFAULT_ALLOWED_HOSTS)  # keep localhost and private IPs working
    for name in [*names, *extra]:
        for pattern in (name,) if ":" in name else (name, f"{name}:*"):
            if pattern not in hosts:
                hosts.append(pattern)
    return hosts


def origins(names: list[str], port: int) -> list[str]:
    return [f"http://{name}:{port}" for name in names]
