"""The reports' one matplotlib set-up: the Agg backend (plots are files; a run's controller has
no display), chosen before pyplot is first imported.

    from experiments.plots import plt
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt"]
