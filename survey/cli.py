"""Command line: ``flask --app survey <group> <command>``."""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import click
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from survey import clock, db, outbox, resource_dir, webhooks
from survey.config import require_mail_server
from survey.errors import DatabaseBusy, SurveyError
from survey.links import external_url
from survey.staff.models import ROLES

log = logging.getLogger(__name__)

db_cli = AppGroup("db", help="Create and migrate the database schema.")
tokens_cli = AppGroup("tokens", help="Manage API tokens.")
departures_cli = AppGroup("departures", help="Record departures.")
outbox_cli = AppGroup("outbox", help="Deliver queued emails.")
users_cli = AppGroup("users", help="Manage staff users.")
review_cli = AppGroup("review", help="The review queue.")
contacts_cli = AppGroup("contacts", help="People's data: export, erase, retention.")
digest_cli = AppGroup("digest", help="The weekly insights digest for staff.")
reminders_cli = AppGroup("reminders", help="Remind contacts who have not answered.")
webhooks_cli = AppGroup("webhooks", help="Outgoing webhooks (Standard Webhooks).")


def alembic_config() -> AlembicConfig:
    """Return an Alembic configuration bound to the current app's database."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.set_main_option(
        "file_template",
        "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s",
    )
    config.attributes["engine"] = db.engine()
    return config


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    alembic_command.upgrade(alembic_config(), revision)
    click.echo(f"Database at {revision}.")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` removes everything)."""
    alembic_command.downgrade(alembic_config(), revision)
    click.echo(f"Database at {revision}.")


@db_cli.command("current")
def db_current() -> None:
    """Show the database's revision."""
    alembic_command.current(alembic_config(), verbose=False)


@db_cli.command("revision")
@click.option("-m", "--message", required=True, help="What the migration does.")
def db_revision(message: str) -> None:
    """Autogenerate a migration from the models (read and edit it afterwards)."""
    alembic_command.revision(alembic_config(), message=message, autogenerate=True)


