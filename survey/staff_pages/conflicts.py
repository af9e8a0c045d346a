"""Two versions of a postmortem, side by side: what differs, field by field,
and taking the other person's version of a field on request.

The versions are forms: the writer's (posted) and theirs (drawn from the
saved postmortem), so both read the same way, whatever was saved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from survey.review.postmortems import TEXT_FIELDS
from survey.staff_pages.review_forms import PostmortemForm
from survey.vocabulary import ROOT_CAUSES, TEAMS

#: The postmortem's parts, in the form's order, as a reader meets them.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Immediate circumstances",
        (
            "what_happened",
            "who_was_involved",
            "followed_process",
            "process_deviation",
            "immediate_steps",
        ),
    ),
    (
        "The relationship",
        (
            "communication",
            "sale_sticking_points",
            "conflict_cycle",
            "outside_factors",
            "customer_said",
        ),
    ),
    (
        "Conclusion",
        (
            "root_causes",
            "preventable",
            "lessons",
            "winback_recommendation",
            "action_items",
        ),
    ),
)

#: A choice among "take theirs" for ``root_causes`` takes these too.
TAKEN_TOGETHER = {"root_causes": ("root_causes", "primary_cause", "other_cause")}

NOT_ANSWERED = "(not answered)"


def field_names() -> Iterator[str]:
    """Every part of the postmortem that can differ, in reading order."""
    for _title, names in SECTIONS:
        yield from names


def label(form: PostmortemForm, name: str) -> str:
    """The name of a part of the postmortem, as its form shows it."""
    return "Action items" if name == "action_items" else str(form[name].label.text)


def shown(form: PostmortemForm, name: str) -> str:
    """One part of a postmortem as a reader sees it: text, the chosen
    label, the root causes by meaning, or the action items line by line."""
    if name in TEXT_FIELDS:
        return (form[name].data or "").strip()
    if name == "root_causes":
        return _root_causes(form)
    if name == "action_items":
        return "\n".join(_action_line(row) for row in action_rows(form))
    field = form[name]
    labels = {choice.value: choice.label for choice in field.iter_choices()}
    return str(labels.get(field.data, "")) if field.data else ""


def _root_causes(form: PostmortemForm) -> str:
    parts = []
    for code in form.root_causes.data or []:
        meaning, _team = ROOT_CAUSES.get(code, (code, ""))
        if code == "other" and (form.other_cause.data or "").strip():
            meaning = f"{meaning}: {form.other_cause.data.strip()}"
        primary = " (primary)" if form.primary_cause.data == code else ""
        parts.append(f"{meaning}{primary}")
    return "; ".join(parts)


def action_rows(form: PostmortemForm) -> list[Mapping[str, Any]]:
    """The action items with anything in them, as plain values."""
    return [
        entry.form.data
        for entry in form.action_items.entries
        if (entry.form.text.data or "").strip()
        or entry.form.owner.data
        or entry.form.due_date.data
        or entry.form.done.data
    ]


def _action_line(row: Mapping[str, Any]) -> str:
    facts = [TEAMS.get(row.get("team") or "", "no team")]
    if row.get("owner"):
        facts.append(row["owner"])
    if row.get("due_date"):
        facts.append(f"due {row['due_date'].isoformat()}")
    if row.get("done"):
        facts.append("done")
    return f"{(row.get('text') or '').strip()} ({', '.join(facts)})"


def differences(mine: PostmortemForm, theirs: PostmortemForm) -> dict[str, str]:
    """Return, for each part where the versions differ, theirs as shown."""
    return {
        name: shown(theirs, name) or NOT_ANSWERED
        for name in field_names()
        if _comparable(mine, name) != _comparable(theirs, name)
    }


def _comparable(form: PostmortemForm, name: str) -> Any:
    if name == "action_items":  # as saved: stripped, blanks as nothing
        return [
            (
                (row.get("text") or "").strip(),
                row.get("team") or "",
                (row.get("owner") or "").strip(),
                row.get("due_date"),
                bool(row.get("done")),
            )
            for row in action_rows(form)
        ]
    return shown(form, name)


def take_theirs(
    mine: PostmortemForm, theirs: PostmortemForm, names: set[str]
) -> list[str]:
    """Replace the parts ``names`` of the writer's form with theirs; return
    the parts replaced."""
    taken = []
    for name in field_names():
        if name not in names:
            continue
        if name == "action_items":
            while len(mine.action_items):
                mine.action_items.pop_entry()
            for row in action_rows(theirs):
                mine.action_items.append_entry(row)
        else:
            for part in TAKEN_TOGETHER.get(name, (name,)):
                value = theirs[part].data
                mine[part].data = value
                # What validation reads as posted: nothing for an unanswered
                # question, so Optional() lets it be.
                mine[part].raw_data = (
                    []
                    if value in (None, "", [])
                    else [*value]
                    if isinstance(value, list)
                    else [str(value)]
                )
        taken.append(name)
    return taken
