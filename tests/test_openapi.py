"""GET /api/v1/openapi.json: complete, valid, true to the API (schemathesis)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from survey.api import openapi
from survey.api.auth import SCOPES
from survey.api.openapi import SCOPE_EXTENSION
from survey.vocabulary import REASON_TEXTS
from tests.factories import auth, make_consenting, make_departure, make_token

URL = "/api/v1/openapi.json"
METHODS = {"get", "post", "put", "patch", "delete"}


def document(client: Any) -> dict[str, Any]:
    response = client.get(URL)
    assert response.status_code == 200
    return response.get_json()


def routes(app: Flask) -> set[tuple[str, str]]:
    """Return (method, path) of every route under /api/v1, paths as OpenAPI
    writes them (``<path:email>`` becomes ``{email}``)."""
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            found.add((method.lower(), path))
    return found


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_api_route_is_documented(app, client):
    missing = routes(app) - operations(document(client))
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


def test_a_new_route_without_documentation_fails_the_check(make_app):
    app = make_app()

    @app.get("/api/v1/undocumented/<int:number>")
    def undocumented(number: int) -> str:
        return str(number)

    client = app.test_client()
    assert routes(app) - operations(document(client)) == {
        ("get", "/api/v1/undocumented/{number}")
    }


def test_every_documented_operation_exists(app, client):
    documented = operations(document(client))
    assert documented - routes(app) == set()


def test_the_document_is_valid_openapi_3_1(app, client):
    doc = document(client)
    assert doc["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(doc).validate()  # OpenAPI 3.1's meta-schema
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_the_document_needs_no_token_and_is_not_stored(client):
    response = client.get(URL)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def _media_examples(doc: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            bodies = [operation.get("requestBody", {})]
            bodies += operation["responses"].values()
            for body in bodies:
                for media in body.get("content", {}).values():
                    if "example" in media:
                        label = f"{method.upper()} {path}"
                        found.append((label, media["schema"], media["example"]))
    return found


def test_every_example_matches_its_schema(client):
    doc = document(client)
    examples = _media_examples(doc)
    assert len(examples) >= 10
    for label, schema, example in examples:
        # The schema's $refs point into the document's components.
        root = {**schema, "components": doc["components"]}
        errors = [
            e.message for e in jsonschema_rs.validator_for(root).iter_errors(example)
        ]
        assert not errors, (label, errors)


def test_the_schemas_are_the_input_models_own(client):
    from survey.departures.schemas import DepartureIn

    doc = document(client)
    body = doc["paths"]["/api/v1/departures"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    published = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    own = DepartureIn.model_json_schema(ref_template="#/components/schemas/{model}")
    assert published == own


#: A value each query model refuses, per operation and parameter.
REFUSED = {
    "/api/v1/responses": {"since": "yesterday", "limit": "1001"},
    "/api/v1/winback/contacts": {
        "reason": "bored",
        "since": "soon",
        "until": "1900-01-01",
        "distinct": "name",
        "limit": "10001",
    },
    "/api/v1/winback/contacts.csv": {"distinct": "name", "until": "never"},
    "/api/v1/insights": {
        "from": "2026-13-01",
        "to": "today",
        "days": "8",
        "csm": "not an address",
        "currency": "dollars",
    },
}


def test_the_query_parameters_are_the_query_models_own(app, client):
    """The document lists the fields of the models that read each query
    string, and a bad value of a documented parameter is refused under its
    name: what is documented is what is read."""
    from survey.api.paging import ExportPageQuery
    from survey.api.responses import ResponsesQuery
    from survey.insights.service import InsightsFilter, InsightsPeriod
    from survey.winback.service import WinbackQuery

    def names(*models):
        return [
            field.alias or name
            for model in models
            for name, field in model.model_fields.items()
        ]

    read_by = {
        "/api/v1/responses": names(ResponsesQuery),
        "/api/v1/winback/contacts": names(WinbackQuery, ExportPageQuery),
        "/api/v1/winback/contacts.csv": names(WinbackQuery),
        "/api/v1/insights": names(InsightsPeriod, InsightsFilter),
    }
    doc = document(client)
    token = auth(make_token(app, *SCOPES))
    for path, models_read in read_by.items():
        documented = [p["name"] for p in doc["paths"][path]["get"]["parameters"]]
        assert documented == models_read, path
        for name, bad in REFUSED[path].items():
            assert name in documented
            answer = client.get(path, query_string={name: bad}, headers=token)
            assert answer.status_code == 422, (path, name, answer.status_code)
            assert list(answer.get_json()["fields"]) == [name], (path, name)


def test_the_answers_carry_the_fields_their_models_name(app, client):
    """Schemathesis checks the fields' types; this, that none is left out of
    the models (the schemas let answers carry more)."""
    from survey.api.schemas import DepartureOut, InsightsOut, WinbackContact
    from survey.winback.service import COLUMNS

    token = auth(make_token(app, *SCOPES))
    created = client.post(
        "/api/v1/departures",
        json={"external_id": "sub_1", "contact_email": "ada@acme.example"},
        headers=token,
    )
    assert set(created.get_json()) == set(DepartureOut.model_fields)
    got = client.get(created.headers["Location"], headers=token).get_json()
    assert set(got) == set(DepartureOut.model_fields) - {"survey_url"}
    insights = client.get("/api/v1/insights", headers=token).get_json()
    assert set(insights) == set(InsightsOut.model_fields)
    assert set(WinbackContact.model_fields) == set(COLUMNS)


def _reason_codes_in(value: Any) -> Iterator[str]:
    """Every value under a key that holds reason codes, however deep."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("reason", "follow_up_reason", "said") and inner is not None:
                yield inner
            elif key == "factors":
                yield from inner
            else:
                yield from _reason_codes_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _reason_codes_in(inner)


