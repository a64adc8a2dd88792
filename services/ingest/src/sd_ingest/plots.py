"""PNG plots of a dataset version's statistics (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COMMAND_NAMES = {"-1": "VOID", "1": "LEFT", "2": "RIGHT", "3": "STRAIGHT", "4": "LANEFOLLOW",
                 "5": "CHANGELANELEFT", "6": "CHANGELANERIGHT"}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No timestamps in the file: the same statistics give the same bytes.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _histogram(title: str, xlabel: str, hist: dict, color: str) -> bytes:
    edges, counts = hist["edges"], hist["counts"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=color, edgecolor="white", linewidth=0.5)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frames")
    fig.tight_layout()
    return _png(fig)


def render_plots(stats: dict) -> dict[str, bytes]:
    """File name → PNG bytes for the commands, speed, steer and split plots of ``stats``."""
    plots = {}
    commands = stats["command_histogram"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = sorted(commands, key=int)
    ax.bar([COMMAND_NAMES.get(k, k) for k in keys], [commands[k] for k in keys], color="#4c72b0")
    ax.set_title("Navigation commands")
    ax.set_ylabel("frames")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    plots["commands.png"] = _png(fig)
    plots["speed.png"] = _histogram("Speed", "speed (m/s)", stats["speed_histogram_mps"], "#55a868")
    plots["steer.png"] = _histogram("Steering", "steer (-1 left … 1 right)", stats["steer_histogram"], "#c44e52")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    splits = stats["splits"]
    names = list(splits)
    ax.bar(names, [splits[n]["hours"] * 60 for n in names], color=["#4c72b0", "#dd8452"][: len(names)])
    for i, n in enumerate(names):
        ax.annotate(f"{splits[n]['segments']} segments\n{splits[n]['sessions']} sessions",
                    (i, splits[n]["hours"] * 60), ha="center", va="bottom", fontsize=8)
    ax.set_title("Train / validation split (by session)")
    ax.set_ylabel("minutes")
    ax.margins(y=0.3)
    fig.tight_layout()
    plots["split.png"] = _png(fig)
    return plots
