"""Line charts as inline SVG, drawn on the server: the status page needs no script.

A chart is a C{<svg>} element (twisted.web.template tags, so every text and
attribute is escaped by the flattener) with one path per series over a day of
minutes, three horizontal grid lines labelled with their values, and the hours
along the bottom. A minute with no value (C{None}: the proxy was not running)
breaks the line rather than drawing it at zero. Colours come from CSS classes
(C{s0}, C{s1}, ...), so the page's light and dark themes both apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from twisted.web.template import Tag

WIDTH = 720
HEIGHT = 180
LEFT = 64  # room for the value labels
BOTTOM = 22  # room for the hour labels
TOP = 8
RIGHT = 8
HOUR_LABELS = 6  # every fourth hour over a day


def _tag(name: str, children: Sequence[object] = (), **attributes: str) -> Tag:
    names = {k: k.rstrip("_").replace("_", "-") for k in attributes}
    tag = Tag(name, attributes={names[k]: v for k, v in attributes.items()})
    tag.children.extend(children)  # type: ignore[arg-type]
    return tag


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten not under C{value}."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # not reached


def path_data(values: Sequence[float | None], y_max: float) -> str:
    """The path of one series: a move at each start after a gap, lines between values."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(values) - 1, 1)
    parts: list[str] = []
    drawing = False
    for i, value in enumerate(values):
        if value is None:
            drawing = False
            continue
        x = LEFT + i * step
        y = TOP + plot_h - min(value / y_max, 1.0) * plot_h
        # A line's first point is drawn as a dot too (round caps): a lone minute shows.
        parts.append(f"L{x:.1f} {y:.1f}" if drawing else f"M{x:.1f} {y:.1f}h0")
        drawing = True
    return "".join(parts)


def line_chart(
    label: str,
    series: Sequence[Sequence[float | None]],
    start: float,
    step: float,
    fmt: Callable[[float], str],
    y_max: float | None = None,
) -> Tag:
    """A chart of C{series} (equal lengths, C{step} seconds apart from C{start}, Unix
    time), values labelled with C{fmt}; C{label} is its accessible name."""
    highest = max((v for values in series for v in values if v is not None), default=0.0)
    top = y_max if y_max is not None else nice_max(highest)
    plot_h = HEIGHT - TOP - BOTTOM
    children: list[object] = [_tag("title", [label])]
    for fraction in (0.0, 0.5, 1.0):
        y = f"{TOP + plot_h - fraction * plot_h:.1f}"
        children.append(
            _tag("line", x1=str(LEFT), x2=str(WIDTH - RIGHT), y1=y, y2=y, class_="grid")
        )
        children.append(
            _tag("text", [fmt(fraction * top)], x=str(LEFT - 6), y=y, class_="value", dy="0.32em")
        )
    count = max((len(values) for values in series), default=0)
    for tick in range(HOUR_LABELS + 1):
        index = round(tick * (count - 1) / HOUR_LABELS) if count else 0
        x = LEFT + (WIDTH - LEFT - RIGHT) * (tick / HOUR_LABELS)
        clock = time.strftime("%H:%M", time.gmtime(start + index * step))
        anchor = "start" if tick == 0 else "end" if tick == HOUR_LABELS else "middle"
        children.append(
            _tag(
                "text", [clock], x=f"{x:.1f}", y=str(HEIGHT - 6), class_="hour", text_anchor=anchor
            )
        )
    for i, values in enumerate(series):
        children.append(_tag("path", d=path_data(values, top), class_=f"line s{i}"))
    return _tag(
        "svg",
        children,
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        role="img",
        aria_label=label,
        class_="chart",
    )