def test_the_examples_use_real_reason_codes(client):
    """A schema says "a string"; a program copying an example needs a code
    the survey knows."""
    codes = [
        code
        for _label, _schema, example in _media_examples(document(client))
        for code in _reason_codes_in(example)
    ]
    assert "too_expensive" in codes  # the walk finds them
    assert set(codes) <= set(REASON_TEXTS), set(codes) - set(REASON_TEXTS)


def test_each_operation_needs_the_scope_it_names(app, client):
    """A token with every scope but the one documented is refused (403)."""
    doc = document(client)
    checked = 0
    for method, path in sorted(operations(doc)):
        operation = doc["paths"][path][method]
        if operation["security"] == []:
            assert SCOPE_EXTENSION not in operation
            continue
        scope = operation[SCOPE_EXTENSION]
        assert scope in SCOPES
        assert operation["security"] == [{"bearerAuth": [scope]}]
        assert f"`{scope}`" in operation["description"]
        others = auth(make_token(app, *(s for s in SCOPES if s != scope)))
        url = re.sub(r"\{[^}]+\}", "x%40example.com", path)
        response = client.open(url, method=method.upper(), headers=others)
        assert response.status_code == 403, (method, path)
        allowed = auth(make_token(app, scope))
        response = client.open(url, method=method.upper(), headers=allowed)
        assert response.status_code != 403, (method, path)
        response.close()  # a streamed answer holds its request until closed
        checked += 1
    assert checked >= 7


# --- Schemathesis: the API's answers against the document -----------------------

#: Bounded: the examples, the coverage phase's boundary cases, and this many
#: generated cases per operation (the whole run takes about 20 s).
MAX_EXAMPLES = 15

# Hypothesis keeps caches (constants found in our modules, Unicode tables) in
# ./.hypothesis whatever its database setting, from the moment schemathesis
# builds the tests below: keep them out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "exit-survey-hypothesis")

schema = schemathesis.openapi.from_dict(
    openapi.document(),
    config=schemathesis.Config.from_dict(
        {
            "cache": {"enabled": False},
            "generation": {"database": "none", "max-examples": MAX_EXAMPLES},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                # Our validators know more than a JSON Schema can say (real
                # addresses, ISO 4217 codes, locales, dates from 1970 to
                # 2099): schema-valid input may still be a 422.
                "positive_data_acceptance": {"enabled": False},
                # ... and it is more lenient than a schema says: an empty
                # parameter means "not set", and Python's ISO 8601 reader
                # takes forms JSON Schema's formats do not. Schema-violating
                # input is still sent: it must not be a 5xx or undocumented.
                "negative_data_rejection": {"enabled": False},
                # It probes without the token through a transport of its own,
                # not the WSGI app; test_api.py checks the 401s.
                "ignored_auth": {"enabled": False},
            },
        }
    ),
)


def test_schemathesis_tests_the_served_document(client):
    assert document(client) == openapi.document()


@pytest.fixture
def api_app(make_app: Any) -> Flask:
    """An app that takes Stripe events (signed with a secret we do not give),
    holding answered, consenting and unanswered departures: the lists'
    answers are checked against the document with rows in them, not empty."""
    app = make_app(STRIPE_WEBHOOK_SECRET="whsec_test")
    make_consenting(app, contact_email="ana@listed.example", company="Ana & Co")
    make_consenting(app, reason="too_expensive", contact_email="bo@listed.example")
    make_departure(app, contact_email="cy@unanswered.example")
    return app


@pytest.fixture
def every_scope(api_app: Flask) -> dict[str, str]:
    """Headers with a token holding every scope."""
    return auth(make_token(api_app, *SCOPES))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    database=None,  # no .hypothesis folder in the repository
    # The same examples each run: a suite that passes passes again (CI once
    # met a line break in a path that no earlier run had tried).
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_documented(
    case: Any, api_app: Flask, every_scope: dict[str, str]
) -> None:
    case.call_and_validate(app=api_app, headers=every_scope)


def test_a_path_segment_no_route_takes_is_answered_as_documented(app, client):
    """CI's schemathesis run once sent a line break as the erased address."""
    doc = document(client)
    headers = auth(make_token(app, *SCOPES))
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if "{" not in path:
                continue
            odd = re.sub(r"\{\w+\}", "a%0Ab", "/api/v1" + path)
            answer = client.open(odd, method=method.upper(), headers=headers)
            assert str(answer.status_code) in operation["responses"], (method, path)