@tokens_cli.command("create")
@click.option("--name", required=True, help="Who or what uses the token.")
@click.option("--scope", "scopes", multiple=True, required=True, help="Repeatable.")
def tokens_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create an API token and print it once."""
    from survey.api.auth import create_token

    with db.write_session() as session:
        try:
            token, secret = create_token(session, name, list(scopes))
        except SurveyError as exc:
            raise click.UsageError(exc.message) from None
        session.commit()
    click.echo(secret)
    click.echo(
        f"Token {token.display_prefix}… ({', '.join(token.scopes)}) created; "
        "it is shown only this once.",
        err=True,
    )


@tokens_cli.command("list")
def tokens_list() -> None:
    """List API tokens: prefix, name, scopes, created, revoked."""
    from survey.api.auth import list_tokens

    with db.new_session() as session:
        for token in list_tokens(session):
            revoked = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else ""
            click.echo(
                f"{token.display_prefix}…  {token.name}  {','.join(token.scopes)}  "
                f"created {token.created_at:%Y-%m-%d}  {revoked}".rstrip()
            )


@tokens_cli.command("revoke")
@click.argument("prefix")
def tokens_revoke(prefix: str) -> None:
    """Revoke the token that starts with PREFIX (as `tokens list` shows it)."""
    from survey.api.auth import revoke_token

    with db.write_session() as session:
        try:
            token = revoke_token(session, prefix)
        except SurveyError as exc:
            raise click.ClickException(exc.message) from None
        session.commit()
    click.echo(f"Token {token.display_prefix}… ({token.name}) revoked.")


@users_cli.command("create")
@click.option("--email", required=True, help="The user's address (their login).")
@click.option("--name", required=True, help="The user's name.")
@click.option(
    "--role", required=True, type=click.Choice(ROLES), help="What they may do."
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (else one is generated).",
)
def users_create(email: str, name: str, role: str, password_stdin: bool) -> None:
    """Create a staff user; a generated password is printed once."""
    from survey.staff import passwords, service

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = passwords.generate_password()
    with db.write_session() as session:
        try:
            user = service.create_user(
                session, email=email, name=name, role=role, password=password
            )
        except SurveyError as exc:
            details = [m for messages in exc.fields.values() for m in messages]
            raise click.ClickException(" ".join(details) or exc.message) from None
        session.commit()
    click.echo(f"Staff user {user.email} ({user.role}) created.", err=True)
    if not password_stdin:
        click.echo(password)
        click.echo("That password is shown only this once.", err=True)


@users_cli.command("list")
def users_list() -> None:
    """List staff users: email, name, role, status, last sign-in."""
    from survey.staff import service

    with db.new_session() as session:
        for user in service.list_users(session):
            last = (
                f"{user.last_login_at:%Y-%m-%d %H:%M}"
                if user.last_login_at
                else "never"
            )
            status = "active" if user.active else "deactivated"
            click.echo(f"{user.email}  {user.name}  {user.role}  {status}  {last}")


@users_cli.command("deactivate")
@click.argument("email")
def users_deactivate(email: str) -> None:
    """Deactivate a staff user and end all their sessions."""
    from survey.staff import service

    with db.write_session() as session:
        user = service.find_user(session, email)
        if user is None:
            raise click.ClickException(f"No staff user {email!r}.")
        try:
            service.set_active(session, user, False, actor_id=None)
        except SurveyError as exc:
            raise click.ClickException(exc.message) from None
        session.commit()
    click.echo(f"{user.email} is deactivated and signed out everywhere.")


@departures_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def departures_import(path: Path) -> None:
    """Import departures from a CSV file whose header names the API's fields."""
    from survey.departures.importer import BadFile, import_departures

    session = db.new_session()
    with session, path.open("rb") as f:
        try:
            report = import_departures(
                session,
                f,
                begin=lambda: db.begin_write(session),
                commit=session.commit,
            )
        except BadFile as exc:
            raise click.ClickException(f"{path}: {exc}") from None
    if report.ignored_columns:
        click.echo(
            f"{path}: note: columns not imported (not departure fields): "
            + ", ".join(report.ignored_columns),
            err=True,
        )
    for line, message in report.errors:
        click.echo(f"{path}:{line}: {message}", err=True)
    if report.stopped is not None:
        line, why = report.stopped
        click.echo(
            f"{path}:{line}: import stopped: {why}; nothing from here on was imported",
            err=True,
        )
    click.echo(
        f"{report.created} imported, {report.existing} already known, "
        f"{len(report.errors)} rejected."
    )
    if report.stopped is not None:
        click.echo(
            f"Stopped at line {report.stopped[0]}: the {report.created} imported "
            "before it are committed and their invitations queued; importing the "
            "file again skips them."
        )
    if report.errors or report.stopped is not None:
        sys.exit(1)


@outbox_cli.command("send")
@click.option("--once", is_flag=True, help="Send what is due, then exit.")
def outbox_send(once: bool) -> None:
    """Deliver queued emails, retrying failures with back-off."""
    require_mail_server(current_app)
    poll = current_app.config["OUTBOX_POLL_SECONDS"]
    # One identity for the whole run: after a failed pass, the next one takes
    # back at once what this worker still holds (see outbox.deliver_due).
    worker = outbox.new_worker_id()
    log.info("outbox worker %s started", worker)
    # SIGTERM (a deploy, docker stop): finish the message in hand, then exit.
    with _StopOnSigterm() as stopping:
        _deliver_until_stopped(once, poll, stopping, worker)


