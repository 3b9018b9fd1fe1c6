"""The launched-server supervisor with a dummy server: its own process group, only that group
killed, relaunched; and the real CarlaBackend's failure path against a server that never
answers (the carla client times out exactly as with a hung CARLA)."""

from __future__ import annotations

import os
from pathlib import Path
import socket
import subprocess
import sys
import time

import pytest

from dsp_driving.driving.backend import SimulatorCrashed
from dsp_driving.driving.ports import ServerPorts, allocate_ports, busy_ports
from dsp_driving.driving.server_process import ServerProcess, carla_server_argv, group_members

# Listens on -carla-rpc-port=P (or argv[1]) and never answers; a child sleeps in its group.
DUMMY = """
import socket, subprocess, sys, time
port = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("-carla-rpc-port=")),
            None) or int(sys.argv[1])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[-1] if sys.argv[-1].endswith(".pid") else "/dev/null", "w").write(str(child.pid))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
conns = []
while True:
    conns.append(s.accept()[0])
"""


@pytest.fixture
def dummy(tmp_path: Path) -> Path:
    path = tmp_path / "dummy_server.py"
    path.write_text(DUMMY)
    return path


def free_ports() -> ServerPorts:
    """One server's ports, all free now (from a per-process range to avoid parallel runs)."""
    for base in range(40000 + (os.getpid() % 500) * 20, 60000, 20):
        ports = allocate_ports(1, base, base + 10)[0]
        if not busy_ports(ports.all()):
            return ports
    raise RuntimeError("no free ports")


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] not in "ZX"


def test_carla_argv_gets_its_own_ports() -> None:
    argv = carla_server_argv("/opt/carla/CarlaUE4.sh -quality-level=Low",
                             ServerPorts(2003, 2004, 2005, 8001))
    assert argv == ["/opt/carla/CarlaUE4.sh", "-quality-level=Low", "-RenderOffScreen",
                    "-nosound", "-carla-rpc-port=2003", "-carla-streaming-port=2004",
                    "-carla-secondary-port=2005"]
    with pytest.raises(ValueError, match="empty"):
        carla_server_argv("  ", ServerPorts(2000, 2001, 2002, 8000))


def test_own_group_only_that_group_killed_and_relaunched(dummy: Path, tmp_path: Path) -> None:
    port = free_ports().rpc
    pid_file = tmp_path / "child.pid"
    server = ServerProcess([sys.executable, str(dummy), str(port), str(pid_file)], port,
                           startup_timeout_s=20.0)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        server.start()
        first, child = server.pid, int(pid_file.read_text())
        assert os.getpgid(first) == first != os.getpgid(0)  # a session of its own
        assert os.getpgid(child) == first
        assert sorted(group_members(first)) == sorted([first, child])
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            pass
        server.restart()
        second = server.pid
        assert second != first and server.launches == 2 and server.running()
        assert group_members(first) == [] and not _exists(child)  # the whole old group
        assert bystander.poll() is None  # ... and nothing else
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            pass
        server.kill()
        assert group_members(second) == [] and not server.running() and server.pid is None
        assert bystander.poll() is None
    finally:
        server.kill()
        bystander.kill()
        bystander.wait()


def test_server_that_exits_early_is_a_crash() -> None:
    server = ServerProcess([sys.executable, "-c", "raise SystemExit(3)"], free_ports().rpc)
    with pytest.raises(SimulatorCrashed, match="exited with code 3"):
        server.start()


def test_server_that_never_opens_its_port_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = ServerProcess([sys.executable, "-c", "print('booting', flush=True); "
                            "import time; time.sleep(60)"], free_ports().rpc,
                           startup_timeout_s=1.0, log_path=log)
    started = time.monotonic()
    with pytest.raises(SimulatorCrashed, match="did not open"):
        server.start()
    assert time.monotonic() - started < 10.0
    assert not server.running() and server.launches == 1
    assert log.read_text() == "booting\n"


def test_carla_backend_restarts_its_own_server_then_gives_up(dummy: Path) -> None:
    pytest.importorskip("carla")
    from dsp_driving.driving.carla_config import CarlaConfig
    from dsp_driving.driving.carla_env import CarlaDriveEnv

    ports = free_ports()
    # startup_timeout_s bounds both the launch (port open) and connecting (get_world).
    cfg = CarlaConfig(server_command=f"{sys.executable} {dummy}", port=ports.rpc,
                      tm_port=ports.tm, timeout_s=0.3, startup_timeout_s=3.0, max_restarts=1)
    env = CarlaDriveEnv(cfg)
    backend = env.backend
    started = time.monotonic()
    with pytest.raises(SimulatorCrashed, match="2 simulator crashes in a row") as crash:
        env.reset(seed=0)  # connect times out, restart once, times out again
    assert "time-out of 3000ms while waiting for the simulator" in str(crash.value)
    assert time.monotonic() - started < 30.0
    assert (backend.restarts, backend.server.launches, env.restarts) == (1, 2, 1)
    last = backend.server.pid
    assert last is not None and group_members(last)
    env.close()
    assert group_members(last) == [] and not backend.server.running()
