"""bench/plot_runs.py: the per-tenth table of training return and actor size, the plot."""

import importlib.util
import json
from pathlib import Path

import yaml

_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "plot_runs.py"


def _plot_runs():
    spec = importlib.util.spec_from_file_location("plot_runs", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trial(root: Path, variant: str, seed: int, returns: list, neurons: list) -> Path:
    """A sweep trial folder with a stats.jsonl of len(returns) updates over the whole run."""
    run = root / "walker2d" / variant / f"seed{seed}"
    run.mkdir(parents=True)
    n = len(returns)
    rows = [{"step": 100 * (i + 1), "progress": (i + 1) / n, "ep_return_mean": r,
             "actor": {"neurons_alive": k, "weights_alive": k, "weights_total": 512}}
            for i, (r, k) in enumerate(zip(returns, neurons))]
    (run / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"pruning": {"enabled": variant != "dense"}, "train": {"seed": seed}}))
    return run


def test_tenths_csv_means_each_tenth_and_keeps_the_last_size(tmp_path):
    plot_runs = _plot_runs()
    returns = [float(i) for i in range(20)]  # two updates per tenth
    returns[5] = None  # update 6 logged no return: its tenth's mean is update 5's alone
    neurons = [512 - 10 * i for i in range(20)]
    run = plot_runs.load(_trial(tmp_path, "dsp", 2, returns, neurons))
    assert run["name"] == "dsp/seed2" and run["variant"] == "dsp" and run["seed"] == 2
    lines = plot_runs.tenths_csv([run]).splitlines()
    assert lines[0] == "run,variant,seed,progress_to,train_return_mean,actor_neurons"
    assert len(lines) == 11
    assert lines[1] == "dsp/seed2,dsp,2,0.1,0.5,502"
    assert lines[3] == "dsp/seed2,dsp,2,0.3,4.0,462"
    assert lines[10] == "dsp/seed2,dsp,2,1.0,18.5,322"


def test_main_writes_the_plot_and_the_table(tmp_path, monkeypatch, capsys):
    plot_runs = _plot_runs()
    runs = [_trial(tmp_path, v, 1, [1.0] * 10, [512] * 10) for v in ("dense", "dsp")]
    out, csv = tmp_path / "curves.png", tmp_path / "curves.csv"
    monkeypatch.setattr("sys.argv", ["plot_runs.py", *map(str, runs), "--out", str(out),
                                     "--csv", str(csv)])
    plot_runs.main()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = csv.read_text().splitlines()
    assert len(rows) == 21 and rows[1].startswith("dense/seed1,dense,1,0.1,1.0,512")
    assert "dsp/seed1: dsp seed 1" in capsys.readouterr().out
