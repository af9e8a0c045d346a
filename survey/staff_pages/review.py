"""The review queue, the item page with its postmortem, and action items."""

from __future__ import annotations

import logging
from decimal import Decimal
from urllib.parse import urlencode

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as WerkzeugResponse
from wtforms import SelectChoice

from survey import clock, db, i18n
from survey.answers.service import find_response
from survey.consent import ConsentEvent, current_consent, staff_withdrawal
from survey.departures.models import Departure
from survey.errors import InvalidInput, NotFound, SurveyError
from survey.public.forms import DetailsForm
from survey.review import notes, postmortems, queue
from survey.review.models import Postmortem
from survey.review.timeline import timeline
from survey.review_items import ReviewItem
from survey.staff import access
from survey.staff.models import StaffUser
from survey.staff_pages import conflicts
from survey.staff_pages.formatting import Problem
from survey.staff_pages.review_forms import (
    AssignForm,
    BulkForm,
    ConsentWithdrawalForm,
    NoteForm,
    PostmortemForm,
    QueueFilterForm,
    StatusForm,
)
from survey.staff_pages.staff import private_pages, safe_next
from survey.vocabulary import (
    REVIEW_STATUSES,
)
from survey.winback import service as winback
from survey.wording import service as wordings

log = logging.getLogger(__name__)

bp = Blueprint("review", __name__, url_prefix="/review")
private_pages(bp)

#: The queue's filters used most, as the query string names them.
FILTERS = ("q", "status", "assignee", "reason")

#: The queue's filters under "More filters" (open when one is set).
MORE_FILTERS = (
    "root_cause",
    "segment",
    "plan",
    "currency",
    "csm",
    "mrr_min",
    "mrr_max",
    "cancelled_from",
    "cancelled_to",
)

#: The questions of the survey's second page, as staff read them.
PAGE_TWO_QUESTIONS = {
    name: getattr(DetailsForm, name).args[0]
    for name in ("factors", "details", "destination")
}


def _reviewers() -> list[StaffUser]:
    return queue.reviewers(db.session())


def _assignee_choices(
    reviewers: list[StaffUser], *, filters: bool
) -> list[SelectChoice]:
    choices = [SelectChoice("", "Anyone" if filters else "Nobody")]
    if filters:
        choices += [
            SelectChoice("mine", "Mine"),
            SelectChoice("unassigned", "Unassigned"),
        ]
    return choices + [SelectChoice(str(user.id), user.name) for user in reviewers]


def _filter_from(form: QueueFilterForm) -> queue.QueueFilter:
    def cents(value: Decimal | None) -> int | None:
        return None if value is None else int(value * 100)

    return queue.QueueFilter(
        status=form.status.data or None,
        assignee=form.assignee.data or None,
        reason=form.reason.data or None,
        root_cause=form.root_cause.data or None,
        segment=(form.segment.data or "").strip() or None,
        plan=(form.plan.data or "").strip() or None,
        currency=form.currency.data,
        csm=form.csm.data,
        mrr_min_cents=cents(form.mrr_min.data),
        mrr_max_cents=cents(form.mrr_max.data),
        cancelled_from=form.cancelled_from.data,
        cancelled_to=form.cancelled_to.data,
        text=(form.q.data or "").strip() or None,
        sort=form.sort.data if form.sort.data in queue.SORTS else "mrr",
        viewer_id=current_user.id,
    )


