"""Writing postmortems: drafts, finishing, and refusing to overwrite a colleague."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError

from survey import audit, clock
from survey.departures.models import Departure
from survey.departures.service import departure_event, lock_departure
from survey.errors import InvalidInput, NotFound, SurveyError
from survey.review import queue
from survey.review.models import ActionItem, Postmortem, RootCause
from survey.review_items import ReviewItem
from survey.vocabulary import ROOT_CAUSES, TEAMS, WINBACK_RECOMMENDATIONS, YES_PARTLY_NO

log = logging.getLogger(__name__)

#: The postmortem's text sections, in the template's order.
TEXT_FIELDS = (
    "what_happened",
    "who_was_involved",
    "process_deviation",
    "immediate_steps",
    "communication",
    "sale_sticking_points",
    "conflict_cycle",
    "outside_factors",
    "customer_said",
    "lessons",
)


class PostmortemConflict(SurveyError):
    """Someone else saved the postmortem since this editor opened it."""

    status = 409
    code = "conflict"

    def __init__(self, by: str, at: datetime | None, version: int | None) -> None:
        when = f" at {at:%Y-%m-%d %H:%M} UTC" if at else ""
        super().__init__(
            f"Changed by {by}{when} while you were editing. Where their version "
            "differs from yours, it is shown beside yours: keep yours or take "
            "theirs for each, then save; that save replaces their version."
        )
        #: The version saved meanwhile (None if it was deleted): a save from the
        #: page showing this conflict starts from it, knowingly.
        self.version = version


#: The base version of an editor drawn when there was no postmortem yet and
#: the person's data had been erased (versions of saved ones start at 1).
NEW_AFTER_ERASURE = 0


def base_version_of(postmortem: Postmortem | None, departure: Departure) -> str:
    """Return the version an editor drawn now starts from, for its hidden field.

    "" for a new postmortem; ``NEW_AFTER_ERASURE`` for a new one once the
    person's data is erased, so that a new one drawn before can be told apart.
    """
    if postmortem is not None:
        return str(postmortem.version)
    return "" if departure.erased_at is None else str(NEW_AFTER_ERASURE)


@dataclass
class ActionItemInput:
    """One action item row from the form."""

    id: int | None
    text: str
    team: str
    owner: str | None
    due_date: date | None
    done: bool


@dataclass
class PostmortemInput:
    """Everything the postmortem form sends."""

    texts: dict[str, str | None]
    followed_process: str | None
    preventable: str | None
    winback_recommendation: str | None
    root_causes: list[str]
    primary_cause: str | None
    other_cause: str | None
    action_items: list[ActionItemInput] = field(default_factory=list)


def get_postmortem(session: Session, departure_id: int) -> Postmortem | None:
    """Return a departure's postmortem, if one was started."""
    return session.scalar(
        select(Postmortem).where(Postmortem.departure_id == departure_id)
    )


def _validate(data: PostmortemInput, *, finishing: bool) -> None:
    problems: dict[str, list[str]] = {}
    for name, value, allowed in (
        ("followed_process", data.followed_process, YES_PARTLY_NO),
        ("preventable", data.preventable, YES_PARTLY_NO),
        (
            "winback_recommendation",
            data.winback_recommendation,
            WINBACK_RECOMMENDATIONS,
        ),
    ):
        if value and value not in allowed:
            problems[name] = ["Choose one of the answers."]
    unknown = [code for code in data.root_causes if code not in ROOT_CAUSES]
    if unknown:
        problems["root_causes"] = ["Choose root causes from the list."]
    elif finishing and data.root_causes:
        # A draft may be half-way; a finished postmortem is consistent.
        if data.primary_cause not in data.root_causes:
            problems["primary_cause"] = [
                "Mark exactly one of the chosen root causes as the primary one."
            ]
        if "other" in data.root_causes and not (data.other_cause or "").strip():
            problems["other_cause"] = ["Say what the “other” root cause was."]
    for index, row in enumerate(data.action_items):
        if row.team not in TEAMS:
            problems[f"action_items-{index}-team"] = ["Choose a team."]
        if not row.text.strip():
            problems[f"action_items-{index}-text"] = ["Say what is to be done."]
    if finishing:
        if not data.root_causes:
            problems.setdefault("root_causes", []).append(
                "A finished postmortem names its root causes."
            )
        if not data.preventable:
            problems.setdefault("preventable", []).append(
                "Say whether it was preventable."
            )
        if not (data.texts.get("what_happened") or "").strip():
            problems.setdefault("what_happened", []).append(
                "Say what happened before finishing."
            )
    if problems:
        raise InvalidInput(
            "Some answers need attention"
            + (" (a finished postmortem keeps its essentials)." if finishing else "."),
            problems,
        )


def _apply(postmortem: Postmortem, data: PostmortemInput, now: datetime) -> None:
    for name in TEXT_FIELDS:
        setattr(postmortem, name, (data.texts.get(name) or "").strip() or None)
    postmortem.followed_process = data.followed_process or None
    postmortem.preventable = data.preventable or None
    postmortem.winback_recommendation = data.winback_recommendation or None

    wanted = {code: code == data.primary_cause for code in data.root_causes}
    kept = []
    for cause in postmortem.root_causes:
        if cause.code in wanted:
            cause.is_primary = wanted.pop(cause.code)
            kept.append(cause)
    kept += [
        RootCause(code=code, is_primary=primary) for code, primary in wanted.items()
    ]
    for cause in kept:
        cause.note = (
            (data.other_cause or "").strip() or None if cause.code == "other" else None
        )
    postmortem.root_causes = kept

    existing = {item.id: item for item in postmortem.action_items}
    items = []
    for row in data.action_items:
        item = existing.get(row.id) if row.id is not None else None
        if item is None:
            item = ActionItem()
        item.text = row.text.strip()
        item.team = row.team
        item.owner = (row.owner or "").strip() or None
        item.due_date = row.due_date
        if row.done and not item.done:
            item.done_at = now
        elif not row.done:
            item.done_at = None
        item.done = row.done
        items.append(item)
    postmortem.action_items = items


