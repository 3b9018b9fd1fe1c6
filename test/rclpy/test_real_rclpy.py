"""policy_node and trainer_node on real ROS 2 Jazzy rclpy, in the venv of make_venv.sh.

The suite's Python has no rclpy, so this module makes (or reuses) the venv with
``bash test/rclpy/make_venv.sh DIR`` (DIR: $DSP_RCLPY_VENV, else
~/.cache/dsp_driving/rclpy-venv), runs rclpy_checks.py there once under pytest, and reports
each of its tests here as one test. Under CI (CI=true) a venv that cannot be made is a
failure, never a skip; elsewhere (no cmake, a Python without ros-jazzy wheels) the tests skip
and say why.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
import signal
import subprocess
import xml.etree.ElementTree as ET

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHECKS = HERE / "rclpy_checks.py"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MAKE_TIMEOUT_S = 900  # about 90 s on a fresh machine, a few seconds when reused
CHECKS_TIMEOUT_S = 900  # about 150 s


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run in a session of its own: on a time-out the nodes it started go with it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n(killed after {timeout_s} s)"
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def venv_dir() -> Path:
    return Path(os.environ.get("DSP_RCLPY_VENV")
                or Path.home() / ".cache" / "dsp_driving" / "rclpy-venv")


def check_names() -> list[str]:
    """The test functions of rclpy_checks.py, read without importing it (no rclpy here)."""
    tree = ast.parse(CHECKS.read_text())
    return [n.name for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def _not_here(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: the real-rclpy tests must run, but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, str]]]:
    """Inner test name -> [(outcome, detail)], one entry per (parametrised) case."""
    venv = venv_dir()
    make = _run(["bash", str(HERE / "make_venv.sh"), str(venv)], MAKE_TIMEOUT_S)
    if make.returncode != 0:
        _not_here(f"make_venv.sh {venv} failed:\n{make.stderr[-4000:]}")
    junit = tmp_path_factory.mktemp("rclpy") / "junit.xml"
    inner = _run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "-o", "junit_family=xunit1", f"--junitxml={junit}", str(CHECKS)],
                 CHECKS_TIMEOUT_S)
    if not junit.is_file():
        pytest.fail(f"the real-rclpy run wrote no report (status {inner.returncode}):\n"
                    f"{inner.stdout[-4000:]}\n{inner.stderr[-4000:]}", pytrace=False)
    out: dict[str, list[tuple[str, str]]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = tag
                detail = f"{case.get('name')}: {element.get('message', '')}\n{element.text or ''}"
                break
        out.setdefault(name, []).append((outcome, detail))
    out["(output)"] = [("passed", inner.stdout[-3000:])]
    return out


def test_the_checks_are_found() -> None:
    names = check_names()
    assert len(names) >= 15 and "test_policy_node_at_20_hz_through_5_s_without_input_and_sigterm" \
        in names


@pytest.mark.parametrize("name", check_names())
def test_on_real_rclpy(results: dict[str, list[tuple[str, str]]], name: str) -> None:
    cases = results.get(name)
    assert cases, (f"{name} did not run in the venv (collection error?):\n"
                   f"{results['(output)'][0][1]}")
    bad = [detail for outcome, detail in cases if outcome in ("failure", "error")]
    assert not bad, "\n\n".join(bad)
    skipped = [detail for outcome, detail in cases if outcome == "skipped"]
    if skipped:
        _not_here("\n".join(skipped))