@bp.get("", endpoint="queue")
@access.requires(access.REVIEW)
def queue_view() -> str:
    """The queue: filters, one keyset page, bulk changes."""
    reviewers = _reviewers()
    args = request.args if request.args else MultiDict({"status": "open"})
    form = QueueFilterForm(formdata=args)
    form.assignee.choices = _assignee_choices(reviewers, filters=True)
    if not form.validate():
        for field in form:  # keep the valid filters, drop the broken ones
            if field.errors:
                field.data = field.default
    wanted = _filter_from(form)
    page = queue.queue_page(db.session(), wanted, request.args.get("after") or None)
    # Keep an empty status: it means "any status" (a missing one means "open").
    query = {
        k: v for k, v in request.args.items() if k != "after" and (v or k == "status")
    }
    bulk = BulkForm()
    bulk.assignee.choices = _assignee_choices(reviewers, filters=False)
    return render_template(
        "review/queue.html",
        form=form,
        page=page,
        bulk=bulk,
        here=request.full_path.rstrip("?"),
        next_url=_queue_url(query | {"after": page.next_cursor})
        if page.next_cursor
        else None,
        first_url=_queue_url(query) if request.args.get("after") else None,
        more_filters=sum(
            1 for name in MORE_FILTERS if request.args.get(name) or form[name].errors
        ),
        filters_set=sum(
            1 for name in (*FILTERS, *MORE_FILTERS) if request.args.get(name)
        ),
    )


def _queue_url(query: dict[str, str]) -> str:
    return url_for(".queue") + ("?" + urlencode(query) if query else "")


@bp.post("/bulk")
@access.requires(access.REVIEW)
def bulk() -> WerkzeugResponse:
    """Assign, or change the status of, the selected items."""
    form = BulkForm()
    reviewers = _reviewers()
    form.assignee.choices = _assignee_choices(reviewers, filters=False)
    back = safe_next(form.back.data) or url_for(".queue")
    if not form.validate_on_submit() or not form.items.data:
        flash("Select at least one item.", "error")
        return redirect(back)
    assignee = db.parse_int(form.assignee.data)
    session = db.session()
    public_ids = list(dict.fromkeys(form.items.data))[: queue.PAGE_SIZE * 4]
    changed, refused = 0, []
    for public_id in public_ids:
        item = queue.get_item(session, public_id)
        if item is None:
            continue
        try:
            if form.action.data == "assign":
                queue.assign(session, item, assignee, actor_id=current_user.id)
            elif form.status.data not in REVIEW_STATUSES:
                raise queue.InvalidTransition("Choose a status.")
            else:
                queue.change_status(
                    session, item, form.status.data, actor_id=current_user.id
                )
            changed += 1
        except SurveyError as exc:
            company = item.departure.company or "(no company)"
            refused.append(f"{company}: {exc.message}")
    session.commit()
    flash(_bulk_outcome(form, changed, reviewers), "info")
    for message in refused:
        flash(message, "error")
    return redirect(back)


def _bulk_outcome(form: BulkForm, changed: int, reviewers: list[StaffUser]) -> str:
    """Say what a bulk action did: "3 items assigned to Ada Admin"."""
    items = f"{changed} item{'' if changed == 1 else 's'}"
    if form.action.data != "assign":
        status = REVIEW_STATUSES.get(form.status.data)
        return f"{items} moved to “{status}”." if status else f"{items} changed."
    assignee = db.parse_int(form.assignee.data)
    names = {user.id: user.name for user in reviewers}
    if assignee is None or assignee not in names:
        return f"{items} unassigned."
    return f"{items} assigned to {names[assignee]}."


def _item_or_404(public_id: str) -> ReviewItem:
    item = queue.get_item(db.session(), public_id)
    if item is None:
        raise NotFound("This departure is not in the review queue.")
    return item


def _postmortem_form(
    postmortem: Postmortem | None,
    departure: Departure,
) -> PostmortemForm:
    """The saved postmortem (or a new one) as a form, with empty action
    item rows under the saved ones."""
    form = PostmortemForm(formdata=None, obj=postmortem)
    form.version.data = postmortems.base_version_of(postmortem, departure)
    if postmortem is not None:
        form.root_causes.data = [cause.code for cause in postmortem.root_causes]
        form.primary_cause.data = next(
            (c.code for c in postmortem.root_causes if c.is_primary), None
        )
        form.other_cause.data = next(
            (c.note for c in postmortem.root_causes if c.code == "other"), ""
        )
        while len(form.action_items):
            form.action_items.pop_entry()
        for action in postmortem.action_items:
            form.action_items.append_entry(
                {
                    "id": str(action.id),
                    "text": action.text,
                    "team": action.team,
                    "owner": action.owner,
                    "due_date": action.due_date,
                    "done": action.done,
                }
            )
    return form.with_blank_rows()


