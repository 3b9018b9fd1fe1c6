"""Port allocation for N CARLA servers: the exact layout, no overlap, clear errors."""

from __future__ import annotations

import socket

import pytest

from dsp_driving.driving.ports import ServerPorts, allocate_ports, busy_ports


def test_layout_of_three_servers() -> None:
    assert allocate_ports(3, rpc_base=2000, tm_base=8000) == [
        ServerPorts(2000, 2001, 2002, 8000),
        ServerPorts(2003, 2004, 2005, 8001),
        ServerPorts(2006, 2007, 2008, 8002),
    ]
    assert allocate_ports(2, 3000, 9000, rpc_stride=10)[1] == ServerPorts(3010, 3011, 3012, 9001)


def test_many_servers_never_share_a_port() -> None:
    servers = allocate_ports(64, rpc_base=20000, tm_base=30000)
    ports = [p for s in servers for p in s.all()]
    assert len(ports) == 4 * 64 == len(set(ports))
    assert max(p for s in servers for p in (s.rpc, s.streaming, s.secondary)) == 20000 + 191


@pytest.mark.parametrize("kwargs, message", [
    ({"count": 0}, "count=0"),
    ({"count": True}, "count=True"),
    ({"count": 2, "rpc_base": 80}, "rpc_base=80"),
    ({"count": 1, "tm_base": 70000}, "tm_base=70000"),
    ({"count": 1, "rpc_base": 65534}, "65536"),  # P + 2 past the last port
    ({"count": 3, "tm_base": 65534}, "65536"),
    ({"count": 2, "rpc_stride": 2}, "rpc_stride=2"),
    ({"count": 2, "rpc_base": 2000, "tm_base": 2004}, "port 2004"),  # server 1's streaming
    ({"count": 1, "rpc_base": 2000, "tm_base": 2002}, "port 2002"),
])
def test_bad_input_raises_a_clear_value_error(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        allocate_ports(**kwargs)


def test_busy_ports_finds_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        assert busy_ports([taken, free]) == [taken]
    with pytest.raises(ValueError, match="port=22"):
        busy_ports([22])
