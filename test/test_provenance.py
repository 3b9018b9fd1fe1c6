"""git_commit: the commit of the checkout the package runs from, or None."""

from __future__ import annotations

from pathlib import Path
import shutil
import subprocess

import pytest

from dsp_driving.provenance import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A throwaway repository laid out like ours: <repo>/dsp_driving/."""
    repo = tmp_path / "repo"
    (repo / "dsp_driving").mkdir(parents=True)
    (repo / "dsp_driving" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return repo


def test_clean_checkout_gives_head(checkout: Path) -> None:
    assert git_commit(checkout / "dsp_driving") == _git(checkout, "rev-parse", "HEAD")


def test_local_changes_mark_it_dirty(checkout: Path) -> None:
    (checkout / "dsp_driving" / "a.py").write_text("x = 2\n")
    assert git_commit(checkout / "dsp_driving") == _git(checkout, "rev-parse", "HEAD") + "+dirty"
    (checkout / "dsp_driving" / "a.py").write_text("x = 1\n")
    (checkout / "dsp_driving" / "new_module.py").write_text("")  # untracked code counts too
    assert git_commit(checkout / "dsp_driving").endswith("+dirty")


def test_package_elsewhere_in_some_repository_is_unknown(checkout: Path) -> None:
    installed = checkout / "install" / "lib" / "dsp_driving"  # e.g. a colcon install
    installed.mkdir(parents=True)
    assert git_commit(installed) is None


def test_outside_any_repository_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "dsp_driving").mkdir()
    assert git_commit(tmp_path / "dsp_driving") is None


def test_this_package() -> None:
    source = Path(__file__).resolve().parents[1] / "dsp_driving"
    commit = git_commit()
    if not (source.parent / ".git").exists():
        assert commit is None
    else:
        assert commit.split("+")[0] == _git(source.parent, "rev-parse", "HEAD")