def _render_item(
    item: ReviewItem,
    *,
    postmortem_form: PostmortemForm | None = None,
    note_form: NoteForm | None = None,
    consent_form: ConsentWithdrawalForm | None = None,
    assign_form: AssignForm | None = None,
    status_form: StatusForm | None = None,
    problem: str | None = None,
    differences: dict[str, str] | None = None,
    new_row: bool = False,
    status: int = 200,
) -> tuple[str, int]:
    """Draw the item page; a form given back refused is shown with its
    problems summarised above it. A postmortem form given back (refused, in
    conflict, or with a row added) is shown for editing, with the other
    version beside each part that differs."""
    session = db.session()
    departure = item.departure
    response = find_response(session, departure)
    postmortem = postmortems.get_postmortem(session, departure.id)
    form = postmortem_form or _postmortem_form(postmortem, departure)
    reviewers = _reviewers()
    assign_form = assign_form or AssignForm(
        formdata=None, assignee=str(item.assignee_id or "")
    )
    assign_form.assignee.choices = _assignee_choices(reviewers, filters=False)
    status_form = status_form or StatusForm(formdata=None)
    status_form.status.choices = [
        SelectChoice(code, REVIEW_STATUSES[code])
        for code in sorted(queue.TRANSITIONS[item.status])
    ]
    consent_history = list(
        session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.departure_id == departure.id)
            .order_by(ConsentEvent.id)
        )
    )
    return (
        render_template(
            "review/item.html",
            item=item,
            departure=departure,
            response=response,
            # The answers in the words the customer saw: their version of
            # the survey, in their language.
            seen=wordings.version(session, response.survey_version_id)
            if response
            else None,
            # The page's language when they answered (kept since responses
            # keep it), else the departure's.
            seen_language=i18n.email_locale(
                response.locale if response and response.locale else departure.locale
            ).split("_")[0],
            consent=current_consent(session, departure.id),
            on_winback_list=departure.contact_email is not None
            and winback.is_listed(session, departure.contact_email),
            consent_history=consent_history,
            postmortem=postmortem,
            form=form,
            # A finished postmortem reads as a document until "edit".
            editing=postmortem_form is not None
            or postmortem is None
            or postmortem.done_at is None
            or request.args.get("edit") == "1",
            sections=conflicts.SECTIONS,
            shown=conflicts.shown,
            action_rows=conflicts.action_rows,
            problem=problem,
            differences=differences or {},
            conflict_problems=[
                Problem(
                    f"compare-{name}",
                    conflicts.label(form, name),
                    "they saved another version",
                )
                for name in differences or {}
            ],
            # The row to type in next, after "add another action".
            focus_row=next(iter(form.blank_rows()), None) if new_row else None,
            questions=PAGE_TWO_QUESTIONS,
            note_form=note_form
            or NoteForm(after_erasure="y" if departure.erased_at else ""),
            consent_form=consent_form or ConsentWithdrawalForm(),
            notes=notes.notes_for(session, departure.id),
            events=timeline(session, departure, response),
            assign_form=assign_form,
            status_form=status_form,
        ),
        status,
    )


@bp.get("/<public_id>")
@access.requires(access.REVIEW)
def item(public_id: str) -> tuple[str, int]:
    """One departure: answers, consent, facts, timeline, notes, postmortem."""
    return _render_item(_item_or_404(public_id))


#: Where on the item page each of its forms sits (an element's id).
FORM_PLACES = {
    "assign": "review",
    "status": "review",
    "notes": "notes",
    "consent": "consent",
    "postmortem": "postmortem",
}


@access.requires(access.REVIEW)
def form_address(public_id: str, form: str) -> WerkzeugResponse:
    """The address a refused form of the item page is drawn at, opened
    again (a reload, a restored tab): the item page, at that form."""
    _item_or_404(public_id)
    return redirect(
        url_for(".item", public_id=public_id, _anchor=FORM_PLACES[form]), 303
    )


