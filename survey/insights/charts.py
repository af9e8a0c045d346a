"""Charts as inline SVG, drawn on the server: no script, nothing for the CSP
to refuse (presentation attributes, no style), and always with a text
alternative; the numbers are in a table beside each chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

#: One colour per series, in order (distinct for common colour blindness).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
)

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 260, 36, 40, 10


def stacked_bars(
    title: str,
    columns: Sequence[str],
    series: Mapping[str, Sequence[int]],
    labels: Mapping[str, str],
) -> Markup:
    """Return an SVG of one bar per column, stacked by series, with ``title``
    as its accessible name and a legend; ``series`` maps a key to one value
    per column, ``labels`` a key to its name."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(columns))]
    top = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(columns), 1)
    bar = step * 0.7
    height = HEIGHT + 22 * ((len(series) + 2) // 3)  # room for the legend
    base = TOP + plot_h
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - 8}" y2="{base}" stroke="#444"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="11">'
        f"{top}</text>",
        f'<text x="{LEFT - 4}" y="{base}" text-anchor="end" font-size="11">0</text>',
    ]
    for i, column in enumerate(columns):
        x = LEFT + i * step + (step - bar) / 2
        y = float(base)
        for (_key, values), colour in zip(series.items(), PALETTE, strict=False):
            size = values[i] / top * plot_h
            if size:
                y -= size
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}"'
                    f' height="{size:.1f}" fill="{colour}"/>'
                )
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle"'
            f' font-size="10">{escape(column[2:])}</text>'
        )
    for n, (key, colour) in enumerate(zip(series, PALETTE, strict=False)):
        lx, ly = LEFT + (n % 3) * 230, HEIGHT + 22 * (n // 3)
        parts.append(
            f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{ly}" font-size="11">{escape(labels[key])}</text>'
        )
    parts.append("</svg>")
    # Every text in it went through escape() above; the rest are numbers.
    return Markup("".join(parts))  # noqa: S704
