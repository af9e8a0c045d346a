"""Exit Survey: ask departing customers why, learn from it, win some back."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from survey.resources import resource_dir

__all__ = ["create_app", "resource_dir"]


class SurveyFlask(Flask):
    """Flask, telling once per function (not per request) whether it is async.

    Flask asks ``inspect`` about every hook and view on every request; the
    answer never changes, and asking made survey GETs about 4 % slower
    (interleaved A/B, 2026-12-03).
    Bounded: a function made anew per request (``after_this_request``) only
    takes a place for a while.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ensure_sync = lru_cache(maxsize=256)(super().ensure_sync)

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return self._ensure_sync(func)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the app: defaults, instance settings, SURVEY_*, then ``config``."""
    app = SurveyFlask(
        __name__,
        instance_path=(config or {}).get("INSTANCE_PATH")
        or os.environ.get("SURVEY_INSTANCE_PATH"),
        instance_relative_config=True,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
    )
    from survey import cli, db, errors, i18n, logs, metrics, outbox, security
    from survey import config as settings
    from survey.sessions import CookielessSessionInterface

    settings.load(app, config)
    # JSON answers keep their fields in the order the code gives them (the
    # models', the columns'), and a page of a thousand contacts is not sorted
    # key by key (8 % of a win-back page's time).
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.session_interface = CookielessSessionInterface()
    if proxies := app.config["PROXY_COUNT"]:
        # Trust X-Forwarded-For/-Proto only from that many proxies in front.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies
        )
    logs.init_app(app)  # the request id, before anything logs a line
    metrics.init_app(app)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    i18n.init_app(app)
    outbox.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    csrf = CSRFProtect(app)

    from survey import api, health
    from survey.api import metrics as metrics_page
    from survey.branding import assets as brand_assets
    from survey.public import views as public
    from survey.staff_pages import admin as staff_admin
    from survey.staff_pages import (
        branding,
        formatting,
        insights,
        review,
        staff,
        winback,
        wording,
    )
    from survey.staff_pages import webhooks as webhook_pages

    staff.init_app(app)
    formatting.init_app(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(staff_admin.bp)
    app.register_blueprint(webhook_pages.bp)
    app.register_blueprint(brand_assets.assets)
    app.register_blueprint(branding.admin)
    app.register_blueprint(wording.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(winback.bp)
    app.register_blueprint(insights.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(metrics_page.bp)
    csrf.exempt(api.bp)  # token-authenticated; no cookies involved
    csrf.exempt(public.bp)  # no cookies either: its forms are bound to the link
    cli.init_app(app)
    return app
