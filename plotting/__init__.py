"""Plots for a person to look at (training curves, trajectories, latency ECDFs): matplotlib set up once.

    from plotting import pyplot
    plt = pyplot()            # None when matplotlib is not installed: callers skip the plot, not the run
    if plt: ...

Headless everywhere (Agg): a training box, CI and a Jetson over SSH have no display.
"""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415  matplotlib: optional (bench, dev extras); None without it
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  after matplotlib.use("Agg")

    return plt
