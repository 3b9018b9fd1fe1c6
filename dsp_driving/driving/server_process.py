"""A simulator server the bridge launches itself, in its own process group.

Works with any command: CarlaUE4.sh in production, a dummy listener in the tests. The server
runs in a new session (``start_new_session``), so killing it signals only its own process
group (the launcher script and the engine it starts), never the trainer or other servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from pathlib import Path
import shlex
import signal
import socket
import subprocess
import time
from typing import IO

from dsp_driving.driving.backend import SimulatorCrashed
from dsp_driving.driving.ports import ServerPorts


def carla_server_argv(command: str, ports: ServerPorts) -> list[str]:
    """``CarlaUE4.sh [args] -RenderOffScreen -nosound`` plus this server's own three ports.

    CARLA's UCarlaSettings reads ``-carla-rpc-port`` (which also moves the streaming and
    secondary ports to P + 1 and P + 2), ``-carla-streaming-port`` and
    ``-carla-secondary-port`` (where a primary listens for multi-GPU secondaries).
    ``-carla-primary-port`` is something else: with ``-carla-primary-host`` it makes the
    process a secondary that connects to that primary, so it is never passed here.
    """
    argv = shlex.split(command)
    if not argv:
        raise ValueError("server_command is empty: nothing to launch")
    return [*argv, "-RenderOffScreen", "-nosound", f"-carla-rpc-port={ports.rpc}",
            f"-carla-streaming-port={ports.streaming}",
            f"-carla-secondary-port={ports.secondary}"]


class ServerProcess:
    """Launch ``argv`` in its own process group and wait until ``port`` accepts connections."""

    def __init__(self, argv: Sequence[str], port: int, host: str = "127.0.0.1",
                 startup_timeout_s: float = 60.0, log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if not argv:
            raise ValueError("ServerProcess: argv is empty")
        if not startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s={startup_timeout_s!r}: must be > 0")
        self.argv = [str(a) for a in argv]
        self.port, self.host = port, host
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.env = dict(env) if env is not None else None
        self.launches = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The launched process's id (also its process-group id), or None."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """Whether the launched process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch in a new session and wait for the port; SimulatorCrashed if it never opens."""
        if self.running():
            raise RuntimeError(f"server already running (pid {self.pid})")
        self._close_log()
        out: int | IO[bytes] = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = open(self.log_path, "ab")  # noqa: SIM115 (kept while it runs)
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True)
        self.launches += 1
        self._wait_ready()

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
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)  # the group is the one start_new_session created
            except ProcessLookupError:
                break
            if _group_gone(proc, wait_s):
                break
        if proc.poll() is None:
            proc.wait(timeout=5.0)
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


def _group_gone(proc: subprocess.Popen[bytes], wait_s: float) -> bool:
    """Wait until no live process of ``proc``'s group is left (reaping the leader)."""
    deadline = time.monotonic() + wait_s
    while True:
        proc.poll()
        if Path("/proc/self/stat").exists():
            gone = not group_members(proc.pid)
        else:
            try:
                os.killpg(proc.pid, 0)
                gone = False
            except ProcessLookupError:
                gone = True
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(0.02)
