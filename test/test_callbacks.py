"""Stats sinks: JSONL lines (non-finite -> null) and flattened scalar names."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dsp_driving.callbacks import CallbackList, JsonlSink, flatten


def test_jsonl_sink_writes_null_for_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "stats.jsonl"
    sink = JsonlSink(path)
    sink.on_update({"update": 1, "explained_variance": float("nan"),
                    "losses": {"value": float("inf"), "policy": 0.5},
                    "list": [1.0, -math.inf], "ep_return_mean": None})
    sink.on_update({"update": 2, "x": 1.25})
    sink.close()
    assert path.read_bytes() == (
        b'{"update": 1, "explained_variance": null, "losses": {"value": null, "policy": 0.5}, '
        b'"list": [1.0, null], "ep_return_mean": null}\n'
        b'{"update": 2, "x": 1.25}\n'
    )
    # The sink appends (resume keeps earlier lines).
    again = JsonlSink(path)
    again.on_update({"update": 3})
    again.close()
    assert [json.loads(line)["update"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_flatten_stats_record() -> None:
    stats = {
        "step": 512,
        "update": 1,
        "kappa": 0.25,
        "actor": {"layers": [{"alive": 3, "total": 4, "threshold": 0.5},
                             {"alive": 2, "total": 4, "threshold": 0.0}],
                  "neurons_alive": 5, "R": 1.5},
        "losses": {"policy": -0.1, "value": 2.0},
        "hidden": [16, 16],  # plain lists carry no scalar
        "ep_return_mean": None,  # not a number yet
        "flag": True,  # booleans are not scalars
        "name": "CartPole-v1",
    }
    assert flatten(stats) == {
        "step": 512.0, "update": 1.0, "kappa": 0.25,
        "actor/layers0/alive": 3.0, "actor/layers0/total": 4.0, "actor/layers0/threshold": 0.5,
        "actor/layers1/alive": 2.0, "actor/layers1/total": 4.0, "actor/layers1/threshold": 0.0,
        "actor/neurons_alive": 5.0, "actor/R": 1.5,
        "losses/policy": -0.1, "losses/value": 2.0,
    }


def test_callback_list_fans_out() -> None:
    seen: list[tuple[str, int]] = []

    class Recorder:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on_update(self, stats: dict) -> None:
            seen.append((self.tag, stats["update"]))

        def on_end(self, summary: dict) -> None:
            seen.append((self.tag, -1))

        def close(self) -> None:
            seen.append((self.tag, 0))

    cbs = CallbackList([Recorder("a"), Recorder("b")])
    cbs.on_update({"update": 7})
    cbs.on_end({})
    cbs.close()
    assert seen == [("a", 7), ("b", 7), ("a", -1), ("b", -1), ("a", 0), ("b", 0)]
