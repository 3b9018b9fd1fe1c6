"""A simulator server the bridge launches itself, in its own process group.

Works with any command: CarlaUE4.sh in production, a dummy listener in the tests. The server
runs in a new session (``start_new_session``), so killing it signals only its own process
group (the launcher script and the engine it starts), never the trainer or other servers.

Because the launching process may die without killing it (os._exit, SIGKILL, std::terminate
in a Ray actor), every launch records its process group in a pid file keyed by the RPC port,
``<tempfile.gettempdir()>/dsp_driving_carla_servers_<uid>/rpc_port_<P>.json``, with the start
times of the group's leader and of the launching process. The next :meth:`ServerProcess.start`
for that port (or :meth:`ServerProcess.reap_stale`) kills that group when the launcher is gone
and the group is still the recorded one (the leader's start time guards against a reused pid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import logging
import os
from pathlib import Path
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from typing import IO, Any

from dsp_driving.driving.backend import SimulatorCrashed
from dsp_driving.driving.ports import ServerPorts

log = logging.getLogger(__name__)


def server_gpu_index(configured: int, environ: Mapping[str, str] | None = None) -> int | None:
    """The GPU a launched server renders on: ``configured`` when >= 0; for -1 the one GPU Ray
    gave this process (CUDA_VISIBLE_DEVICES holding a single integer index), else None (the
    server's own choice). A list or a GPU UUID in CUDA_VISIBLE_DEVICES also gives None."""
    if configured >= 0:
        return configured
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "")
    return int(visible.strip()) if visible.strip().isdigit() else None


def carla_server_argv(command: str, ports: ServerPorts, gpu: int | None = None,
                      quality_low: bool = False, nullrhi: bool = False) -> list[str]:
    """``CarlaUE4.sh [args] -RenderOffScreen -nosound`` plus this server's own three ports, and
    ``-graphicsadapter=N`` (``gpu``), ``-quality-level=Low``, ``-nullrhi`` when asked.

    CARLA's UCarlaSettings reads ``-carla-rpc-port`` (which also moves the streaming and
    secondary ports to P + 1 and P + 2), ``-carla-streaming-port`` and
    ``-carla-secondary-port`` (where a primary listens for multi-GPU secondaries).
    ``-carla-primary-port`` is something else: with ``-carla-primary-host`` it makes the
    process a secondary that connects to that primary, so it is never passed here.
    """
    argv = shlex.split(command)
    if not argv:
        raise ValueError("server_command is empty: nothing to launch")
    if gpu is not None and gpu < 0:
        raise ValueError(f"gpu={gpu!r}: must be a GPU index >= 0 (or None)")
    options = [f"-graphicsadapter={gpu}"] if gpu is not None else []
    options += ["-quality-level=Low"] if quality_low else []
    options += ["-nullrhi"] if nullrhi else []
    return [*argv, "-RenderOffScreen", "-nosound", f"-carla-rpc-port={ports.rpc}",
            f"-carla-streaming-port={ports.streaming}",
            f"-carla-secondary-port={ports.secondary}", *options]


