"""Charts as inline SVG, drawn on the server: no script, nothing for the CSP
to refuse (presentation attributes, no style), and always with a text
alternative; the numbers are in a table beside each chart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from survey.insights.service import MonthGrid, Panels, percent
from survey.staff_pages.formatting import money
from survey.vocabulary import ROOT_CAUSES
from survey.wording import service as wordings

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

#: Both kinds of chart are narrow, one row per bar, so that their text stays
#: legible on a 360 px phone (a wide chart would shrink to unreadable there).
WIDTH = 320


def _svg(title: str, height: int, body: list[str]) -> Markup:
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        *body,
        "</svg>",
    ]
    # Every text in it went through escape(); the rest are numbers.
    return Markup("".join(parts))  # noqa: S704


def _colours(count: int) -> Sequence[str]:
    return (PALETTE * (count // len(PALETTE) + 1))[:count]


def bars(title: str, rows: Sequence[tuple[str, int]]) -> Markup:
    """Return an SVG of one horizontal bar per ``(label, value)`` row, the
    label above its bar and the value at its end, ``title`` its accessible
    name."""
    top = max((value for _label, value in rows), default=0) or 1
    room = WIDTH - 48  # for the value after the longest bar
    body = []
    for n, ((label, value), colour) in enumerate(
        zip(rows, _colours(len(rows)), strict=True)
    ):
        y, size = n * 34, value / top * room
        body.append(
            f'<text x="0" y="{y + 12}" font-size="12">{escape(label)}</text>'
            f'<rect x="0" y="{y + 16}" width="{size:.1f}" height="14" fill="{colour}"/>'
            f'<text x="{size + 4:.1f}" y="{y + 28}" font-size="12">{value}</text>'
        )
    return _svg(title, 34 * len(rows) + 4, body)


#: About the widest a character of the charts' 12 px text draws, in user units.
_CHARACTER = 7


def stacked_bars(
    title: str,
    rows: Sequence[str],
    series: Mapping[str, Sequence[int]],
    labels: Mapping[str, str],
    written: Callable[[int], str] = str,
    colours: Mapping[str, str] | None = None,
) -> Markup:
    """Return an SVG of one horizontal bar per row (labelled with ``rows``),
    stacked by series, its total at its end (as ``written`` writes it), with
    a legend below and ``title`` as its accessible name; ``series`` maps a
    key to one value per row, ``labels`` a key to its name, ``colours`` a
    key to its colour (by default, the palette in order)."""
    colours = colours or dict(zip(series, _colours(len(series)), strict=True))
    totals = [sum(values[i] for values in series.values()) for i in range(len(rows))]
    top = max(totals, default=0) or 1
    # Room after the longest bar for its total ("$12,345.67" needs more
    # than "12"), so that no total runs off the chart.
    widest = max((len(written(total)) for total in totals), default=0)
    left, step = 58, 20
    room = WIDTH - left - max(40, widest * _CHARACTER + 8)
    body = []
    for i, row in enumerate(rows):
        y, x = i * step, float(left)
        body.append(f'<text x="0" y="{y + 13}" font-size="12">{escape(row)}</text>')
        for key, values in series.items():
            size = values[i] / top * room
            if size:
                body.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{size:.1f}" height="14"'
                    f' fill="{colours[key]}"/>'
                )
                x += size
        body.append(
            f'<text x="{x + 4:.1f}" y="{y + 13}" font-size="12">'
            f"{escape(written(totals[i]))}</text>"
        )
    legend = len(rows) * step + 12
    for n, key in enumerate(series):
        y = legend + n * 18
        body.append(
            f'<rect x="0" y="{y}" width="12" height="12" fill="{colours[key]}"/>'
            f'<text x="18" y="{y + 11}" font-size="12">{escape(labels[key])}</text>'
        )
    return _svg(title, legend + 18 * len(series), body)


@dataclass(frozen=True)
class Figure:
    """A chart and the sentence that says what it shows."""

    svg: Markup
    summary: str


def reason_name(code: str | None) -> str:
    """A stated reason's name; ``None`` (or ``"none"``) is no answer."""
    return wordings.known_reasons().get(code or "none", "No answer")


def _share(part: int, whole: int) -> str:
    share = percent(part, whole)
    return "—" if share is None else f"{share}\N{NO-BREAK SPACE}%"


def _most(ranked: Sequence[tuple[str, int]]) -> tuple[str, int]:
    """The names that share the highest count (``ranked`` highest first),
    joined as prose, and that count."""
    count = ranked[0][1]
    names = [name for name, n in ranked if n == count]
    joined = (
        names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    )
    return joined, count


