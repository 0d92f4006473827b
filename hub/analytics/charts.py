"""Charts rendered on the server (matplotlib, SVG), so the dashboard and ``memberhub report --out``
need no front-end build; and the CSV behind every chart."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import font_manager

from hub.analytics.report import ReportTable

_CJK = ("Noto Sans CJK SC", "WenQuanYi Micro Hei", "Source Han Sans SC", "SimHei", "Microsoft YaHei")
_INSTALLED = {font.name for font in font_manager.fontManager.ttflist}
STYLE = {
    "svg.fonttype": "none",  # text stays text: the browser draws 中文 with its own fonts
    "font.family": [*(name for name in _CJK if name in _INSTALLED), "DejaVu Sans"],
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def to_csv(table: ReportTable) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(["" if v is None else v for v in row] for row in table.rows)
    return out.getvalue()


def _numeric(table: ReportTable) -> list[int]:
    return [
        i for i, _ in enumerate(table.columns)
        if table.rows and all(isinstance(r[i], int | float) or r[i] is None for r in table.rows)
        and not isinstance(table.rows[0][i], bool)
    ]  # fmt: skip


def to_svg(table: ReportTable) -> str:
    """The table as a chart: label columns joined on the x axis, numeric columns as series."""
    values = _numeric(table)
    labels = [i for i in range(len(table.columns)) if i not in values]
    if table.name in ("overlap",):
        labels, values = [0], values[1:]
    if table.name == "golden_over_time":
        values = [table.columns.index("total")]
    if table.name == "liability":
        values = [table.columns.index("available"), table.columns.index("pending")]
    if table.name == "purchases_per_tier":
        values = [table.columns.index("repeat_rate")]
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(figsize=(7.5, 3.4), dpi=100)
        xs = [" ".join(str(r[i]) for i in labels) for r in table.rows] or ["-"]
        if not table.rows or not values:
            axes.text(0.5, 0.5, "no data yet / 暂无数据", ha="center", va="center", transform=axes.transAxes)
            axes.set_xticks([])
            axes.set_yticks([])
        elif table.chart == "line":
            for i in values:
                axes.plot(xs, [r[i] or 0 for r in table.rows], marker="o", markersize=3, label=table.columns[i])
        else:
            bottom = [0.0] * len(table.rows)
            stacked = table.chart == "stacked"
            width = 0.8 if stacked else 0.8 / len(values)
            for n, i in enumerate(values):
                heights = [float(r[i] or 0) for r in table.rows]
                positions = list(range(len(xs))) if stacked else [x + n * width for x in range(len(xs))]
                axes.bar(positions, heights, width, bottom=bottom if stacked else None, label=table.columns[i])
                if stacked:
                    bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
            axes.set_xticks([x + (0 if stacked else width * (len(values) - 1) / 2) for x in range(len(xs))], xs)
        if len(xs) > 6:
            axes.tick_params(axis="x", labelrotation=60, labelsize=7)
        if len(values) > 1:
            axes.legend(fontsize=8, frameon=False)
        axes.set_title(table.title, fontsize=10)
        figure.tight_layout()
        out = io.StringIO()
        figure.savefig(out, format="svg")
        plt.close(figure)
    return out.getvalue()


def write(tables: dict[str, ReportTable], directory: Path) -> list[Path]:
    """``name.csv`` and ``name.svg`` for every table; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        for suffix, content in (("csv", to_csv(table)), ("svg", to_svg(table))):
            path = directory / f"{name}.{suffix}"
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return written
