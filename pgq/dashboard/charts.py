"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched by the browser.

``line_chart`` draws one polyline per series over the last hour (x: minutes
ago, right is now); ``stacked_bars`` draws one horizontal bar per label, cut
into coloured parts. Both return markup safe to put in a template; every text
in it is escaped. Which figures to draw is the pages' (``pgq.dashboard.app``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

#: Colours of the series, in order (and of the statuses, by name).
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")
STATUS_COLOURS = {"waiting": "#9ca3af", "queued": "#2563eb", "running": "#16a34a", "retrying": "#ea580c",
                  "dead": "#dc2626"}


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _legend(x: float, y: float, name: str, colour: str) -> str:
    """A colour swatch and its name (the stylesheet greys text, so the colour is the swatch's)."""
    return (f'<rect class="swatch" x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{x + 14}" y="{y + 1}">{escape(name)}</text>')


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, unit: str = "",
               minutes: int = 60, width: int = 560, height: int = 180, y_max: float | None = None) -> Markup:
    """One line per series of ``(minutes ago, value)`` points; an empty chart says "no data"."""
    left, right, top, bottom = 48, 10, 22, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for points in series.values() for _, v in points]
    peak = y_max if y_max is not None else max(values, default=0.0)
    peak = peak if peak > 0 else 1.0
    parts = [f'<svg class="chart line-chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" aria-label="{escape(title)}">',
             f'<text class="chart-title" x="{left}" y="14">{escape(title)}</text>',
             f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
             f'<text class="tick" x="{left - 4}" y="{top + 4}" text-anchor="end">{_number(peak)}{escape(unit)}</text>',
             f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
             f'<text class="tick" x="{left}" y="{height - 6}">-{minutes} min</text>',
             f'<text class="tick" x="{left + plot_w}" y="{height - 6}" text-anchor="end">now</text>']
    if not values:
        parts.append(f'<text class="no-data" x="{left + plot_w / 2}" y="{top + plot_h / 2}" '
                     'text-anchor="middle">no data in the last hour</text>')
    for index, (name, points) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(
            f"{left + plot_w * (1 - min(ago, minutes) / minutes):.1f},{top + plot_h * (1 - min(v, peak) / peak):.1f}"
            for ago, v in sorted(points, key=lambda p: -p[0]))
        if coords:
            parts.append(f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{colour}" '
                         f'stroke-width="2" points="{coords}"/>')
        parts.append(_legend(left + 8 + 120 * (index % 4), top + 12 + 14 * (index // 4), name, colour))
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bars(bars: Mapping[str, Mapping[str, float]], *, title: str, colours: Mapping[str, str] = STATUS_COLOURS,
                 width: int = 560, bar_height: int = 18) -> Markup:
    """One horizontal bar per label, its parts in ``colours``' order, scaled to the longest bar."""
    left, top = 120, 22
    plot_w = width - left - 60
    height = top + (bar_height + 6) * max(len(bars), 1) + 20
    longest = max((sum(parts.values()) for parts in bars.values()), default=0.0) or 1.0
    out = [f'<svg class="chart bar-chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" aria-label="{escape(title)}">',
           f'<text class="chart-title" x="0" y="14">{escape(title)}</text>']
    if not bars:
        out.append(f'<text class="no-data" x="{width / 2}" y="{top + 14}" text-anchor="middle">nothing to run</text>')
    for row, (label, parts) in enumerate(bars.items()):
        y = top + row * (bar_height + 6)
        out.append(f'<text class="tick" x="{left - 6}" y="{y + bar_height - 5}" text-anchor="end">{escape(label)}</text>')
        x = float(left)
        for name, colour in colours.items():
            value = parts.get(name, 0)
            if value <= 0:
                continue
            w = max(plot_w * value / longest, 1.0)
            out.append(f'<rect class="bar" data-part="{escape(name)}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                       f'height="{bar_height}" fill="{colour}"><title>{escape(name)}: {_number(value)}</title></rect>')
            x += w
        out.append(f'<text class="tick" x="{x + 4:.1f}" y="{y + bar_height - 5}">{_number(sum(parts.values()))}</text>')
    legend_y = height - 6
    for index, (name, colour) in enumerate(colours.items()):
        out.append(_legend(left + 75 * index, legend_y, name, colour))
    out.append("</svg>")
    return Markup("".join(out))
