"""PNG figures written by batch jobs (action histograms, loss curves, the inference check).

Each figure gets an Agg canvas of its own instead of going through pyplot: no display is needed, the caller's
backend is left alone (`matplotlib.use("Agg")` would switch it for a notebook that calls a plotting function), and
nothing has to be closed, since pyplot never registered the figure. matplotlib is imported only when a figure is
made: it costs ~0.5 s, and most runs plot nothing.
"""

from __future__ import annotations

from pathlib import Path

from yume_core.storage import atomic_path


def agg_figure(**kwargs):
    """A `matplotlib.figure.Figure(**kwargs)` drawn on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` as PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
