"""Atomic writes: all or nothing, no temp files left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsp_driving.io_utils import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, error: type) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old contents")

    def half_write(f) -> None:
        f.write(b"new, partial")
        raise error("writer failed")

    with pytest.raises(error, match="writer failed"):
        atomic_write(path, half_write)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_successful_writes_replace_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.txt"
    atomic_write(path, lambda f: f.write(b"abc"))
    assert path.read_bytes() == b"abc"
    atomic_write_text(path, "replaced\n")
    assert path.read_bytes() == b"replaced\n"
    json_path = atomic_write_json(tmp_path / "s.json", {"a": 1, "b": [1.5]})
    assert json_path.read_text() == '{\n  "a": 1,\n  "b": [\n    1.5\n  ]\n}\n'
    pt = atomic_torch_save(tmp_path / "t.pt", {"x": torch.arange(3)})
    assert torch.equal(torch.load(pt, weights_only=True)["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "sub", "t.pt"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.txt"]
    assert json.loads(json_path.read_text()) == {"a": 1, "b": [1.5]}
