"""A matplotlib Figure as pixels: shared by the callbacks' plots and the health timeline, which
sits below the callbacks (`health/` imports nothing from `callbacks/`)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def figure_image(fig: Figure) -> np.ndarray:
    """A matplotlib Figure rendered as an (H, W, 3) uint8 array.

    Callbacks build bare `Figure`s, never through pyplot: nothing switches the process's backend
    (a notebook that trains keeps showing its own plots inline) and nothing needs closing."""
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