for _form in FORM_PLACES:  # one rule each: /review/<id>/assign, ...
    bp.add_url_rule(
        f"/<public_id>/{_form}",
        endpoint="form_address",
        view_func=form_address,
        methods=["GET"],
        defaults={"form": _form},
    )


@bp.post("/<public_id>/assign")
@access.requires(access.REVIEW)
def assign(public_id: str) -> WerkzeugResponse | tuple[str, int]:
    """Give the item to someone, or to me; a refusal is shown on the page."""
    review_item = _item_or_404(public_id)
    form = AssignForm()
    if not form.validate_on_submit():
        return _render_item(review_item, assign_form=form, status=422)
    raw = str(current_user.id) if request.form.get("to_me") else form.assignee.data
    session = db.session()
    try:
        queue.assign(session, review_item, db.parse_int(raw), actor_id=current_user.id)
    except InvalidInput as refused:
        session.rollback()
        form.assignee.errors = refused.fields.get("assignee") or [refused.message]
        return _render_item(review_item, assign_form=form, status=refused.status)
    session.commit()
    flash("Assignment saved.", "info")
    return redirect(url_for(".item", public_id=public_id))


@bp.post("/<public_id>/status")
@access.requires(access.REVIEW)
def status(public_id: str) -> WerkzeugResponse | tuple[str, int]:
    """Move the item to another status, if the workflow allows it; a
    refusal is shown on the page."""
    review_item = _item_or_404(public_id)
    form = StatusForm()
    if not form.validate_on_submit():
        return _render_item(review_item, status_form=form, status=422)
    session = db.session()
    try:
        queue.change_status(
            session, review_item, form.status.data, actor_id=current_user.id
        )
    except queue.InvalidTransition as refused:
        session.rollback()  # the page shows the item as it is now
        form.status.errors = [refused.message]
        return _render_item(review_item, status_form=form, status=refused.status)
    session.commit()
    flash(f"Status: {REVIEW_STATUSES[review_item.status]}.", "info")
    return redirect(url_for(".item", public_id=public_id))


@bp.post("/<public_id>/notes")
@access.requires(access.REVIEW)
def add_note(public_id: str) -> WerkzeugResponse | tuple[str, int]:
    """Add an internal note."""
    review_item = _item_or_404(public_id)
    form = NoteForm()
    if not form.validate_on_submit():
        return _render_item(review_item, note_form=form, status=422)
    session = db.session()
    try:
        notes.add_note(
            session,
            review_item.departure_id,
            form.body.data,
            author_id=current_user.id,
            after_erasure=form.after_erasure.data == "y",
        )
    except notes.WrittenBeforeErasure as refused:
        session.rollback()
        form.body.errors = refused.fields["body"]
        form.after_erasure.data = "y"  # sent again from here, it is knowingly
        return _render_item(review_item, note_form=form, status=refused.status)
    session.commit()
    return redirect(url_for(".item", public_id=public_id, _anchor="notes"))


@bp.post("/<public_id>/consent")
@access.requires(access.REVIEW)
def withdraw_consent(public_id: str) -> WerkzeugResponse | tuple[str, int]:
    """Withdraw win-back consent on the customer's written request (a note)."""
    review_item = _item_or_404(public_id)
    form = ConsentWithdrawalForm()
    if not form.validate_on_submit():
        return _render_item(review_item, consent_form=form, status=422)
    session = db.session()
    changed = staff_withdrawal(
        session, review_item.departure, note=form.note.data, actor_id=current_user.id
    )
    session.commit()
    flash(
        f"Win-back consent withdrawn ({changed} of their departures)."
        if changed
        else "Consent was already withdrawn: nothing changed.",
        "info",
    )
    return redirect(url_for(".item", public_id=public_id))