def default_pid_dir() -> Path:
    """Where launched servers are recorded: one folder per user under the temp directory."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"dsp_driving_carla_servers_{uid}"


class ServerProcess:
    """Launch ``argv`` in its own process group and wait until ``port`` accepts connections."""

    def __init__(self, argv: Sequence[str], port: int, host: str = "127.0.0.1",
                 startup_timeout_s: float = 60.0, log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None,
                 pid_dir: str | Path | None = None) -> None:
        if not argv:
            raise ValueError("ServerProcess: argv is empty")
        if not startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s={startup_timeout_s!r}: must be > 0")
        self.argv = [str(a) for a in argv]
        self.port, self.host = port, host
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.env = dict(env) if env is not None else None
        self.pid_dir = Path(pid_dir) if pid_dir else default_pid_dir()
        self.launches = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The launched process's id (also its process-group id), or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pid_file(self) -> Path:
        """The record of the server launched for this RPC port."""
        return self.pid_dir / f"rpc_port_{self.port}.json"

    def running(self) -> bool:
        """Whether the launched process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def reap_stale(self, grace_s: float = 5.0) -> int | None:
        """Kill the server group recorded for this port by a launcher that is gone (it died
        without killing it); returns that process-group id, or None when there was none. A
        group whose launcher still runs is left alone (its ports stay busy)."""
        record = _read_record(self.pid_file)
        if record is None:
            return None
        pgid = int(record["pgid"])
        if self._proc is not None and pgid == self._proc.pid:
            return None  # ours
        launcher = int(record.get("launcher_pid", -1))
        started = _start_time(launcher)
        if started is not None and started == record.get("launcher_start"):
            return None  # its launcher still runs: not stale
        killed = None
        if _recorded_group_alive(pgid, record.get("leader_start")) and pgid != os.getpgid(0):
            log.warning("killing the stale server group %d left on port %d by process %d "
                        "(%s)", pgid, self.port, launcher, record.get("argv0", "?"))
            _kill_group(pgid, grace_s)
            killed = pgid
        self.pid_file.unlink(missing_ok=True)
        return killed

    def start(self) -> None:
        """Launch in a new session (after killing a stale server of this port) and wait for
        the port; SimulatorCrashed if it never opens."""
        if self.running():
            raise RuntimeError(f"server already running (pid {self.pid})")
        self.reap_stale()
        self._close_log()
        out: int | IO[bytes] = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = open(self.log_path, "ab")  # noqa: SIM115 (kept while it runs)
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True)
        self._write_record(self._proc.pid)
        self.launches += 1
        self._wait_ready()

    def _write_record(self, pgid: int) -> None:
        """The pid file (atomically); a folder that cannot be written only loses the net."""
        record = {"pgid": pgid, "leader_start": _start_time(pgid), "port": self.port,
                  "launcher_pid": os.getpid(), "launcher_start": _start_time(os.getpid()),
                  "argv0": self.argv[0]}
        try:
            self.pid_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.pid_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(self.pid_file)
        except OSError as exc:
            log.warning("could not record server %d in %s (%s): if this process dies, kill "
                        "the group yourself", pgid, self.pid_file, exc)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise SimulatorCrashed(f"server {self.argv[0]} exited with code {code} before "
                                       f"opening port {self.port}" + self._log_hint())
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise SimulatorCrashed(f"server {self.argv[0]} did not open {self.host}:{self.port} "
                               f"within {self.startup_timeout_s} s" + self._log_hint())

    def _log_hint(self) -> str:
        return f" (log: {self.log_path})" if self.log_path else ""

    def kill(self, grace_s: float = 5.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace_s``; reap the child."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _kill_group(proc.pid, grace_s, proc)  # the group start_new_session created
        if proc.poll() is None:
            proc.wait(timeout=5.0)
        record = _read_record(self.pid_file)
        if record is not None and int(record["pgid"]) == proc.pid:
            self.pid_file.unlink(missing_ok=True)
        self._close_log()

    def restart(self) -> None:
        """Kill the process group and launch again."""
        self.kill()
        self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc (Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _kill_group(pgid: int, grace_s: float,
                proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM process group ``pgid``, SIGKILL it if it outlives ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _group_gone(pgid, wait_s, proc):
            break


def _group_gone(pgid: int, wait_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until no live process of group ``pgid`` is left (reaping ``proc``, our child)."""
    deadline = time.monotonic() + wait_s
    while True:
        if proc is not None:
            proc.poll()
        if Path("/proc/self/stat").exists():
            gone = not group_members(pgid)
        else:
            try:
                os.killpg(pgid, 0)
                gone = False
            except ProcessLookupError:
                gone = True
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(0.02)


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc), or None if it is not
    running (or there is no /proc)."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # field 3 (state) onwards; 22 is starttime
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _recorded_group_alive(pgid: int, leader_start: Any) -> bool:
    """Whether process group ``pgid`` still is the recorded one: it has live members, and
    its leader is gone (a group id is not reused while the group lives) or started when
    recorded (not a new session that got the same pid)."""
    if not Path("/proc/self/stat").exists() or not group_members(pgid):
        return False
    now = _start_time(pgid)
    return now is None or now == leader_start


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pgid"), int) else None
