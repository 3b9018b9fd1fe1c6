"""Port allocation for N CARLA servers that never overlap.

A CARLA server listens on its RPC port P and also on P + 1 (sensor streaming) and P + 2 (the
port a multi-GPU primary listens on for secondary servers), so each server reserves three
consecutive ports; its Traffic Manager gets a port of its own from a separate range.

A bad port *setting* is a ValueError; a valid port that another process holds right now is
:class:`PortsInUse` (a RuntimeError: the config is fine, the machine is not free).
"""

from __future__ import annotations

from collections.abc import Sequence
import errno
import socket
from typing import NamedTuple

MIN_PORT = 1024
MAX_PORT = 65535
PORTS_PER_SERVER = 3  # rpc, streaming (rpc + 1), secondary (rpc + 2)


class ServerPorts(NamedTuple):
    """The ports of one CARLA server and its Traffic Manager."""

    rpc: int
    streaming: int
    secondary: int
    tm: int

    def all(self) -> tuple[int, ...]:
        """Every port this server occupies."""
        return (self.rpc, self.streaming, self.secondary, self.tm)


def _check_port(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r}: must be an integer port")
    if not MIN_PORT <= value <= MAX_PORT:
        raise ValueError(f"{name}={value}: must be in [{MIN_PORT}, {MAX_PORT}] "
                         "(unprivileged TCP ports)")


def allocate_ports(count: int, rpc_base: int = 2000, tm_base: int = 8000,
                   rpc_stride: int = PORTS_PER_SERVER) -> list[ServerPorts]:
    """Ports for ``count`` servers: server i gets rpc_base + i * rpc_stride (and the next two)
    and tm_base + i. Raises ValueError when a port leaves [1024, 65535] or two ports clash."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r}: must be an integer >= 1")
    if isinstance(rpc_stride, bool) or not isinstance(rpc_stride, int) \
            or rpc_stride < PORTS_PER_SERVER:
        raise ValueError(f"rpc_stride={rpc_stride!r}: must be an integer >= {PORTS_PER_SERVER} "
                         "(each server uses rpc, rpc + 1 and rpc + 2)")
    _check_port("rpc_base", rpc_base)
    _check_port("tm_base", tm_base)
    last_rpc = rpc_base + (count - 1) * rpc_stride
    _check_port(f"rpc port of server {count - 1} (rpc_base + {count - 1} * rpc_stride) + 2",
                last_rpc + 2)
    _check_port(f"tm port of server {count - 1} (tm_base + {count - 1})", tm_base + count - 1)
    out = []
    owner: dict[int, str] = {}
    for i in range(count):
        rpc = rpc_base + i * rpc_stride
        ports = ServerPorts(rpc, rpc + 1, rpc + 2, tm_base + i)
        for role, port in zip(ports._fields, ports, strict=True):
            if port in owner:
                raise ValueError(f"port {port} is both {owner[port]} and server {i}'s {role} "
                                 f"port: move tm_base={tm_base} outside the rpc range "
                                 f"[{rpc_base}, {last_rpc + 2}]")
            owner[port] = f"server {i}'s {role}"
        out.append(ports)
    return out


class PortsInUse(RuntimeError):
    """Ports a server needs are held by another process; the message says how to find it."""

    def __init__(self, ports: Sequence[int], host: str, needed_for: str) -> None:
        self.ports, self.host = tuple(ports), host
        holders = " or ".join(f"`ss -ltnp | grep :{p}`" for p in self.ports)
        super().__init__(
            f"port{'s' if len(self.ports) > 1 else ''} {', '.join(map(str, self.ports))} on "
            f"{host} already in use ({needed_for}): another CARLA server or process holds "
            f"{'them' if len(self.ports) > 1 else 'it'}. Find the holder with {holders}; stop "
            "it, or choose other carla.port / carla.tm_port (or another server_index)")


def require_free(ports: ServerPorts, host: str = "127.0.0.1") -> None:
    """Raise :class:`PortsInUse` unless every port of ``ports`` is free at ``host``."""
    busy = busy_ports(ports.all(), host)
    if busy:
        raise PortsInUse(busy, host, f"needed by the server {ports}")


def busy_ports(ports: tuple[int, ...] | list[int], host: str = "127.0.0.1") -> list[int]:
    """The ports among ``ports`` that something already listens on or holds at ``host``."""
    busy = []
    for port in ports:
        _check_port("port", port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                busy.append(port)
    return busy
