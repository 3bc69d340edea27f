"""The report's figures as small, self-contained SVG (paper Figures 1-4 and Table 3's heatmap).

Every function takes the plain dicts of the report context (``torchreid_shapley.report``) and
returns SVG text; nothing here reads records or computes values except the marginal contributions
of Figure 3, which come from :func:`torchreid_shapley.shapley.marginals` on the context's
coalition values.

matplotlib is imported inside the functions (``import torchreid_shapley`` stays fast) and is driven
through :class:`matplotlib.figure.Figure` directly, never pyplot, so no global backend or figure
registry is touched. Text stays text (``svg.fonttype = 'none'``, XML-escaped by matplotlib, generic
sans-serif), so the SVG is small and needs no font file. :func:`clean_svg` removes the XML
declaration, DOCTYPE, metadata and comments, gives every ``id`` a per-figure prefix (several
figures share one HTML page) and, for inline use, drops the namespace declarations, which HTML5
inline SVG does not need.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping

#: Colours: positive contributions blue, negative orange (distinguishable without red/green).
POSITIVE = "#2563eb"
NEGATIVE = "#ea580c"
NEUTRAL = "#6b7280"
IN_COLOUR = "#2563eb"
OUT_COLOUR = "#f59e0b"
FIT_COLOUR = "#111827"
#: Player colours (consistent across a section's figures); cycled for more players.
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04",
           "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0d9488")

#: Above this many points per panel the scatter plots are thinned (accuracy vs images) or
#: summarised per (train-set, coalition size) as mean and min..max (marginal contributions).
MAX_POINTS = 600
MAX_MARGINAL_POINTS = 256

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "torchreid-shapley",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "xtick.color": "#374151",
    "ytick.color": "#374151",
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "path.simplify": True,
}

_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^)"]+)')
_STRIP = (
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*", re.S),
    re.compile(r"\s*<metadata>.*?</metadata>", re.S),
    re.compile(r"<!--.*?-->", re.S),
)
_NAMESPACES = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_SIZE = re.compile(r'<svg([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"')


def clean_svg(svg: str, *, prefix: str, inline: bool = True) -> str:
    """Strip matplotlib's SVG down to the drawing; ids get ``prefix`` (unique per page)."""
    for pattern in _STRIP:
        svg = pattern.sub("", svg)
    ids = set(_ID.findall(svg))
    if ids:
        svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"' if m.group(1) in ids else m.group(0), svg)
        svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}" if m.group(2) in ids else m.group(0), svg)
    if inline:
        svg = _NAMESPACES.sub("", svg)
        # pt -> px keeps the natural size; CSS max-width:100% scales it down on narrow screens.
        svg = _SIZE.sub(lambda m: (f'<svg{m.group(1)} width="{float(m.group(2)) * 4 / 3:.0f}" '
                                   f'height="{float(m.group(3)) * 4 / 3:.0f}" class="figure-svg" '
                                   'role="img"'), svg, count=1)
    return svg.strip() + "\n"


class FigurePool:
    """Reuses one matplotlib figure per layout across the many figures of a report.

    Creating axes and their tick objects is a large share of matplotlib's cost per figure; the
    pool keeps them and swaps only what is drawn (artists, limits, labels). One pool per report;
    not thread-safe. Every figure function creates its own pool when given none.
    """

    def __init__(self) -> None:
        self._figures: dict[str, tuple[Any, list]] = {}

    def get(self, layout: str, *, ncols: int, width: float, height: float):
        entry = self._figures.get(layout)
        if entry is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(width, height), dpi=72)
            axes = fig.subplots(1, ncols, squeeze=False)[0].tolist()
            self._figures[layout] = (fig, axes)
            return fig, axes
        fig, axes = entry
        fig.set_size_inches(width, height)
        for ax in axes:
            for artist in (*ax.collections, *ax.lines, *ax.texts, *ax.patches):
                artist.remove()
            if ax.legend_ is not None:
                ax.legend_.remove()
            ax.set_axis_on()
            ax.relim()  # data limits from nothing: the new artists set them
            ax.set_autoscale_on(True)
        for legend in list(fig.legends):
            legend.remove()
        return fig, axes


