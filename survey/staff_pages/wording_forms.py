"""The wording forms: the reasons (which, in what order, the team's own) and
the texts of one language. Field rules only; the service checks the whole."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import Length, NumberRange, Optional

from survey.vocabulary import ROOT_CAUSES
from survey.wording.service import MAX_TEXT_LENGTH

#: The root causes by their meaning, as the postmortem form names them.
ROOT_CAUSE_CHOICES = [
    SelectChoice("", "None in particular"),
    *(SelectChoice(code, meaning) for code, (meaning, _team) in ROOT_CAUSES.items()),
]


# WTForms and Flask-WTF ship no type hints, hence the ignores.
class ReasonRow(Form):  # type: ignore[misc]
    """One reason: shown or not, where, and (the team's own) its code,
    English label and the root cause it usually points to."""

    code = HiddenField()
    new_code = StringField("Code", validators=[Length(max=40)])
    shown = BooleanField("Shown")
    position = IntegerField(
        "Order", validators=[Optional(), NumberRange(min=1, max=99)]
    )
    label = StringField("Label (English)", validators=[Length(max=MAX_TEXT_LENGTH)])
    root_cause = SelectField(
        "Usually points to", choices=ROOT_CAUSE_CHOICES, default=""
    )
    remove = BooleanField("Remove this reason")


class ReasonsForm(FlaskForm):  # type: ignore[misc]
    """The reasons of the survey, as one new version."""

    based_on = HiddenField()
    rows = FieldList(FormField(ReasonRow))


def texts_form(keys: list[tuple[str, str]], **data: Any) -> FlaskForm:
    """Return a form with one text field per ``(key, label)``, named
    ``text_0``, ``text_1``... in that order (a key holds dots)."""

    class TextsForm(FlaskForm):  # type: ignore[misc]
        based_on = HiddenField()

    for index, (_key, label) in enumerate(keys):
        setattr(
            TextsForm,
            f"text_{index}",
            StringField(label, validators=[Length(max=MAX_TEXT_LENGTH)]),
        )
    return TextsForm(**data)
