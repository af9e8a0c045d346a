"""GET /api/v1/openapi.json: the OpenAPI 3.1 description of the API.

The schemas come from the pydantic models that validate the input
(``DepartureIn``) and write or describe the output (``survey.api.schemas``,
``survey.answers.schemas``): one description each, never written twice. A
test fails when a route under /api/v1 is missing here, and schemathesis
checks the API's answers against this document.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from flask import jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.wrappers import Response as WerkzeugResponse

from survey.answers.schemas import ResponsePage
from survey.api import bp
from survey.api.paging import ExportPageQuery
from survey.api.responses import ResponsesQuery
from survey.api.schemas import (
    DepartureOut,
    ErasureOut,
    ErrorOut,
    InsightsOut,
    StripeReceived,
    WinbackPage,
)
from survey.departures.schemas import DepartureIn
from survey.insights.service import InsightsFilter, InsightsPeriod
from survey.validation import Query
from survey.winback.service import WinbackQuery

PREFIX = "/api/v1"
#: The extension naming the scope an operation needs (also in its security).
SCOPE_EXTENSION = "x-required-scope"
BEARER = "bearerAuth"

#: (model, mode): the input models validate, the others are written.
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (DepartureIn, "validation"),
    (DepartureOut, "serialization"),
    (ResponsePage, "serialization"),
    (WinbackPage, "serialization"),
    (ErasureOut, "serialization"),
    (InsightsOut, "serialization"),
    (ErrorOut, "serialization"),
    (StripeReceived, "serialization"),
]

_DEPARTURE_EXAMPLE = {
    "external_id": "sub_123",
    "company": "Acme Inc.",
    "contact_name": "Ada Lovelace",
    "contact_email": "ada@acme.example",
    "plan": "growth",
    "mrr_cents": 29900,
    "currency": "EUR",
    "segment": "mid-market",
    "cancelled_at": "2026-11-20T10:00:00Z",
    "locale": "en",
    "csm_email": "csm@us.example",
    "billing_reason": "cancelled",
}
_DEPARTURE_OUT_EXAMPLE = {
    "id": "q3Xb0n3dW1x9s2Lk",
    **_DEPARTURE_EXAMPLE,
    "source": "api",
    "created_at": "2026-11-20T10:00:01Z",
    "invited_at": "2026-11-20T10:00:01Z",
    "first_opened_at": None,
    "review_status": None,
    "survey_url": "https://survey.example.com/s/...",
}
_ANSWERS_EXAMPLE = {
    "reason": "too_expensive",
    "reason_other": None,
    "factors": ["missing_features"],
    "details": "The new pricing doubled our bill.",
    "destination": "competitor",
    "destination_name": "Globex",
    "follow_up_reason": "too_expensive",
    "follow_up_answer": "Half the price.",
    "answered_at": "2026-11-21T08:30:00Z",
    "updated_at": "2026-11-21T08:32:10Z",
}
_CONSENT_EXAMPLE = {"state": "granted", "since": "2026-11-21T08:32:10Z"}
_RESPONSES_EXAMPLE = {
    "responses": [
        {
            "departure_id": "q3Xb0n3dW1x9s2Lk",
            "external_id": "sub_123",
            "company": "Acme Inc.",
            "contact_name": "Ada Lovelace",
            "contact_email": "ada@acme.example",
            "plan": "growth",
            "mrr_cents": 29900,
            "currency": "EUR",
            "segment": "mid-market",
            "cancelled_at": "2026-11-20T10:00:00Z",
            "source": "api",
            **_ANSWERS_EXAMPLE,
            "consent": _CONSENT_EXAMPLE,
        }
    ],
    "next_cursor": "1042",
}
_WINBACK_EXAMPLE = {
    "contacts": [
        {
            "contact_email": "ada@acme.example",
            "contact_name": "Ada Lovelace",
            "company": "Acme Inc.",
            "plan": "growth",
            "segment": "mid-market",
            "mrr_cents": 29900,
            "currency": "EUR",
            "primary_reason": "too_expensive",
            "postmortem_recommendation": None,
            "consented_at": "2026-11-21T08:32:10.000000Z",
            "consent_wording_version": "2026-11-v1",
            "unsubscribe_url": "https://survey.example.com/w/...",
        }
    ],
    "next_cursor": None,
}
_ERROR_EXAMPLE = {
    "error": "invalid",
    "message": "The departure is not valid.",
    "fields": {"contact_email": ["This field is required."]},
}

_ERRORS = {
    "400": "Bad request",
    "401": "No token, or an unknown or revoked one (`WWW-Authenticate: Bearer`).",
    "403": "The token lacks the scope this operation needs.",
    "404": "Nothing at that path: an unknown id, or a path segment no route "
    "takes (a `/` or a line break in it).",
    "413": "The body is larger than `SURVEY_API_MAX_BODY_BYTES`.",
    "422": "Invalid input; `fields` says which and why. A NUL character "
    "anywhere in the address is refused this way too.",
    "503": "The database cannot serve now; retry after `Retry-After` seconds.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _errors(*codes: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for code in codes:
        answers[code] = {
            "description": _ERRORS[code],
            "content": _json(_ref(ErrorOut), _ERROR_EXAMPLE if code == "422" else None),
        }
        if code == "503":
            answers[code]["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
    return answers


def _parameters(*models: type[Query]) -> list[dict[str, Any]]:
    """The query parameters the models read, as their fields describe them."""
    parameters = []
    for model in models:
        schema = model.model_json_schema(by_alias=True)
        for name, field in schema["properties"].items():
            field = dict(field)
            description = field.pop("description", "")
            field.pop("title", None)
            if field.get("default", ...) is None:
                del field["default"]  # left out: no value
            # Optional in Python; in a query string a parameter is given or not.
            for choice in field.pop("anyOf", []):
                if choice.get("type") != "null":
                    field.update(choice)
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": description,
                    "schema": field,
                }
            )
    return parameters


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _operation(
    summary: str,
    description: str,
    scope: str | None,
    ok: dict[str, Any],
    errors: tuple[str, ...],
    **more: Any,
) -> dict[str, Any]:
    """Return an operation; ``scope`` is its bearer token's, None: no token."""
    operation: dict[str, Any] = {"summary": summary, "description": description}
    if scope is None:
        operation["security"] = []
    else:
        operation["description"] += f"\n\nRequires a token with the scope `{scope}`."
        operation["security"] = [{BEARER: [scope]}]
        operation[SCOPE_EXTENSION] = scope
        errors = ("401", "403", *errors)
    operation.update(more)
    # What the operation says of a status outweighs the general words.
    operation["responses"] = {**_errors(*errors), **ok}
    return operation