class _StopOnSigterm:
    """SIGTERM asks for a stop; ``wait`` ends at once when it comes.

    The handler only sets a flag. ``threading.Event.set`` takes a lock: run
    by a handler, it deadlocks when the signal lands while the main thread
    holds that lock, or lands again inside the handler (a shell's
    ``trap 'kill 0' TERM`` sends a burst). The wake-up comes through
    ``signal.set_wakeup_fd``: Python writes to a pipe from C, which ends the
    ``select`` in ``wait``. Main thread only; both are put back on exit.
    """

    def __init__(self) -> None:
        self._requested = False

    def __enter__(self) -> _StopOnSigterm:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._old_handler = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        # Once asked to stop, the process is on its way out: more SIGTERMs
        # (a burst) must not kill it before it exits cleanly.
        handler = signal.SIG_IGN if self._requested else self._old_handler
        signal.signal(signal.SIGTERM, handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._read)
        os.close(self._write)

    def _handle(self, _signum: int, _frame: object) -> None:
        self._requested = True

    def is_set(self) -> bool:
        """Return whether a stop was asked for."""
        return self._requested

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a signal comes."""
        if not self._requested:
            select.select([self._read], [], [], seconds)
            with suppress(BlockingIOError):
                os.read(self._read, 4096)


#: The longest wait between tries while the database is down.
MAX_RETRY_SECONDS = 60


def retry_delay(poll: float, failures: int) -> float:
    """Return the wait after ``failures`` failed passes in a row: doubling from
    ``poll``, at most ``MAX_RETRY_SECONDS``, however long the outage."""
    return min(poll * 2.0 ** min(failures, 32), MAX_RETRY_SECONDS)


def _deliver_until_stopped(
    once: bool, poll: float, stopping: _StopOnSigterm, worker: str
) -> None:
    failures = 0
    next_review_sync = next_purge = next_digest = next_reminders = 0.0
    next_stripe = 0.0
    while not stopping.is_set():
        try:
            if time.monotonic() >= next_stripe:
                _handle_stripe_due()
                next_stripe = time.monotonic() + STRIPE_CHECK_SECONDS
            if time.monotonic() >= next_reminders:
                queue_reminders()
                next_reminders = time.monotonic() + REMINDER_CHECK_SECONDS
            if time.monotonic() >= next_digest:
                send_digest_if_due(f"worker {worker}")
                next_digest = time.monotonic() + DIGEST_CHECK_SECONDS
            if time.monotonic() >= next_review_sync:
                _queue_unanswered()
                next_review_sync = time.monotonic() + REVIEW_SYNC_SECONDS
            if time.monotonic() >= next_purge:
                _purge_expired()
                next_purge = time.monotonic() + PURGE_SECONDS
            report = outbox.deliver_due(should_stop=stopping.is_set, worker=worker)
        except (SQLAlchemyError, DatabaseBusy):
            if once:
                raise
            # The database is down or restarting: keep the worker, try again.
            failures += 1
            delay = retry_delay(poll, failures)
            log.exception("outbox pass failed; next try in %.0f s", delay)
            stopping.wait(delay)
            continue
        failures = 0
        if report.handled:
            click.echo(
                f"{report.sent} sent, {report.retried} to retry, "
                f"{report.failed} failed."
            )
        if once and report.handled < current_app.config["OUTBOX_BATCH_SIZE"]:
            return
        if not once and report.handled == 0:
            stopping.wait(poll)


@outbox_cli.command("list")
@click.option(
    "--status",
    type=click.Choice(outbox.STATUSES),
    help="Only messages in this state.",
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="How many, newest first.",
)
def outbox_list(status: str | None, limit: int) -> None:
    """List queued, sent and failed emails (no bodies: they hold survey links)."""
    with db.new_session() as session:
        for message in outbox.recent(session, status=status, limit=limit):
            error = f"  last error: {message.last_error}" if message.last_error else ""
            click.echo(
                f"{message.id}  {message.status}  {message.kind}  {message.recipient}"
                f"  attempts={message.attempts}"
                f"  created {message.created_at:%Y-%m-%d %H:%M}{error}"
            )


@outbox_cli.command("retry")
@click.argument("message_ids", nargs=-1, type=click.IntRange(1, db.INTEGER_MAX))
@click.option("--all-failed", is_flag=True, help="Every message that gave up.")
def outbox_retry(message_ids: tuple[int, ...], all_failed: bool) -> None:
    """Queue failed emails again (by id, or --all-failed), with fresh attempts."""
    if not message_ids and not all_failed:
        raise click.UsageError("Give message ids or --all-failed.")
    with db.write_session() as session:
        count = outbox.retry_failed(session, None if all_failed else list(message_ids))
        session.commit()
    click.echo(f"{count} message(s) queued again.")


#: How often the mail worker also queues unanswered departures for review,
#: and erases data past the retention period.
REVIEW_SYNC_SECONDS = 600
PURGE_SECONDS = 24 * 3600
#: How often it looks whether the weekly digest, or reminders, are due.
DIGEST_CHECK_SECONDS = 300
REMINDER_CHECK_SECONDS = 300
#: How often it tries again the Stripe events that could not be handled.
STRIPE_CHECK_SECONDS = 30


def _handle_stripe_due() -> int:
    from survey import stripe_intake

    with db.new_session() as session:
        return stripe_intake.handle_due(session)


def queue_reminders() -> int:
    """Queue the reminders due now, in batches; return how many."""
    from survey import reminders

    total = 0
    while True:
        with db.write_session() as session:
            count = reminders.queue_due(session)
            session.commit()
        total += count
        if count < reminders.BATCH:
            return total


@reminders_cli.command("send")
def reminders_send() -> None:
    """Queue the reminders due now (the mail worker does it every few minutes)."""
    count = queue_reminders()
    click.echo(f"{count} reminder(s) queued; the mail worker sends them.")


def _queue_unanswered() -> int:
    from survey.review.queue import queue_unanswered

    with db.write_session() as session:
        count = queue_unanswered(session)
        session.commit()
    return count


@review_cli.command("sync")
def review_sync() -> None:
    """Queue departures left unanswered long enough (the mail worker does it too)."""
    click.echo(f"{_queue_unanswered()} unanswered departure(s) queued for review.")


@contacts_cli.command("export")
@click.argument("email")
def contacts_export(email: str) -> None:
    """Print, as JSON, everything held about the person at EMAIL (GDPR art. 15)."""
    from survey import contacts

    try:
        address = contacts.valid_address(email)
    except SurveyError as exc:
        raise click.ClickException(exc.message) from None
    with db.new_session() as session:
        for chunk in contacts.export_json(session, address):
            click.echo(chunk, nl=False)
    click.echo()


@contacts_cli.command("erase")
@click.argument("email")
def contacts_erase(email: str) -> None:
    """Erase the personal data of the person at EMAIL (GDPR art. 17)."""
    from survey import contacts

    with db.write_session() as session:
        try:
            done = contacts.erase_person(session, email, actor_id=None, via="cli")
        except SurveyError as exc:
            raise click.ClickException(exc.message) from None
        session.commit()
    removed = done.remove_files()
    click.echo(
        f"Erased {done.departures} departure(s): {done.scrubbed_cells} other "
        f"text(s) cleaned, {removed} .eml file(s) deleted."
    )


@contacts_cli.command("rebuild-winback")
def contacts_rebuild_winback() -> None:
    """Work out the win-back list again from the consent ledger and sign its
    withdrawal links with the current key (after a key rotation)."""
    from survey.consent import rebuild_winback_list

    with db.write_session() as session:
        listed = rebuild_winback_list(session)
        session.commit()
    click.echo(f"{listed} contact(s) on the win-back list, with new links.")


@contacts_cli.command("purge-expired")
def contacts_purge_expired() -> None:
    """Erase the personal data of departures older than SURVEY_RETENTION_DAYS."""
    if not current_app.config.get("RETENTION_DAYS"):
        click.echo("SURVEY_RETENTION_DAYS is not set: everything is kept.")
        return
    click.echo(f"{_purge_expired()} departure(s) erased under the retention period.")


def _purge_expired() -> int:
    from survey import contacts

    with db.write_session() as session:
        count, done = contacts.purge_expired(session)
        session.commit()
    done.remove_files()
    return count


def send_digest_if_due(sent_by: str) -> int | None:
    """Queue last week's digest if it is due (from Monday morning) and nobody
    queued it yet; return how many staff get it (None: nothing queued)."""
    from survey.insights import digest
    from survey.staff.access import INSIGHTS, roles_with

    now = clock.now()
    week = digest.due_week(now)
    if week is None:
        return None
    with db.new_session() as session:
        if digest.already_sent(session, week):  # a read: no write lock weekly
            return None
    with db.write_session() as session:
        return digest.send(
            session, week, roles=roles_with(INSIGHTS), now=now, sent_by=sent_by
        )


@digest_cli.command("send")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the digest and its recipients; queue nothing.",
)
def digest_send(dry_run: bool) -> None:
    """Queue last week's digest for the staff who asked for it (once a week:
    the mail worker sends it from Monday morning by itself)."""
    from survey.insights import digest
    from survey.staff.access import INSIGHTS, roles_with

    now = clock.now()
    week = digest.last_week(digest.local_now(now).date())
    roles = roles_with(INSIGHTS)
    if dry_run:
        with db.new_session() as session:
            people = digest.recipients(session, roles)
            built = digest.build(session, week, today=digest.local_now(now).date())
            sent = digest.already_sent(session, week)
        subject, text = digest.render(built)
        to = ", ".join(person.email for person in people) or "(nobody asked for it)"
        click.echo(f"To: {to}")
        if sent:
            click.echo(f"(Already queued for the week of {week.start}.)")
        click.echo(f"Subject: {subject}\n\n{text}")
        return
    with db.write_session() as session:
        count = digest.send(session, week, roles=roles, now=now, sent_by="command")
    if count is None:
        raise click.ClickException(
            f"The digest for the week of {week.start} was queued already."
        )
    click.echo(f"Digest for the week of {week.start} queued for {count} staff.")


@webhooks_cli.command("add")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    help="An event to send (repeatable): " + ", ".join(sorted(webhooks.EVENTS)),
)
@click.option("--slack", is_flag=True, help="A Slack incoming webhook: a sentence.")
@click.option(
    "--include-personal",
    is_flag=True,
    help="Send free text and contact details too.",
)
def webhooks_add(
    url: str, events: tuple[str, ...], slack: bool, include_personal: bool
) -> None:
    """Register an endpoint and print its signing secret, once."""
    with db.write_session() as session:
        try:
            endpoint = webhooks.add_endpoint(
                session, url, events, slack=slack, include_personal=include_personal
            )
        except SurveyError as exc:
            raise click.UsageError(exc.message) from None
        session.commit()
        click.echo(endpoint.secret)
        click.echo(
            f"Endpoint {endpoint.id} added for {', '.join(endpoint.event_list)}; "
            "the secret above is shown only this once.",
            err=True,
        )


@webhooks_cli.command("list")
def webhooks_list() -> None:
    """List the endpoints: id, URL, events, kind."""
    with db.new_session() as session:
        for endpoint in webhooks.endpoints(session):
            kind = "slack" if endpoint.slack else "standard"
            personal = " +personal" if endpoint.include_personal else ""
            click.echo(
                f"{endpoint.id}  {endpoint.url}  {','.join(endpoint.event_list)}"
                f"  {kind}{personal}"
            )


@webhooks_cli.command("remove")
@click.argument("endpoint_id", type=click.IntRange(1, db.INTEGER_MAX))
def webhooks_remove(endpoint_id: int) -> None:
    """Remove the endpoint ENDPOINT_ID (as `webhooks list` shows it)."""
    with db.write_session() as session:
        if not webhooks.remove_endpoint(session, endpoint_id):
            raise click.ClickException(f"No endpoint {endpoint_id}.")
        session.commit()
    click.echo(f"Endpoint {endpoint_id} removed, with its deliveries.")


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Keep a logger to warnings inside the block (the demo's links stay
    visible among its lines), as it was after."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Fill an empty database with demo data and print two survey links.

    A database holding real departures is left alone: no demo data, no demo
    admin, no one's link printed.
    """
    from survey.branding.service import forget
    from survey.demo import demo_admin, demo_brand, holds_other_data, load_demo

    with _quiet("survey"), db.write_session() as session:
        if holds_other_data(session):
            click.echo(
                "This database holds departures that are not demo data: "
                "no demo data loaded, no demo admin created."
            )
            return
        if demo_brand(session):  # committed first: the demo's emails carry it
            session.commit()
            forget(current_app)
        links = load_demo(session)
        email, password = demo_admin(session)
        session.commit()
    click.echo("Open a demo survey as a departing customer would:")
    for url in links:
        click.echo(f"  {url}")
    click.echo(f"Staff side: {external_url('staff.login')}")
    click.echo(f"  email:    {email}")
    click.echo(f"  password: {password}  (a new one each time `demo` runs)")


def init_app(app: Flask) -> None:
    """Register the command groups."""
    for group in (
        db_cli,
        users_cli,
        tokens_cli,
        departures_cli,
        outbox_cli,
        review_cli,
        contacts_cli,
        digest_cli,
        reminders_cli,
        webhooks_cli,
        demo_command,
    ):
        app.cli.add_command(group)
