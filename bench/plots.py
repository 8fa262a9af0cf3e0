"""The scale curves as PNG files (matplotlib, the ``bench`` extra), axes labelled with units."""

from __future__ import annotations

import math
from pathlib import Path

from bench.curves import Curve

PLOTS = Path(__file__).resolve().parents[1] / "docs" / "performance"


def plot_all(curves: list[Curve], folder: Path = PLOTS) -> list[Path]:
    """One PNG per curve in ``folder``; the paths written."""
    import matplotlib  # noqa: PLC0415 - optional: only the benchmark draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for curve in curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        xs = [p.x for p in curve.points]
        if curve.key == "auditor":
            ax.plot(xs, [p.extra["seconds"] for p in curve.points], "o-", label="replay time")
            ax.set_ylabel("auditor replay time (s)")
            ax.set_ylim(bottom=0)  # linear axes: a linear cost is a straight line
            ax2 = ax.twinx()
            ax2.plot(
                xs,
                [p.extra["peak_rss_mib"] for p in curve.points],
                "s--",
                color="tab:red",
                label="peak RSS",
            )
            ax2.set_ylabel("auditor peak RSS (MiB)")
            ax2.set_ylim(bottom=0)
            lines = ax.get_lines() + ax2.get_lines()
            ax.legend(lines, [str(line.get_label()) for line in lines], loc="lower right")
        else:
            pub = [p.publish_us for p in curve.points]
            if not all(math.isnan(v) for v in pub):
                ax.plot(xs, pub, "o-", label="publish (seal + send)")
            ax.plot(xs, [p.consume_us for p in curve.points], "s-", label="consume (into SQLite)")
            ax.set_ylabel("cost per record (µs)")
            ax.legend(loc="upper left")
        if curve.log_x:
            ax.set_xscale("log")
        if curve.key != "auditor":
            ax.set_ylim(bottom=0)
        ax.set_xlabel(curve.x_label)
        ax.set_title(curve.title, fontsize=10)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = folder / f"curve-{curve.key}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