def _each(ranked: Sequence[tuple[str, int]]) -> str:
    return " each" if ranked[1:] and ranked[1][1] == ranked[0][1] else ""


def lost_mrr_key(currency: str) -> str:
    """The key of the chart of MRR lost per month in ``currency``."""
    return f"lost_mrr_{currency}"


def _lost_mrr_figure(
    months: MonthGrid,
    currency: str,
    series: Mapping[str, Sequence[int]],
    colours: Mapping[str, str],
) -> Figure:
    """MRR lost per month in one currency, stacked by stated reason."""

    def written(cents: int) -> str:
        return money(cents, currency)

    totals = months.lost_totals(currency)
    busiest = max(totals)
    ranked = sorted(
        ((reason_name(code), sum(values)) for code, values in series.items()),
        key=lambda pair: -pair[1],
    )
    names, most = _most(ranked)
    return Figure(
        stacked_bars(
            f"MRR lost per month in {currency}, by stated reason",
            months.months,
            series,
            {code: reason_name(code) for code in series},
            written,
            colours,
        ),
        f"The 12 months to {months.months[-1]}: {written(sum(totals))} of MRR"
        f" lost in {currency}; the most in one month, {written(busiest)}"
        f" ({months.months[totals.index(busiest)]}). Lost most: {names},"
        f" {written(most)}{_each(ranked)}.",
    )


def figures(found: Panels, months: MonthGrid) -> dict[str, Figure]:
    """The page's charts, by panel (MRR lost over time: one per currency, by
    ``lost_mrr_key``), each with its text summary; numbers from the panels,
    never an amount added across currencies."""
    drawn: dict[str, Figure] = {}
    departed = found.funnel.departed
    if not departed:
        return drawn
    per_reason: Counter[str | None] = Counter()
    for row in found.reasons:
        per_reason[row.reason] += row.departures
    ranked = [(reason_name(code), n) for code, n in per_reason.most_common()]
    given = [(reason_name(code), n) for code, n in per_reason.most_common() if code]
    unanswered = per_reason[None]
    if given:
        names, count = _most(given)
        answers = departed - unanswered
        said = (
            f"Given most: {names}, {count}{_each(given)} of {answers}"
            f" answers ({_share(count, answers)})."
        )
    else:
        said = "No answers yet."
    drawn["reasons"] = Figure(
        bars("Departures by stated reason", ranked),
        f"{said} {unanswered} of {departed} departures gave no answer.",
    )
    totals = months.totals
    busiest = max(totals)
    # A reason has one colour in every chart over time.
    colours = dict(
        zip(months.departures, _colours(len(months.departures)), strict=True)
    )
    drawn["over_time"] = Figure(
        stacked_bars(
            "Departures per month, by stated reason",
            months.months,
            months.departures,
            {code: reason_name(code) for code in months.departures},
            colours=colours,
        ),
        f"The 12 months to {months.months[-1]}: {sum(totals)} departures;"
        f" the most in one month, {busiest}"
        f" ({months.months[totals.index(busiest)]}).",
    )
    for currency, series in months.lost_mrr_cents.items():
        drawn[lost_mrr_key(currency)] = _lost_mrr_figure(
            months, currency, series, colours
        )
    f = found.funnel
    drawn["funnel"] = Figure(
        bars(
            "The funnel: departures at each step",
            [
                ("Departed", f.departed),
                ("Invited (sent)", f.invited),
                ("Opened", f.opened),
                ("Answered", f.answered),
                ("Consented to win-back", f.consented),
            ],
        ),
        f"Of {f.departed} departures, {f.answered} answered"
        f" ({_share(f.answered, f.departed)}) and {f.consented} agreed to be"
        f" won back ({_share(f.consented, f.departed)}).",
    )
    primary: Counter[str] = Counter()
    for cause in found.root_causes:
        primary[cause.code] += cause.primary
    causes = [(str(ROOT_CAUSES[c][0]), n) for c, n in primary.most_common() if n]
    if causes:
        names, count = _most(causes)
        total = sum(n for _name, n in causes)
        drawn["root_causes"] = Figure(
            bars("Finished postmortems by primary root cause", causes),
            f"Found most: {names}, in {count}{_each(causes)} of {total}"
            f" finished postmortems ({_share(count, total)}).",
        )
    for panel, noun in (("by_segment", "segment"), ("by_plan", "plan")):
        rows = getattr(found, panel)
        named = [(row.value or "(none)", row.departures) for row in rows]
        names, count = _most(named)
        drawn[panel] = Figure(
            bars(f"Departures by {noun}", named),
            f"Most departures: {noun} {names}, {count}{_each(named)} of"
            f" {departed} ({_share(count, departed)}).",
        )
    return drawn
