"""Review forms: queue filters, bulk changes, assignment, notes, the postmortem."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    DecimalField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    RadioField,
    SearchField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import AnyOf, InputRequired, Length, NumberRange, Optional

from survey.db import parse_int
from survey.departures.schemas import normalize_email
from survey.money import currency_code
from survey.review import postmortems
from survey.review.queue import SORTS
from survey.validation import unless_blank
from survey.vocabulary import (
    REVIEW_STATUSES,
    ROOT_CAUSES,
    TEAMS,
    WINBACK_RECOMMENDATIONS,
    YES_PARTLY_NO,
)
from survey.wording import service as wordings


def _choices(pairs: Any, blank: str | None = None) -> list[SelectChoice]:
    choices = [SelectChoice("", blank)] if blank is not None else []
    return choices + [SelectChoice(code, str(label)) for code, label in pairs]


STATUS_FILTERS = [
    SelectChoice("open", "Open (all but closed)"),
    SelectChoice("finished", "Finished (done or closed)"),
    SelectChoice("", "Any status"),
    *_choices(REVIEW_STATUSES.items()),
]


def reason_filters() -> list[SelectChoice]:
    """Every reason there is (the team's own too), then "no answer"."""
    return [
        *_choices(wordings.known_reasons().items(), blank="Any reason"),
        SelectChoice("none", "No answer"),
    ]


ROOT_CAUSE_FILTERS = _choices(
    ((code, meaning) for code, (meaning, _team) in ROOT_CAUSES.items()),
    blank="Any cause",  # under its label "Primary root cause"; fits a phone
)


# Flask-WTF and WTForms ship no type hints, hence the ignores.
class AmountField(DecimalField):  # type: ignore[misc]
    """A DecimalField for finite amounts only.

    ``Decimal`` reads "NaN", "sNaN" and "Infinity" too; NumberRange raises on
    a signalling NaN (a 500) instead of refusing it.
    """

    data: Decimal | None

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata(valuelist)
        if self.data is not None and not self.data.is_finite():
            self.data = None
            raise ValueError(self.gettext("Not a valid decimal value."))


class QueueFilterForm(FlaskForm):  # type: ignore[misc]
    """The queue's filters, read from the query string (a GET: no CSRF needed)."""

    class Meta:
        csrf = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reason.choices = reason_filters()

    status = SelectField("Status", choices=STATUS_FILTERS, default="open")
    assignee = SelectField("Assignee", choices=[], validate_choice=False)
    reason = SelectField("Stated reason", choices=[], default="")
    root_cause = SelectField(
        "Primary root cause", choices=ROOT_CAUSE_FILTERS, default=""
    )
    segment = StringField("Segment", validators=[Optional(), Length(max=80)])
    plan = StringField("Plan", validators=[Optional(), Length(max=80)])
    # Read as the departures store them; a value that is neither is explained.
    currency = StringField("Currency", filters=[unless_blank(currency_code)])
    csm = StringField("CSM (email)", filters=[unless_blank(normalize_email)])
    mrr_min = AmountField(
        "Lost MRR from",
        places=2,
        validators=[Optional(), NumberRange(min=0, max=10**11)],
    )
    mrr_max = AmountField(
        "Lost MRR up to",
        places=2,
        validators=[Optional(), NumberRange(min=0, max=10**11)],
    )
    cancelled_from = DateField("Cancelled from", validators=[Optional()])
    cancelled_to = DateField("Cancelled until", validators=[Optional()])
    q = SearchField("Search", validators=[Optional(), Length(max=200)])
    sort = SelectField("Sort by", choices=_choices(SORTS.items()), default="mrr")


class BulkForm(FlaskForm):  # type: ignore[misc]
    """Change several queue items at once."""

    items = SelectMultipleField("Items", choices=[], validate_choice=False)
    action = SelectField(
        "With the selected",
        choices=[
            SelectChoice("assign", "Assign to"),
            SelectChoice("status", "Set status"),
        ],
    )
    assignee = SelectField("Assignee", choices=[], validate_choice=False)
    # Checked with the action: only "Set status" uses it.
    status = SelectField(
        "Status", choices=_choices(REVIEW_STATUSES.items()), validate_choice=False
    )
    back = HiddenField()


class AssignForm(FlaskForm):  # type: ignore[misc]
    """Give one item to someone (empty: to nobody)."""

    assignee = SelectField("Assign to", choices=[], validate_choice=False)


class StatusForm(FlaskForm):  # type: ignore[misc]
    """Move one item to another status (the workflow checks which, in
    ``queue.change_status``; the page offers the allowed ones)."""

    status = SelectField(
        "Move to",
        choices=_choices(REVIEW_STATUSES.items()),
        validate_choice=False,  # said in our words below, not "Not a valid choice"
        validators=[
            InputRequired("Choose a status."),
            AnyOf(list(REVIEW_STATUSES), "Choose a status."),
        ],
    )


class NoteForm(FlaskForm):  # type: ignore[misc]
    """An internal note."""

    body = TextAreaField("Add a note", validators=[InputRequired(), Length(max=10_000)])
    #: "y" when drawn after the person's data was erased (see notes.add_note).
    after_erasure = HiddenField()


class ConsentWithdrawalForm(FlaskForm):  # type: ignore[misc]
    """Withdraw win-back consent for the customer, on their written request."""

    note = TextAreaField(
        "The customer's request (where and when they asked)",
        validators=[InputRequired(), Length(min=5, max=2000)],
    )


class ActionItemForm(Form):  # type: ignore[misc]
    """One row of action items (a sub-form: the outer form carries the CSRF token)."""

    id = HiddenField()
    text = StringField("What to do", validators=[Length(max=2000)])
    # Checked for the rows that are kept (blank rows have no team to check).
    team = SelectField(
        "Team",
        choices=_choices(TEAMS.items(), blank="Choose a team"),
        validate_choice=False,
    )
    owner = StringField("Owner", validators=[Length(max=200)])
    due_date = DateField("Due", validators=[Optional()])
    done = BooleanField("Done")


LONG_TEXT = [Optional(), Length(max=20_000)]


#: Blank action item rows offered under the existing ones.
BLANK_ACTION_ROWS = 2
#: The most action items one postmortem has.
MAX_ACTION_ROWS = 50


class PostmortemForm(FlaskForm):  # type: ignore[misc]
    """The postmortem template of PRODUCT.md, as a form."""

    version = HiddenField()
    # Immediate circumstances
    what_happened = TextAreaField(
        "What happened: the final straw", validators=LONG_TEXT
    )
    who_was_involved = TextAreaField(
        "Who was involved, and their perspectives", validators=LONG_TEXT
    )
    followed_process = RadioField(
        "Did everything follow our processes?",
        choices=_choices(YES_PARTLY_NO.items()),
        validators=[Optional()],
    )
    process_deviation = TextAreaField(
        "If not: who decided to handle it differently, and why", validators=LONG_TEXT
    )
    immediate_steps = TextAreaField(
        "Immediate steps to prevent a repeat", validators=LONG_TEXT
    )
    # The relationship
    communication = TextAreaField(
        "How was ongoing communication (consistent, engaged, or not)?",
        validators=LONG_TEXT,
    )
    sale_sticking_points = TextAreaField(
        "Were the topics of this complaint sticking points already in the sale?",
        validators=LONG_TEXT,
    )
    conflict_cycle = TextAreaField(
        "Was there a cycle of conflict and resolution?", validators=LONG_TEXT
    )
    outside_factors = TextAreaField(
        "Outside factors (a competitor, their leadership or budget changing)",
        validators=LONG_TEXT,
    )
    customer_said = TextAreaField(
        "What the customer said when asked directly", validators=LONG_TEXT
    )
    # Conclusion
    root_causes = SelectMultipleField(
        "Root causes", choices=_choices((c, m) for c, (m, _t) in ROOT_CAUSES.items())
    )
    primary_cause = RadioField(
        "Primary root cause",
        choices=_choices((c, m) for c, (m, _t) in ROOT_CAUSES.items()),
        validators=[Optional()],
    )
    other_cause = StringField(
        "“Other” root cause: what was it?", validators=[Length(max=2000)]
    )
    preventable = RadioField(
        "Was it preventable?",
        choices=_choices(YES_PARTLY_NO.items()),
        validators=[Optional()],
    )
    lessons = TextAreaField(
        "Lessons (no blame; frank about our own actions)", validators=LONG_TEXT
    )
    winback_recommendation = RadioField(
        "Win-back recommendation",
        choices=_choices(WINBACK_RECOMMENDATIONS.items()),
        validators=[Optional()],
    )
    action_items = FieldList(
        FormField(ActionItemForm), "Action", min_entries=0, max_entries=MAX_ACTION_ROWS
    )

    def filled_rows(self) -> list[int]:
        """The positions of the action item rows with anything in them (a
        blank row is skipped; an emptied one removes its action item)."""
        return [
            index
            for index, entry in enumerate(self.action_items.entries)
            if (entry.form.text.data or "").strip()
            or entry.form.owner.data
            or entry.form.due_date.data
            or entry.form.done.data
        ]

    def as_input(self) -> postmortems.PostmortemInput:
        """The postmortem as the service takes it: filled rows only."""
        rows = []
        for index in self.filled_rows():
            row = self.action_items.entries[index].form
            rows.append(
                postmortems.ActionItemInput(
                    id=parse_int(row.id.data),
                    text=(row.text.data or "").strip(),
                    team=row.team.data or "",
                    owner=row.owner.data,
                    due_date=row.due_date.data,
                    done=bool(row.done.data),
                )
            )
        return postmortems.PostmortemInput(
            texts={name: self[name].data for name in postmortems.TEXT_FIELDS},
            followed_process=self.followed_process.data,
            preventable=self.preventable.data,
            winback_recommendation=self.winback_recommendation.data,
            root_causes=list(self.root_causes.data or []),
            primary_cause=self.primary_cause.data,
            other_cause=self.other_cause.data,
            action_items=rows,
        )

    def blank_rows(self) -> list[int]:
        """The positions of the action item rows nobody has written in."""
        return [
            index
            for index, entry in enumerate(self.action_items.entries)
            if not (entry.form.text.data or entry.form.id.data or entry.form.owner.data)
        ]

    def with_blank_rows(self) -> PostmortemForm:
        """Offer blank action item rows under the others (posted rows keep
        errors), as room allows; blank means blank: no team is chosen for
        the writer."""
        room = self.action_items.max_entries - len(self.action_items)
        for _ in range(min(max(0, BLANK_ACTION_ROWS - len(self.blank_rows())), room)):
            self.action_items.append_entry({"team": ""})
        return self

    def field_errors(self, name: str) -> list[str]:
        """The error list of the field the service named: ``action_items-1-team``
        counts the filled rows only, as the service does; the form, every row."""
        if name.startswith("action_items-"):
            _, index, field_name = name.split("-", 2)
            row = self.filled_rows()[int(index)]
            field = getattr(self.action_items.entries[row].form, field_name)
        else:
            field = self[name]
        if not isinstance(field.errors, list):
            field.errors = list(field.errors)
        errors: list[str] = field.errors
        return errors