def _paths() -> dict[str, Any]:
    departure_ok = {
        "content": _json(_ref(DepartureOut), _DEPARTURE_OUT_EXAMPLE),
        "headers": {
            "Location": {
                "description": "The departure's address in this API.",
                "schema": {"type": "string"},
            }
        },
    }
    return {
        "/departures": {
            "post": _operation(
                "Record a departure",
                "Record a lost account and queue its survey invitation; "
                "idempotent on `external_id`. The answer carries `survey_url` "
                "only when the departure is new (201), and the customer's "
                "`response` and `consent` only when the token also holds "
                "`responses:read`.",
                "departures:write",
                {
                    "201": {"description": "Recorded.", **departure_ok},
                    "200": {
                        "description": "Known already (same `external_id`): "
                        "the departure as first recorded.",
                        **departure_ok,
                    },
                },
                ("413", "422", "503"),
                operationId="createDeparture",
                requestBody={
                    "required": True,
                    "content": _json(_ref(DepartureIn), _DEPARTURE_EXAMPLE),
                },
            )
        },
        "/departures/{public_id}": {
            "get": _operation(
                "Read a departure",
                "The departure, its `response` (null if not answered), "
                "`consent` and `review_status`; never the survey link.",
                "responses:read",
                {
                    "200": {
                        "description": "The departure.",
                        "content": _json(
                            _ref(DepartureOut),
                            {
                                **_DEPARTURE_OUT_EXAMPLE,
                                "survey_url": None,
                                "review_status": "new",
                                "response": _ANSWERS_EXAMPLE,
                                "consent": _CONSENT_EXAMPLE,
                            },
                        ),
                    }
                },
                ("404", "422", "503"),
                operationId="getDeparture",
                parameters=[_path("public_id", "The departure's public id.")],
            )
        },
        "/responses": {
            "get": _operation(
                "List survey answers",
                "Answered surveys with their departure's account facts and "
                "consent, oldest answer first, a page at a time: follow "
                "`next_cursor` until it is null. Erased people's departures "
                "are left out. `since` filters on when the answers last "
                "changed (`updated_at`, which is also set by the first "
                "answer); a consent withdrawn later through its link does not "
                "change it. To stay in sync, pass as `since` the time you "
                "started your previous run.",
                "responses:read",
                {
                    "200": {
                        "description": "One page.",
                        "content": _json(_ref(ResponsePage), _RESPONSES_EXAMPLE),
                    }
                },
                ("422", "503"),
                operationId="listResponses",
                parameters=_parameters(ResponsesQuery),
            )
        },
        "/winback/contacts": {
            "get": _operation(
                "List win-back contacts",
                "Contacts who consented and have not withdrawn (through any "
                "of their departures), are not erased, and whose postmortem "
                "does not say `do_not_contact`. Every read is audited.",
                "winback:read",
                {
                    "200": {
                        "description": "One page.",
                        "content": _json(_ref(WinbackPage), _WINBACK_EXAMPLE),
                    }
                },
                ("422", "503"),
                operationId="listWinbackContacts",
                parameters=_parameters(WinbackQuery, ExportPageQuery),
            )
        },
        "/winback/contacts.csv": {
            "get": _operation(
                "Export win-back contacts as CSV",
                "The whole list, streamed as CSV (the JSON rows' columns); a "
                "cell starting with `=`, `+`, `-`, `@`, tab or carriage "
                "return gets a leading `'`. Audited.",
                "winback:read",
                {
                    "200": {
                        "description": "The list as CSV.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    }
                },
                ("422", "503"),
                operationId="exportWinbackContacts",
                parameters=_parameters(WinbackQuery),
            )
        },
        "/contacts/{email}": {
            "delete": _operation(
                "Erase a person",
                "Erase everything personal about the person at `email`, "
                "through all their departures. Idempotent: someone unknown, "
                "or erased already, erases nothing. Anything but an address "
                "is a 422.",
                "contacts:erase",
                {
                    "200": {
                        "description": "Done.",
                        "content": _json(_ref(ErasureOut), {"erased_departures": 1}),
                    }
                },
                ("404", "422", "503"),
                operationId="eraseContact",
                parameters=[_path("email", "The person's email address.")],
            )
        },
        "/insights": {
            "get": _operation(
                "Read every insights panel",
                "The insights of the departures cancelled in the period. "
                "Amounts are minor units and never added across currencies. "
                "Erased departures are not counted.",
                "insights:read",
                {
                    "200": {
                        "description": "Every panel.",
                        "content": _json(_ref(InsightsOut)),
                    }
                },
                ("422", "503"),
                operationId="getInsights",
                parameters=_parameters(InsightsPeriod, InsightsFilter),
            )
        },
        "/webhooks/stripe": {
            "post": _operation(
                "Take in a Stripe event",
                "Stripe's webhook: a cancelled subscription records a "
                "departure. Signed by Stripe (header `Stripe-Signature`, "
                "secret `SURVEY_STRIPE_WEBHOOK_SECRET`, 5-minute tolerance); "
                "no bearer token. Idempotent on the event id. An unsigned or "
                "badly signed event is a 400 and records nothing.",
                None,
                {
                    "200": {
                        "description": "Received (or seen before).",
                        "content": _json(
                            _ref(StripeReceived),
                            {"received": True, "outcome": "handled"},
                        ),
                    },
                    "400": {
                        "description": "`bad_signature` (unsigned, badly signed "
                        "or too old) or `bad_payload`; nothing is recorded.",
                        "content": _json(
                            _ref(ErrorOut),
                            {
                                "error": "bad_signature",
                                "message": "The signature does not match.",
                                "fields": {},
                            },
                        ),
                    },
                    "503": {
                        **_errors("503")["503"],
                        "description": "`stripe_not_configured` (no "
                        "`SURVEY_STRIPE_WEBHOOK_SECRET`), or the database "
                        "cannot serve now.",
                    },
                },
                ("413",),
                operationId="receiveStripeEvent",
                parameters=[
                    {
                        "name": "Stripe-Signature",
                        "in": "header",
                        "required": True,
                        "description": "Stripe's signature of the raw body.",
                        "schema": {"type": "string"},
                    }
                ],
                requestBody={
                    "required": True,
                    "description": "The event exactly as Stripe sends it.",
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["id", "type", "data"],
                            "properties": {
                                "id": {"type": "string"},
                                "type": {"type": "string"},
                                "data": {
                                    "type": "object",
                                    "required": ["object"],
                                    "properties": {"object": {"type": "object"}},
                                },
                            },
                        },
                        {
                            "id": "evt_123",
                            "type": "customer.subscription.deleted",
                            "data": {"object": {"id": "sub_123"}},
                        },
                    ),
                },
            )
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                "The OpenAPI 3.1 description of this API.",
                None,
                {
                    "200": {
                        "description": "The document.",
                        "content": _json({"type": "object"}),
                    }
                },
                (),
                operationId="getOpenApi",
            )
        },
    }


@cache
def _document() -> dict[str, Any]:
    _keys, definitions = models_json_schema(
        _MODELS, ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Exit Survey API",
            "version": "1",
            "description": "Record departures, read what customers answered, "
            "export the win-back list, erase people, read the insights. "
            "Send `Authorization: Bearer TOKEN` (a token made with "
            "`flask --app survey tokens create`); each operation says the "
            "scope it needs. Errors are always "
            '`{"error", "message", "fields"}`.',
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{BEARER: []}],
        "paths": {PREFIX + path: item for path, item in _paths().items()},
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token; its scopes decide what it may "
                    "do (see each operation's `x-required-scope`).",
                }
            },
        },
    }


def document() -> dict[str, Any]:
    """Return the OpenAPI document (a copy: the caller may change it)."""
    return copy.deepcopy(_document())


@bp.get("/openapi.json")
def openapi_json() -> WerkzeugResponse:
    """Serve the OpenAPI document; no token needed (it holds no data)."""
    return jsonify(_document())