def save_postmortem(
    session: Session,
    item: ReviewItem,
    data: PostmortemInput,
    *,
    base_version: int | None,
    actor_id: int,
    finish: bool = False,
) -> Postmortem:
    """Save a postmortem (a draft, or ``finish`` it); return it.

    ``base_version`` is the version the editor started from (None for a new
    one): if someone saved since, raise PostmortemConflict instead of
    overwriting their work. Finishing needs the root causes, the preventable
    answer and what happened, and moves the item to ``postmortem_done``.
    The departure is locked first, as an erasure locks it: a save and an
    erasure happen one after the other, and the erasure's rewrite counts as
    a save (an editor opened before it meets a conflict, not a silent undo).
    """
    departure = lock_departure(session, item.departure_id, erased_ok=True)
    postmortem = get_postmortem(session, item.departure_id)
    if postmortem is not None and base_version != postmortem.version:
        by = postmortem.updated_by.name if postmortem.updated_by else "someone"
        raise PostmortemConflict(by, postmortem.updated_at, postmortem.version)
    if postmortem is None and departure.erased_at is not None:
        if base_version != NEW_AFTER_ERASURE:  # drawn before: the words may be theirs
            raise PostmortemConflict(
                "an erasure of the person's data",
                departure.erased_at,
                NEW_AFTER_ERASURE,
            )
    elif postmortem is None and base_version is not None:
        raise PostmortemConflict("someone", None, None)  # it was deleted meanwhile
    finishing = finish or (postmortem is not None and postmortem.done_at is not None)
    _validate(data, finishing=finishing)
    if finish and item.status not in ("new", "in_review", "postmortem_done"):
        raise queue.InvalidTransition(
            "Reopen the review before finishing its postmortem."
        )
    now = clock.now()
    if postmortem is None:
        postmortem = Postmortem(departure_id=item.departure_id, created_at=now)
        session.add(postmortem)
    _apply(postmortem, data, now)
    postmortem.updated_at = now
    postmortem.updated_by_id = actor_id
    if finish and postmortem.done_at is None:
        postmortem.done_at = now
    try:
        session.flush()
    except (StaleDataError, IntegrityError):
        # Saved by someone else between our read and our write.
        session.rollback()
        latest = get_postmortem(session, item.departure_id)
        by = latest.updated_by.name if latest and latest.updated_by else "someone"
        raise PostmortemConflict(
            by,
            latest.updated_at if latest else None,
            latest.version if latest else None,
        ) from None
    audit.record(
        session,
        "postmortem.done" if finish else "postmortem.saved",
        actor_id=actor_id,
        departure_id=item.departure_id,
        version=postmortem.version,
    )
    if finish and item.status != "postmortem_done":
        primary = next((c for c in postmortem.root_causes if c.is_primary), None)
        departure_event(
            session,
            "postmortem.completed",
            departure,
            primary_root_cause=primary.code if primary else None,
            root_causes=[cause.code for cause in postmortem.root_causes],
            preventable=postmortem.preventable,
            winback_recommendation=postmortem.winback_recommendation,
        )
    if finish:
        if item.status == "new":
            queue.change_status(session, item, "in_review", actor_id=actor_id)
        if item.status == "in_review":
            queue.change_status(session, item, "postmortem_done", actor_id=actor_id)
    elif item.status == "new":
        queue.change_status(session, item, "in_review", actor_id=actor_id)
    log.info("postmortem of departure %s saved by %s", item.departure_id, actor_id)
    return postmortem


def open_action_items(session: Session) -> list[tuple[ActionItem, Any]]:
    """Return open action items with their departure: overdue first, by team."""
    today = clock.now().date()
    rows = session.execute(
        select(ActionItem, Departure)
        .join(Postmortem, Postmortem.id == ActionItem.postmortem_id)
        .join(Departure, Departure.id == Postmortem.departure_id)
        .where(ActionItem.done.is_(False))
        .order_by(
            ActionItem.team,
            ActionItem.due_date.is_(None),
            ActionItem.due_date,
            ActionItem.id,
        )
    ).all()
    items = [(row[0], row[1]) for row in rows]
    items.sort(
        key=lambda pair: (
            not (pair[0].due_date is not None and pair[0].due_date < today),
            pair[0].team,
            pair[0].owner or "",
            pair[0].due_date or date.max,
        )
    )
    return items


def mark_action_done(session: Session, action_id: int, *, actor_id: int) -> ActionItem:
    """Mark an action item done."""
    item = session.get(ActionItem, action_id)
    if item is None:
        raise NotFound("No such action item.")
    if not item.done:
        item.done = True
        item.done_at = clock.now()
        postmortem = session.get(Postmortem, item.postmortem_id)
        if postmortem is not None:
            # A change of the postmortem: an editor who opened it before is
            # told, instead of saving the item back as not done.
            postmortem.updated_at = item.done_at
            postmortem.updated_by_id = actor_id
            flag_modified(postmortem, "updated_at")  # a new version, always
        audit.record(
            session,
            "action.done",
            actor_id=actor_id,
            departure_id=postmortem.departure_id if postmortem else None,
            action_id=item.id,
        )
    return item
