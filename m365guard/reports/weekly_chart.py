"""The weekly page's trend chart: new findings per check per week, as an inline SVG.

Why its own module: the chart must not claim what was never measured. Weeks before monitoring
began are shaded and labelled "not monitored yet" (no points drawn, never a zero), and the week
in progress is labelled so, because its count is still growing. matplotlib without pyplot
state, with a fixed hash salt, so the same data always draws the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import pandas as pd

IN_PROGRESS = "in progress"


def trend_svg(trend: pd.DataFrame, rule_titles: Mapping[str, str], *,
              in_progress: bool = False) -> str:
    """`trend` is weekly_trend(): rows are week labels, NaN rows were not monitored."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "m365guard"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, smaller
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7.2, 2.3), dpi=100)
    axes = figure.add_subplot()
    positions = list(range(len(trend.index)))
    watched = [pos for pos, label in enumerate(trend.index) if not trend.loc[label].isna().all()]
    first = watched[0] if watched else len(positions)
    for rule in trend.columns:
        values = trend[rule].tolist()
        axes.plot(positions[first:], values[first:], marker="o", markersize=3,
                  label=rule_titles.get(rule, rule))
    top = max(1.0, float(trend.max().max()) if watched and len(trend.columns) else 1.0)
    if first > 0:
        axes.axvspan(-0.5, first - 0.5, color="#eeeeee", zorder=0)
        axes.text((first - 1) / 2, top * 0.5, "not monitored yet", ha="center", va="center",
                  color="#555555", fontsize=8)
    labels = [label.split("-")[1] for label in trend.index]
    if in_progress and labels:
        labels[-1] += f"\n({IN_PROGRESS})"
    axes.set_xticks(positions, labels, fontsize=7)
    axes.set_xlim(-0.5, len(positions) - 0.5)
    axes.set_ylabel("new findings", fontsize=8)
    axes.set_ylim(bottom=0, top=top * 1.15)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(axis="y", labelsize=7)
    axes.grid(alpha=0.3)
    if len(trend.columns) and watched:
        axes.legend(fontsize=7, loc="upper left", frameon=False)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
