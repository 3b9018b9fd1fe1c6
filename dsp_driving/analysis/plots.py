"""Small helpers for reports: CSV tables and matplotlib figures, written atomically; numbers
read from status text and formatted for markdown.

Figures use matplotlib's object API with the Agg canvas (no pyplot state, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import io
import math
from pathlib import Path
from typing import Any

from dsp_driving.io_utils import atomic_write, atomic_write_text


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """One CSV with a header row (non-finite numbers as empty cells)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v
                         for v in row])
    return atomic_write_text(path, buf.getvalue())


def figure(rows: int = 1, cols: int = 1, width: float = 8.0, height: float = 3.0) -> Any:
    """A matplotlib Figure of ``rows`` x ``cols`` axes (each ``height`` inches tall)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * rows), layout="constrained")
    fig.subplots(rows, cols, squeeze=False)
    return fig


def save_png(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Render ``fig`` to a PNG file atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (NaN for no values)."""
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else math.nan


def number(text: str | None, default: float) -> float:
    """A status value as a number (``default`` when absent or not a number)."""
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def fmt(x: float | None, spec: str = ".2f") -> str:
    """A figure for markdown: ``format(x, spec)``, "n/a" when None or not finite."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) \
        else format(x, spec)
