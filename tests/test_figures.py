"""PNG figures of batch jobs: written whole, and the caller's matplotlib backend left as it was."""

import matplotlib
import pytest

from quantize_actions import action_histogram, plot_action_histogram
from training_stub.train import plot_loss


@pytest.fixture
def svg_backend():
    """A backend other than Agg, as a notebook would have: plotting must not switch it."""
    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    yield
    matplotlib.use(before, force=True)


def test_plots_write_pngs_and_leave_the_backend_alone(tmp_path, svg_backend):
    rows = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(40)]
    hist = action_histogram([["W", "W", "None"], ["S+A"]], [["·", "→", "↑←"], ["·"]])
    written = [
        plot_loss(rows, tmp_path / "loss.png"),
        plot_action_histogram(hist, tmp_path / "actions.png"),
    ]
    assert matplotlib.get_backend() == "svg"
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["actions.png", "loss.png"]  # no temporaries left
