"""PNG plots: requests per second against the limit, and rows written over time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt

from bench.measures import per_second


@dataclass
class RunPlot:
    title: str
    t0: float  # epoch seconds of the run's start; every series is relative to it
    limit: float
    accepted_at: Sequence[float] = ()
    rejected_at: Sequence[float] = ()
    rows_t: Sequence[float] = ()  # seconds since t0
    rows: Mapping[str, Sequence[int]] = field(default_factory=dict)
    rss_t: Sequence[float] = ()
    rss_mib: Sequence[float] = ()
    events: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)


def draw(plot: RunPlot, path: Path) -> None:
    panels = 2 + bool(plot.rss_mib) + bool(plot.events)
    fig, axes = plt.subplots(panels, 1, figsize=(10, 3 * panels), sharex=True)
    end = max([*plot.accepted_at, *plot.rejected_at, plot.t0], default=plot.t0) - plot.t0
    end = max(end, plot.rows_t[-1] if plot.rows_t else 0.0)
    seconds = max(1, math.ceil(end))
    xs = list(range(seconds))

    ax = axes[0]
    ax.step(
        xs,
        per_second(plot.accepted_at, plot.t0, seconds),
        where="post",
        label="accepted / s (simulator)",
    )
    if plot.rejected_at:
        ax.step(
            xs,
            per_second(plot.rejected_at, plot.t0, seconds),
            where="post",
            color="tab:red",
            label="rejected 4000004 / s",
        )
    ax.axhline(
        plot.limit,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"limit {plot.limit:g} / s (any sliding second)",
    )
    ax.set_ylabel("requests / s")
    ax.set_ylim(0, plot.limit * 1.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(plot.title)

    ax = axes[1]
    for label, values in plot.rows.items():
        ax.plot(plot.rows_t, values, label=label)
    ax.set_ylabel("records written")
    if len(plot.rows) > 1:
        ax.legend(loc="upper left", fontsize=8)
    i = 2
    if plot.rss_mib:
        ax = axes[i]
        ax.plot(plot.rss_t, plot.rss_mib, color="tab:purple")
        ax.set_ylabel("engine RSS (MiB)")
        ax.set_ylim(0, max(plot.rss_mib) * 1.2)
        i += 1
    if plot.events:
        ax = axes[i]
        for label, points in plot.events.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], "o", label=label)
        ax.set_ylabel("latency (s)")
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("seconds since start")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass
class Series:
    """One client's run for a side-by-side plot; times are epoch, ``rows_t`` relative."""

    label: str
    t0: float
    accepted_at: Sequence[float]
    rejected_at: Sequence[float]
    rows_t: Sequence[float]
    rows: Sequence[int]


def draw_compare(title: str, runs: Sequence[Series], limit: float, path: Path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for run in runs:
        end = max([*run.accepted_at, *run.rejected_at, run.t0]) - run.t0
        seconds = max(1, math.ceil(end))
        xs = list(range(seconds))
        axes[0].step(
            xs, per_second(run.accepted_at, run.t0, seconds), where="post", label=run.label
        )
        axes[1].step(
            xs, per_second(run.rejected_at, run.t0, seconds), where="post", label=run.label
        )
        axes[2].plot(run.rows_t, run.rows, label=run.label)
    axes[0].axhline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g}/s")
    axes[0].set_ylabel("accepted / s")
    axes[0].set_ylim(0, limit * 1.3)
    axes[0].set_title(title)
    axes[1].set_ylabel("rejected 4000004 / s")
    axes[2].set_ylabel("orders fetched")
    axes[2].set_xlabel("seconds since each client's start")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_bars(
    title: str,
    groups: Mapping[str, Mapping[str, float]],
    ylabel: str,
    path: Path,
    *,
    limit: float | None = None,
) -> None:
    """Grouped bars: ``groups[group][series] = value`` (scenarios without a time series)."""
    names = list(groups)
    series = sorted({s for g in groups.values() for s in g})
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, s in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(names))]
        ax.bar(xs, [groups[g].get(s, 0.0) for g in names], width, label=s)
    if limit is not None:
        ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g}")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