def _render(fig, *, prefix: str, inline: bool) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return clean_svg(buf.getvalue(), prefix=prefix, inline=inline)


class _rc:
    """matplotlib's rc_context, imported lazily."""

    def __enter__(self):
        import matplotlib

        self._ctx = matplotlib.rc_context(_RC)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def short_number(x: float) -> str:
    """12,345 -> '12.3k', 1,303,800 -> '1.30M', 0.5 -> '0.5' (cell labels of the heatmap)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}k"
    if ax >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _thin(indices: list[int], limit: int) -> list[int]:
    if len(indices) <= limit:
        return indices
    step = len(indices) / limit
    return [indices[int(k * step)] for k in range(limit)]


def _axis_number(x: float, _pos=None) -> str:
    """Tick labels without mathtext (mathtext parsing dominates matplotlib's SVG time)."""
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:g}M"
    if ax >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


def _style(ax, *, x: str = "linear", y: str = "linear", title: str | None = None) -> None:
    """Few ticks, plain-text labels, no minor ticks, title as plain text (cheap to lay out)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    for axis, kind in ((ax.xaxis, x), (ax.yaxis, y)):
        if kind == "log":
            axis.set_major_locator(LogLocator(base=10, numticks=6))
        elif kind == "integer":
            axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        elif kind != "fixed":
            axis.set_major_locator(MaxNLocator(nbins=5))
        axis.set_minor_locator(NullLocator())
        if kind != "fixed":
            axis.set_major_formatter(FuncFormatter(_axis_number))
    if title:
        ax.text(0.0, 1.03, title, transform=ax.transAxes, fontsize=9, ha="left", va="bottom",
                color="#374151")


# -- Figures 1-2: accuracy against images ------------------------------------------------------
def accuracy_svg(section: Mapping[str, Any], *, prefix: str = "f", inline: bool = True,
                 pool: FigurePool | None = None) -> str:
    """Accuracy of every coalition against its training images, linear and log x, with the fit.

    Points are coloured by whether ``section["highlight"]`` (the largest train-set) is in the
    coalition; the untrained model (0 images) appears on the linear panel only.
    """
    import numpy as np

    coalitions = [c for c in section["coalitions"] if c["linear"] is not None]
    metric = section["metric"]
    highlight = section.get("highlight")
    fit = section.get("fit")
    with _rc():
        fig, axes = (pool or FigurePool()).get("accuracy", ncols=2, width=8.6, height=3.0)
        shown = _thin(list(range(len(coalitions))), MAX_POINTS)
        groups = {True: ([], []), False: ([], [])}
        for k in shown:
            c = coalitions[k]
            key = highlight in c["train_sets"] if highlight else True
            groups[key][0].append(c["images"])
            groups[key][1].append(c["linear"])
        full = section["coalitions"][-1] if section["coalitions"] else None
        for ax, log in zip(axes, (False, True)):
            for key, colour in ((True, IN_COLOUR), (False, OUT_COLOUR)):
                xs, ys = groups[key]
                if log:
                    pairs = [(x, y) for x, y in zip(xs, ys) if x > 0]
                    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
                if not xs:
                    continue
                if highlight:
                    label = f"with {highlight}" if key else f"without {highlight}"
                else:
                    label = "coalitions"
                ax.scatter(xs, ys, s=13, c=colour, alpha=0.85, linewidths=0, label=label, zorder=3)
            if full is not None and full["linear"] is not None and (full["images"] > 0 or not log):
                ax.scatter([full["images"]], [full["linear"]], s=70, marker="*", c=FIT_COLOUR,
                           linewidths=0, label="all train-sets", zorder=4)
            if fit:
                lo = max(1.0, fit["min_images"] / 1.5)
                hi = fit["max_images"] * 1.1
                xs = np.geomspace(lo, hi, 60)
                ys = fit["alpha"] * (np.log(xs) - math.log(fit["beta"]))
                ax.plot(xs, ys, color=FIT_COLOUR, lw=1.2, ls="--", label="log-curve fit", zorder=2)
            if log:
                ax.set_xscale("log")
            _style(ax, x="log" if log else "linear", title="log scale (data scale)" if log else "linear scale")
            ax.set_xlabel("training images s")
            ax.set_ylabel(metric)
        if axes[1].get_legend_handles_labels()[0]:
            axes[1].legend(loc="lower right")
        if fit:
            text = (f"fit: {metric} = {fit['alpha']:.4g} (ln s \u2212 ln {fit['beta']:.4g}),  "
                    f"R\u00b2 = {fit['r2']:.3f}")
        else:
            text = "no log-curve fit"
        if len(shown) < len(coalitions):
            text += f"  (showing {len(shown)} of {len(coalitions)} coalitions)"
        fig.suptitle(text, fontsize=9, x=0.01, ha="left")
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.16, top=0.84, wspace=0.22)
        return _render(fig, prefix=prefix, inline=inline)


# -- Figure 3: marginal contributions against coalition size -----------------------------------
def marginals_svg(section: Mapping[str, Any], *, prefix: str = "f", inline: bool = True,
                  pool: FigurePool | None = None) -> str:
    """(|S|, v(S) - v(S minus i)) for every train-set i, in linear and in data scale.

    Above :data:`MAX_MARGINAL_POINTS` points per panel, each (train-set, |S|) is summarised by
    its mean (dot) and its min..max range (line).
    """
    import numpy as np

    from .shapley import marginals, popcount

    players = section["players"]
    n = len(players)
    coalitions = section["coalitions"]
    scales = [("linear", section["metric"], "linear scale: \u0394 accuracy")]
    if all(c["data"] is not None for c in coalitions):
        scales.append(("data", "images", "data scale: \u0394 equivalent images"))
    sizes = popcount(n).astype(int)
    summarise = n * (1 << max(n - 1, 0)) > MAX_MARGINAL_POINTS
    offset = {i: (i - (n - 1) / 2) * (0.6 / max(n, 1)) for i in range(n)}
    with _rc():
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D

        columns = min(max(n, 1), 8)
        rows = -(-max(n, 1) // columns)
        height = 2.8 + 0.18 * rows
        fig, axes = (pool or FigurePool()).get("marginals", ncols=2, width=8.6, height=height)
        for ax, (key, unit, title) in zip(axes, scales):
            values = np.array([c[key] for c in coalitions], dtype=float)
            xs, ys, colours, segments = [], [], [], []
            for i in range(n):
                masks, diff = marginals(values, i)
                size = sizes[masks] + 1
                colour = PALETTE[i % len(PALETTE)]
                if summarise:  # one dot (mean) and one line (min..max) per coalition size
                    for k in range(1, n + 1):
                        d = diff[size == k]
                        if d.size:
                            x = k + offset[i]
                            xs.append(x)
                            ys.append(float(d.mean()))
                            colours.append(colour)
                            segments.append(((x, float(d.min())), (x, float(d.max()))))
                else:
                    xs.extend((size + offset[i]).tolist())
                    ys.extend(diff.tolist())
                    colours.extend([colour] * diff.size)
            if segments:
                ax.add_collection(LineCollection(segments, colors=[c for c in colours], linewidths=1.0,
                                                 alpha=0.6))
            ax.scatter(xs, ys, s=14 if summarise else 10, c=colours, linewidths=0, alpha=0.9, zorder=3)
            ax.axhline(0, color="#9ca3af", lw=0.8, zorder=1)
            _style(ax, x="integer", title=title)
            ax.set_xlabel("coalition size |S| (with the train-set)")
            ax.set_ylabel(f"marginal contribution ({unit})")
        if len(scales) == 1:
            axes[1].set_axis_off()
            axes[1].text(0.5, 0.5, "no data scale: the log curve was refused", ha="center",
                         va="center", transform=axes[1].transAxes, color=NEUTRAL)
        handles = [Line2D([], [], ls="", marker="o", markersize=4.5, markeredgewidth=0,
                          color=PALETTE[i % len(PALETTE)], label=p) for i, p in enumerate(players)]
        note = "mean and min..max per coalition size" if summarise else "one point per coalition"
        if handles:
            fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=columns,
                       title=f"train-set ({note})", title_fontsize=8, handletextpad=0.2,
                       columnspacing=1.2, borderaxespad=0.3)
        inch = 1 / height
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.48 * inch, top=1 - (0.55 + 0.17 * rows) * inch,
                            wspace=0.25)
        return _render(fig, prefix=prefix, inline=inline)


# -- Figure 4: waterfall from base to full -----------------------------------------------------
def waterfall_svg(section: Mapping[str, Any], *, prefix: str = "f", inline: bool = True,
                  pool: FigurePool | None = None) -> str:
    """From the base model to the full model in equivalent images, one bar per train-set."""
    val = section["valuation"]
    psi = val["shapley"]["data"]
    base, full = val["base"]["data"], val["full"]["data"]
    order = sorted(psi, key=lambda p: -psi[p])
    labels = ["base"] + order + ["all train-sets"]
    with _rc():
        fig, (ax,) = (pool or FigurePool()).get("waterfall", ncols=1, width=8.6,
                                                height=0.9 + 0.3 * len(labels))
        ax.grid(axis="y", visible=False)
        ax.grid(axis="x", visible=True)
        lefts, widths, colours = [0.0], [base], [NEUTRAL]
        running = base
        for p in order:
            lefts.append(running if psi[p] >= 0 else running + psi[p])
            widths.append(abs(psi[p]))
            colours.append(POSITIVE if psi[p] >= 0 else NEGATIVE)
            running += psi[p]
        lefts.append(0.0)
        widths.append(full)
        colours.append("#111827")
        ys = list(range(len(labels)))
        ax.barh(ys, widths, left=lefts, color=colours, height=0.62)
        span = max(max(l + w for l, w in zip(lefts, widths)), 1e-9)
        for y, (l, w, label) in enumerate(zip(lefts, widths, labels)):
            if 0 < y < len(labels) - 1:
                text = f"{psi[label]:+,.0f}"
            else:
                text = f"{(base if y == 0 else full):,.0f}"
            ax.text(l + w + span * 0.01, y, text, va="center", fontsize=7.5, color="#111827")
        _style(ax, y="fixed")
        ax.set_yticks(ys, labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlim(min(0.0, min(lefts)), span * 1.14)
        ax.set_xlabel("equivalent training images (data scale)")
        fig.suptitle("from the base model to all train-sets: data-scale Shapley values "
                     "(blue adds, orange removes)", fontsize=9, x=0.01, ha="left")
        fig.subplots_adjust(left=0.2, right=0.98, bottom=0.5 / (0.9 + 0.3 * len(labels)) + 0.06,
                            top=1 - 0.35 / (0.9 + 0.3 * len(labels)))
        return _render(fig, prefix=prefix, inline=inline)


# -- Table 3 as a heatmap ----------------------------------------------------------------------
def _diverging():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("shapley", [NEGATIVE, "#fdf2e9", "#ffffff", "#eaf0fd", POSITIVE])


def heatmap_svg(matrix: Mapping[str, Any], *, prefix: str = "f", inline: bool = True,
                pool: FigurePool | None = None) -> str:
    """Rows train-sets and base, columns targets, cells data-scale values.

    Colour is scaled per column (largest absolute cell of the column = full colour) because the
    columns of different targets differ by orders of magnitude; the labels carry the values.
    """
    import numpy as np

    rows = list(matrix["train_sets"])
    targets = list(matrix["targets"])
    block = matrix["data"]
    labels = rows + ["base"]
    grid = np.full((len(labels), len(targets)), np.nan)
    for r, t in enumerate(rows):
        for c, j in enumerate(targets):
            x = block["cells"][t][j]
            grid[r, c] = np.nan if x is None else x
    for c, j in enumerate(targets):
        x = block["base"][j]
        grid[-1, c] = np.nan if x is None else x
    players = np.abs(grid[:-1]) if len(rows) else np.zeros((1, len(targets)))
    with np.errstate(all="ignore"):
        scale = np.nanmax(np.where(np.isfinite(players), players, 0.0), axis=0, initial=0.0)
    scale = np.where(scale > 0, scale, 1.0)
    norm = grid / scale
    norm[-1, :] = np.nan  # the base row is not a contribution: grey, not coloured
    width = 1.6 + 0.95 * max(len(targets), 2)
    height = 0.8 + 0.32 * len(labels)
    with _rc():
        from matplotlib.patches import Rectangle

        fig, (ax,) = (pool or FigurePool()).get("heatmap", ncols=1, width=min(width, 11.0), height=height)
        ax.grid(False)
        masked = np.ma.masked_invalid(norm)
        ax.add_patch(Rectangle((0, len(labels) - 1), len(targets), 1, facecolor="#f3f4f6",
                               edgecolor="#ffffff", linewidth=1.5))
        ax.pcolormesh(masked, cmap=_diverging(), vmin=-1, vmax=1, edgecolors="#ffffff", linewidth=1.5)
        for r in range(len(labels)):
            for c in range(len(targets)):
                x = grid[r, c]
                strong = np.isfinite(norm[r, c]) and abs(norm[r, c]) > 0.75
                ax.text(c + 0.5, r + 0.5, short_number(float(x)), ha="center", va="center",
                        fontsize=7.5, color="#ffffff" if strong else "#111827")
        ax.set_xticks([c + 0.5 for c in range(len(targets))], targets, rotation=30 if len(targets) > 5 else 0,
                      ha="right" if len(targets) > 5 else "center")
        ax.set_yticks([r + 0.5 for r in range(len(labels))], labels)
        ax.set_xlim(0, max(len(targets), 1))
        ax.set_ylim(len(labels), 0)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.xaxis.tick_top()
        fig.subplots_adjust(left=1.3 / min(width, 11.0), right=0.98, bottom=0.05,
                            top=1 - 0.55 / height)
        return _render(fig, prefix=prefix, inline=inline)


def section_figures(section: Mapping[str, Any], *, prefix: str, inline: bool = True,
                    pool: FigurePool | None = None) -> dict[str, str]:
    """The figures a report section can show: accuracy always (if any point), the others when
    the game is complete (marginals) and the data scale exists (waterfall)."""
    pool = pool or FigurePool()
    out: dict[str, str] = {}
    if any(c["linear"] is not None for c in section.get("coalitions", ())):
        out["accuracy"] = accuracy_svg(section, prefix=f"{prefix}a-", inline=inline, pool=pool)
    if section.get("status") == "complete":
        out["marginals"] = marginals_svg(section, prefix=f"{prefix}m-", inline=inline, pool=pool)
        val = section.get("valuation") or {}
        if (val.get("shapley") or {}).get("data") is not None:
            out["waterfall"] = waterfall_svg(section, prefix=f"{prefix}w-", inline=inline, pool=pool)
    return out


FIGURE_TITLES: Mapping[str, str] = {
    "accuracy": "Accuracy against training images (paper Figs. 1-2)",
    "marginals": "Marginal contributions against coalition size (paper Fig. 3)",
    "waterfall": "From base to full in images (paper Fig. 4)",
    "heatmap": "Target matrix heatmap (paper Table 3)",
}

