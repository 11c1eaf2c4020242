"""Charts for /reports, drawn on the server as SVG (pygal) and put in the page as an image.

An `<img src="data:image/svg+xml;base64,…">` needs nothing from a CDN, runs no script (pygal writes
its tooltip settings as an inline script; it is taken out, and an SVG image never runs one anyway)
and passes the pages' Content-Security-Policy (`img-src 'self' data:`). Each chart has a table of the
same numbers next to it, for screen readers and for printing.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Sequence

import pygal
from pygal.style import Style

# pygal appends a legacy import hook (`find_module` only) to serve its optional world-map plugins as
# `pygal.maps.*`; Python then warns (ImportWarning) on every later import. No map is drawn here, so it goes.
sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != "PluginImportFixer"]

_SCRIPT = re.compile(rb"<script\b[^>]*>.*?</script>", re.S)

STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#6b7785",
    colors=("#2f6f9f", "#d08c2b", "#4f8a3c", "#b3261e", "#7b5ea7", "#5f6b76"),
    font_family="'Noto Nastaliq Urdu', 'Noto Naskh Arabic', 'DejaVu Sans', sans-serif",
    title_font_size=18,
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=13,
    value_font_size=12,
)


def _data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(_SCRIPT.sub(b"", svg)).decode("ascii")


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    rtl: bool = False,
    stacked: bool = False,
    y_title: str = "",
) -> str:
    """A bar chart as a data: URI; a None value (a suppressed count, a median with no data) draws no bar."""
    kind = pygal.StackedBar if stacked else pygal.Bar
    chart = kind(
        js=[],
        style=STYLE,
        width=820,
        height=380,
        x_label_rotation=0 if len(labels) <= 6 else 30,
        legend_at_bottom=True,
        print_values=True,
        print_zeroes=False,
        truncate_label=-1,
        truncate_legend=-1,
        y_title=y_title,
        inverse_y_axis=False,
        show_y_guides=True,
    )
    chart.title = title
    chart.x_labels = list(reversed(labels)) if rtl else list(labels)
    for name, values in series:
        chart.add(name, list(reversed(values)) if rtl else list(values))
    svg = chart.render()
    return _data_uri(svg if isinstance(svg, bytes) else svg.encode())