@bp.post("/<public_id>/postmortem")
@access.requires(access.REVIEW)
def save_postmortem(public_id: str) -> WerkzeugResponse | tuple[str, int]:
    """Save the postmortem as a draft or mark it done; or, without saving,
    come back with one more empty action item row (the page is drawn at this
    address: opened again, it leads to the item page, see ``form_address``).
    After a conflict, the parts marked "take theirs" are taken from the
    version shown beside."""
    review_item = _item_or_404(public_id)
    form = PostmortemForm()
    intent = request.form.get("intent")
    theirs = _version_compared(form, review_item)
    taken = _take_theirs(form, theirs)
    if intent == "add_row":
        if len(form.action_items) < form.action_items.max_entries:
            form.action_items.append_entry({"team": ""})
        return _render_item(
            review_item,
            postmortem_form=form,
            new_row=True,
            differences=conflicts.differences(form, theirs) if theirs else None,
        )
    if not form.validate_on_submit():
        return _render_item(
            review_item,
            postmortem_form=form.with_blank_rows(),
            differences=conflicts.differences(form, theirs) if theirs else None,
            status=422,
        )
    session = db.session()
    try:
        postmortems.save_postmortem(
            session,
            review_item,
            form.as_input(),
            base_version=db.parse_int(form.version.data),
            actor_id=current_user.id,
            finish=intent == "finish",
        )
    except postmortems.PostmortemConflict as conflict:
        session.rollback()
        form.version.data = "" if conflict.version is None else str(conflict.version)
        return _render_item(
            review_item,
            postmortem_form=form.with_blank_rows(),
            problem=conflict.message,
            differences=conflicts.differences(form, _saved_version(review_item)),
            status=409,
        )
    except (InvalidInput, queue.InvalidTransition) as invalid:
        session.rollback()
        for name, messages in getattr(invalid, "fields", {}).items():
            form.field_errors(name).extend(messages)
        return _render_item(
            review_item,
            postmortem_form=form.with_blank_rows(),
            problem=None if getattr(invalid, "fields", None) else invalid.message,
            status=422,
        )
    session.commit()
    if taken:
        log.info("postmortem saved taking the other version of %s", ", ".join(taken))
    if intent == "finish":
        flash("Postmortem marked done.", "info")
        return redirect(url_for(".item", public_id=public_id))
    flash("Draft saved.", "info")
    return redirect(url_for(".item", public_id=public_id, _anchor="postmortem"))


def _saved_version(review_item: ReviewItem) -> PostmortemForm:
    """The saved postmortem as a form, read apart from the request's session
    (whose postmortem is read again under the departure's lock)."""
    departure = review_item.departure  # first: after a rollback, read again
    with db.reading_session() as reader:
        saved = postmortems.get_postmortem(reader, departure.id)
        return _postmortem_form(saved, departure)


def _version_compared(
    form: PostmortemForm, review_item: ReviewItem
) -> PostmortemForm | None:
    """The version a conflict page showed beside the writer's, while it is
    still the saved one (None when none was shown, or it changed since: the
    save is then refused and the newer one shown)."""
    if request.form.get("comparing") != "1":
        return None
    theirs = _saved_version(review_item)
    return theirs if theirs.version.data == form.version.data else None


def _take_theirs(form: PostmortemForm, theirs: PostmortemForm | None) -> list[str]:
    """Take the parts the writer marked "take theirs" from ``theirs``."""
    wanted = {
        name
        for name in conflicts.field_names()
        if request.form.get(f"resolve-{name}") == "theirs"
    }
    if theirs is None or not wanted:
        return []
    return conflicts.take_theirs(form, theirs, wanted)


@bp.get("/actions")
@access.requires(access.REVIEW)
def actions() -> str:
    """Open action items across postmortems, by team and owner, overdue first."""
    return render_template(
        "review/actions.html",
        rows=postmortems.open_action_items(db.session()),
        today=clock.now().date(),
    )


@bp.post("/actions/<int(max=2147483647):action_id>/done")
@access.requires(access.REVIEW)
def action_done(action_id: int) -> WerkzeugResponse:
    """Mark an action item done (CSRFProtect checks the form's token)."""
    session = db.session()
    try:
        postmortems.mark_action_done(session, action_id, actor_id=current_user.id)
        session.commit()
    except StaleDataError:  # its postmortem was saved in the same instant
        session.rollback()
        flash("The postmortem was being saved just now; try again.", "error")
    else:
        flash("Action item done.", "info")
    return redirect(safe_next(request.form.get("back")) or url_for(".actions"))
