"""The launched-server supervisor with a dummy server: its own process group, only that group
killed, relaunched; a server orphaned by a launcher that died is killed by the next launch on
its port (the pid file); and the real CarlaBackend's failure path against a server that never
answers (the carla client times out exactly as with a hung CARLA)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import time

import pytest

from dsp_driving.driving.backend import SimulatorCrashed
from dsp_driving.driving.ports import ServerPorts, allocate_ports, busy_ports
from dsp_driving.driving.server_process import (
    ServerProcess,
    carla_server_argv,
    group_members,
    server_gpu_index,
)

ROOT = Path(__file__).resolve().parents[2]
# A launcher that starts a dummy server through ServerProcess, prints its group, and dies
# without killing it (as a Ray actor process killed with SIGKILL or std::terminate would).
LAUNCHER = """
import os, sys
from dsp_driving.driving.server_process import ServerProcess
dummy, port, pid_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = ServerProcess([sys.executable, dummy, str(port)], port, startup_timeout_s=20.0,
                       pid_dir=pid_dir)
server.start()
print(server.pid, flush=True)
os._exit(0)
"""

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


def test_carla_argv_server_options() -> None:
    ports = ServerPorts(2000, 2001, 2002, 8000)
    argv = carla_server_argv("CarlaUE4.sh", ports, gpu=2, quality_low=True, nullrhi=True)
    assert argv[-3:] == ["-graphicsadapter=2", "-quality-level=Low", "-nullrhi"]
    assert carla_server_argv("CarlaUE4.sh", ports)[-1] == "-carla-secondary-port=2002"
    with pytest.raises(ValueError, match="gpu=-2"):
        carla_server_argv("CarlaUE4.sh", ports, gpu=-2)


@pytest.mark.parametrize("configured, visible, expected", [
    (1, "3", 1),  # the config wins
    (-1, "3", 3),  # Ray gave this process GPU 3
    (-1, " 0 ", 0),
    (-1, "0,1", None),  # several: the server's own choice
    (-1, "GPU-5a1b2c3d", None),  # a UUID is no -graphicsadapter index
    (-1, None, None),
])
def test_server_gpu_from_the_config_or_ray(configured, visible, expected) -> None:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert server_gpu_index(configured, environ) == expected


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


def test_carla_env_over_a_hung_server_raises_and_close_kills_it(dummy: Path,
                                                                  tmp_path: Path) -> None:
    pytest.importorskip("carla")
    from dsp_driving.driving.carla_config import CarlaConfig
    from dsp_driving.driving.carla_env import CarlaDriveEnv

    ports = free_ports()
    # startup_timeout_s bounds both the launch (port open) and connecting (version, world).
    cfg = CarlaConfig(server_command=f"{sys.executable} {dummy}", port=ports.rpc,
                      tm_port=ports.tm, timeout_s=0.3, startup_timeout_s=3.0)
    env = CarlaDriveEnv(cfg)
    backend = env.backend
    backend.server.pid_dir = tmp_path
    started = time.monotonic()
    try:
        with pytest.raises(SimulatorCrashed, match="time-out of 3000ms while waiting") as crash:
            env.reset(seed=0)  # connecting times out: no restart in this process
        assert "failed during connect" in str(crash.value)
        assert time.monotonic() - started < 30.0
        assert backend.crashed and backend.server.launches == 1
        last = backend.server.pid
        assert last is not None and group_members(last)
        assert json.loads(backend.server.pid_file.read_text())["pgid"] == last
        with pytest.raises(SimulatorCrashed, match="crashed earlier"):
            env.reset(seed=0)
    finally:
        env.close()
    assert group_members(last) == [] and not backend.server.running()
    assert not backend.server.pid_file.exists()


def launch_and_abandon(dummy: Path, port: int, pid_dir: Path) -> int:
    """A launcher process starts a dummy server on ``port`` and dies; the server's group."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(dummy), str(port), str(pid_dir)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    pgid = int(proc.stdout.split()[-1])
    assert group_members(pgid)  # orphaned, alive
    return pgid


def test_a_server_orphaned_by_a_dead_launcher_is_killed_by_the_next_launch(
        dummy: Path, tmp_path: Path) -> None:
    port = free_ports().rpc
    orphan = launch_and_abandon(dummy, port, tmp_path)
    record = json.loads((tmp_path / f"rpc_port_{port}.json").read_text())
    assert (record["pgid"], record["port"]) == (orphan, port)
    assert busy_ports([port])  # the orphan holds the port
    server = ServerProcess([sys.executable, str(dummy), str(port)], port,
                           startup_timeout_s=20.0, pid_dir=tmp_path)
    try:
        server.start()  # kills the orphan's group first, then launches
        assert group_members(orphan) == [] and server.running() and server.pid != orphan
        assert json.loads(server.pid_file.read_text())["pgid"] == server.pid
    finally:
        server.kill()
    assert not server.pid_file.exists()


def test_the_backend_reaps_a_stale_server_before_the_free_port_check(dummy: Path,
                                                                       tmp_path: Path) -> None:
    pytest.importorskip("carla")
    from dsp_driving.driving.carla_backend import CarlaBackend
    from dsp_driving.driving.carla_config import CarlaConfig

    ports = free_ports()
    orphan = launch_and_abandon(dummy, ports.rpc, tmp_path)
    cfg = CarlaConfig(server_command=f"{sys.executable} {dummy}", port=ports.rpc,
                      tm_port=ports.tm, timeout_s=0.3, startup_timeout_s=2.0)
    backend = CarlaBackend(cfg, ports)
    backend.server.pid_dir = tmp_path
    try:
        with pytest.raises(SimulatorCrashed, match="time-out"):  # not PortsInUse
            backend.start()  # the new dummy never answers
        assert group_members(orphan) == [] and backend.server.launches == 1
    finally:
        backend.close()


def test_a_server_whose_launcher_lives_or_whose_pid_was_reused_is_not_killed(
        dummy: Path, tmp_path: Path) -> None:
    port = free_ports().rpc
    live = ServerProcess([sys.executable, str(dummy), str(port)], port, startup_timeout_s=20.0,
                         pid_dir=tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 start_new_session=True)
    other = ServerProcess(["unused"], port, pid_dir=tmp_path)
    try:
        live.start()
        assert other.reap_stale() is None and live.running()  # its launcher (us) lives
        # A record naming a group whose leader started at another time: a reused pid.
        other.pid_file.write_text(json.dumps({"pgid": bystander.pid, "leader_start": 1,
                                              "launcher_pid": 999999999, "port": port}))
        assert other.reap_stale() is None and bystander.poll() is None
        assert not other.pid_file.exists()  # the stale record is gone
    finally:
        live.kill()
        bystander.kill()
        bystander.wait()
