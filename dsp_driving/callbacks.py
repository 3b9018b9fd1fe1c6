"""Stats sinks: a small callback interface the training loop calls once per update."""

from __future__ import annotations

from collections.abc import Sequence
import json
from pathlib import Path
from typing import Any, Protocol
import warnings

from dsp_driving.io_utils import json_safe
from dsp_driving.stats import UpdateStats


class Callback(Protocol):
    """Anything that wants the per-update stats (JSONL file, TensorBoard, ROS topics, bags)."""

    def on_update(self, stats: UpdateStats) -> None:
        """Called after every PPO update with its stats record."""

    def on_export(self, path: Path) -> None:
        """Called after each ONNX export (snapshots and the final policy.onnx)."""

    def on_end(self, summary: dict[str, Any]) -> None:
        """Called once with summary.json's content when training has finished."""

    def close(self) -> None:
        """Release resources; called once, also when training fails."""


class BaseCallback:
    """No-op defaults, so a sink implements only what it needs."""

    def on_update(self, stats: UpdateStats) -> None:
        """Ignore."""

    def on_export(self, path: Path) -> None:
        """Ignore."""

    def on_end(self, summary: dict[str, Any]) -> None:
        """Ignore."""

    def close(self) -> None:
        """Nothing to release."""


class JsonlSink(BaseCallback):
    """Writes one JSON object per update to RUN_DIR/stats.jsonl (non-finite -> null)."""

    def __init__(self, path: str | Path, append: bool = True) -> None:
        self.path = Path(path)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")

    def on_update(self, stats: UpdateStats) -> None:
        self._file.write(json.dumps(json_safe(stats), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def flatten(stats: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested stats -> {'actor/neurons_alive': 12.0, 'actor/layers0/alive': 6.0, ...}."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out.update(flatten(item, f"{name}{i}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class TensorBoardSink(BaseCallback):
    """TensorBoard scalars (CleanRL-style prefixes) when tensorboard is installed."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """``purge_step``: on resume, drop events logged after the checkpoint."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed: no TensorBoard scalars are written",
                          stacklevel=2)
            self.writer = None
            return
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def on_update(self, stats: UpdateStats) -> None:
        if self.writer is None:
            return
        step = stats["step"]
        for name, value in flatten(stats).items():
            if name in ("step", "update"):
                continue
            group = name.split("/")[0]
            tag = name if group in ("actor", "critic", "losses") else f"charts/{name}"
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(BaseCallback):
    """tqdm progress bar over environment steps with return and alive neurons."""

    def __init__(self, total_steps: int, initial: int = 0, desc: str = "train") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=initial, desc=desc, unit="step",
                        dynamic_ncols=True, smoothing=0.1)

    def on_update(self, stats: UpdateStats) -> None:
        self.bar.update(stats["step"] - self.bar.n)
        ret = stats.get("ep_return_mean")
        actor = stats["actor"]
        self.bar.set_postfix(ret="-" if ret is None else f"{ret:.1f}",
                             actor=f"{actor['neurons_alive']}/{actor['neurons_total']}",
                             refresh=False)

    def close(self) -> None:
        self.bar.close()


class CallbackList(BaseCallback):
    """Fans every call out to several callbacks."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_update(self, stats: UpdateStats) -> None:
        for cb in self.callbacks:
            cb.on_update(stats)

    def on_export(self, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_export(path)

    def on_end(self, summary: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_end(summary)

    def close(self) -> None:
        for cb in self.callbacks:
            cb.close()
