"""A soak of the deployment: two app servers and two mail workers on one
PostgreSQL database, under a mixed load through HTTP only, with one worker
and one app server killed and restarted midway; then a check that nothing
was lost.

It starts, on this machine: a real SMTP sink (aiosmtpd), two gunicorn
instances as the README's production section runs them (its settings file,
PostgreSQL, JSON logs, metrics in multiprocess mode), two ``flask outbox
send`` workers; clients spread their requests over both servers in turn.

The load, for ``--seconds`` (default 300): departures through the API (some
sent twice at once), survey answers and changed answers through the
customer's pages, consent withdrawals through the emails' one-click link,
staff sign-ins (now and then a wrong password first) and sign-outs, queue
work, win-back exports, erasures.

Then it checks and prints: every departure invited exactly once (a second
copy counted apart, allowed only as the README's at-least-once delivery
allows: its first copy arrived just before an outbox worker was killed,
which could not record it as sent); the sends counted in both servers'
/metrics (the outbox workers beside them write their counters there) are
the emails delivered, and the refused sign-ins those the staff met; both
kills happened and both processes came back; every answer and consent
change that got a 2xx/3xx is in the database; no erased person's data
anywhere; no 5xx but during the kills (counted); p50/p95/p99 per route and
the throughput. The
exit status is 1 on any loss, 2 when the soak could not run.

Usage::

    .venv/bin/python benchmarks/soak.py [--seconds 300] [--clients 8]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/soak]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import (
    JSON,
    Connection,
    MetaData,
    String,
    Text,
    cast,
    create_engine,
    func,
    or_,
    select,
    text,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from bench_survey import BenchError, flask, free_port, tool  # noqa: E402

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/soak"
STAFF_PASSWORD = "soak staff password 8c2f"
#: Sign-ins with a wrong password, at most: well under the sign-in throttle's
#: limit for one address (LOGIN_IP_MAX_FAILURES, 50), which would lock the
#: staff out for the rest of the run.
WRONG_SIGN_INS = 20
HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*>')
REASONS = ("too_expensive", "missing_features", "product_issues", "switched")


class SoakError(BenchError):
    """The soak could not run (not a finding about the service)."""


# --- the mail sink ----------------------------------------------------------------


#: The header the sink adds: when a message arrived (seconds since the epoch).
ARRIVED = "X-Soak-Arrived"
#: How long before a worker's kill a message it sent may still be unrecorded
#: (outcomes are written a tenth of a second's worth at a time), with room.
MID_SEND_SECONDS = 10.0
#: Messages an outbox worker claims at a time (SURVEY_OUTBOX_BATCH_SIZE).
OUTBOX_BATCH = 100


@dataclass
class Mailbox:
    """What the SMTP sink received, by recipient."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_recipient: dict[str, list[Any]] = field(
        default_factory=lambda: defaultdict(list)
    )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message[ARRIVED] = repr(time.time())
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.by_recipient[recipient.lower()].append(message)
        return "250 OK"

    def received(self, address: str) -> list[Any]:
        with self.lock:
            return list(self.by_recipient.get(address.lower(), []))


# --- the deployment -----------------------------------------------------------------


@dataclass
class Deployment:
    """The processes of the soak, and how to restart them."""

    env: dict[str, str]
    ports: list[int]
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path = Path()

    def start_server(self, index: int) -> subprocess.Popen[bytes]:
        log = (self.logs / f"server-{index}.log").open("ab")
        return subprocess.Popen(
            [
                tool("gunicorn"),
                "-c",
                "python:survey.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{self.ports[index]}",
            ],
            env=self.env | {"PROMETHEUS_MULTIPROC_DIR": str(self.logs / f"m{index}")},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{index}.log").open("ab")
        return subprocess.Popen(
            [tool("flask"), "--app", "survey", "outbox", "send"],
            # On the machine of server ``index``: its /metrics reads our counters.
            env=self.env | {"PROMETHEUS_MULTIPROC_DIR": str(self.logs / f"m{index}")},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        for index in range(len(self.ports)):
            (self.logs / f"m{index}").mkdir(exist_ok=True)
            self.servers.append(self.start_server(index))
        for index in range(2):
            self.workers.append(self.start_worker(index))
        for port in self.ports:
            wait_until_ready(port)

    def stop(self) -> None:
        for process in [*self.servers, *self.workers]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.servers, *self.workers]:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ready(port: int, timeout: float = 60) -> None:
    """Wait until the server on ``port`` answers /readyz with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SoakError(f"the app server on port {port} did not get ready")


def fresh_database(url: str) -> None:
    """Create the soak's database if needed, and empty its schema."""
    name = urlsplit(url.replace("+psycopg", "")).path.lstrip("/")
    server = create_engine(
        url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )
    with server.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    server.dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


# --- the clients ---------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients were told, to check against the database after."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: external id -> (public id, contact email, survey path)
    departures: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: public id -> the reason last acknowledged (2xx/3xx)
    reasons: dict[str, str] = field(default_factory=dict)
    #: public id -> the consent last acknowledged ("granted" / "withdrawn")
    consents: dict[str, str] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    #: route -> latencies (s)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    server_errors: list[tuple[float, str, int]] = field(default_factory=list)
    refused_connections: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0
    #: When the load began (seconds since the epoch, as the kills' times).
    started: float = field(default_factory=time.time)
    #: Staff sign-ins: made and refused as they should be (a wrong password).
    sign_ins: int = 0
    sign_ins_refused: int = 0
    #: Wrong-password sign-ins tried (some may have met a server being killed).
    wrong_sign_ins_tried: int = 0
    wrong_sign_ins_let_in: int = 0


class Client:
    """One person at a browser or a program, spreading requests over the
    servers in turn; a cookie jar of one session."""

    def __init__(self, ports: list[int], ledger: Ledger, seed: int) -> None:
        self.ports = itertools.cycle(ports)
        self.ledger = ledger
        self.cookie: str | None = None
        self.signed_in = False
        self.random = random.Random(seed)
        #: The departures this client recorded: only it answers, withdraws
        #: or erases them, in order, so what it was told last is what holds.
        self.mine: list[tuple[str, str, str]] = []

    def call(
        self,
        method: str,
        path: str,
        route: str,
        *,
        form: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        """Make a request on the next server (the other one when this one
        refuses the connection: it is being restarted)."""
        sent = dict(headers or {})
        if self.cookie:
            sent["Cookie"] = self.cookie
        if form is not None:
            body = urlencode(form, doseq=True).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        for _attempt in range(4):
            port = next(self.ports)
            started = time.monotonic()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request(method, path, body=body, headers=sent)
                answer = connection.getresponse()
                content = answer.read().decode("utf-8", "replace")
                answer_headers = {k.lower(): v for k, v in answer.getheaders()}
                connection.close()
            except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
                with self.ledger.lock:
                    self.ledger.refused_connections.append((time.time(), repr(exc)))
                time.sleep(0.2)
                continue
            elapsed = time.monotonic() - started
            if cookie := answer_headers.get("set-cookie"):
                self.cookie = cookie.split(";", 1)[0]
            with self.ledger.lock:
                self.ledger.requests += 1
                self.ledger.latencies[f"{method} {route}"].append(elapsed)
                self.ledger.statuses[answer.status] += 1
                if answer.status >= 500:
                    self.ledger.server_errors.append(
                        (time.time(), route, answer.status)
                    )
            return answer.status, content, answer_headers
        return 0, "", {}


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a page (its CSRF or form token among them)."""
    fields = {}
    for tag in HIDDEN.findall(page):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[name.group(1)] = value.group(1) if value else ""
    return fields


class Load:
    """The mixed load: one client's loop of things people and programs do."""

    def __init__(
        self,
        ports: list[int],
        ledger: Ledger,
        mailbox: Mailbox,
        token: str,
        staff: str,
        until: float,
    ) -> None:
        self.ports, self.ledger, self.mailbox = ports, ledger, mailbox
        self.token, self.staff, self.until = token, staff, until
        self.numbers = itertools.count()
        self.numbers_lock = threading.Lock()

    def api(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def record_departure(self, client: Client, twice: bool) -> None:
        with self.numbers_lock:
            number = next(self.numbers)
        external_id = f"soak-{number}-{secrets.token_hex(3)}"
        email = f"person{number}.{secrets.token_hex(2)}@soak.example"
        payload = json.dumps(
            {
                "external_id": external_id,
                "contact_email": email,
                "contact_name": f"Person {number}",
                "company": f"Company {number}",
                "plan": "growth",
                "mrr_cents": 10_000 + number,
                "segment": "smb",
            }
        ).encode()
        headers = self.api() | {"Content-Type": "application/json"}
        answers: list[tuple[int, str]] = []

        def post(other: Client) -> None:
            status, body, _ = other.call(
                "POST",
                "/api/v1/departures",
                "/api/v1/departures",
                body=payload,
                headers=headers,
            )
            answers.append((status, body))

        if twice:  # the same departure, sent twice at once
            twin = Client(self.ports, self.ledger, client.random.randrange(1 << 30))
            threads = [threading.Thread(target=post, args=(c,)) for c in (client, twin)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            post(client)
        for status, body in answers:
            if status == 201:
                data = json.loads(body)
                departure = (data["id"], email, urlsplit(data["survey_url"]).path)
                client.mine.append(departure)
                with self.ledger.lock:
                    self.ledger.departures[external_id] = departure

    def pick(self, client: Client) -> tuple[str, str, str] | None:
        return client.random.choice(client.mine) if client.mine else None

    def answer(self, client: Client) -> None:
        picked = self.pick(client)
        if picked is None:
            return
        public_id, email, path = picked
        status, page, _ = client.call("GET", path, "/s/<token>")
        if status != 200:
            return
        reason = client.random.choice(REASONS)
        status, _body, _headers = client.call(
            "POST", path, "/s/<token>", form=hidden_fields(page) | {"reason": reason}
        )
        if status in (302, 303):
            with self.ledger.lock:
                self.ledger.reasons[public_id] = reason
        else:
            return
        status, page, _ = client.call("GET", f"{path}/more", "/s/<token>/more")
        if status != 200 or client.random.random() < 0.3:
            return
        consent = client.random.random() < 0.7
        # People write their address in their answers: an erasure must find it.
        form = hidden_fields(page) | {"details": f"Soak details: write to {email}"}
        if consent:
            form["winback_consent"] = "y"
        status, _body, _ = client.call(
            "POST", f"{path}/more", "/s/<token>/more", form=form
        )
        if status in (302, 303):
            with self.ledger.lock:
                previous = self.ledger.consents.get(public_id)
                if consent:
                    self.ledger.consents[public_id] = "granted"
                elif previous == "granted":
                    self.ledger.consents[public_id] = "withdrawn"

    def withdraw(self, client: Client) -> None:
        picked = self.pick(client)
        if picked is None:
            return
        public_id, email, _path = picked
        links = [
            m.get("List-Unsubscribe", "").strip("<>")
            for m in self.mailbox.received(email)
            if m.get("List-Unsubscribe")
        ]
        if not links:
            return
        path = urlsplit(links[0]).path
        status, _body, _ = client.call(
            "POST",
            path,
            "/w/<token>",
            form={"List-Unsubscribe": "One-Click"},
        )
        if status in (200, 204, 302, 303):
            with self.ledger.lock:  # recorded unless already withdrawn
                self.ledger.consents[public_id] = "withdrawn"

    def staff_work(self, client: Client) -> None:
        """Queue work of one staff member, who signs out now and then and
        signs in again (once in a while mistyping the password first)."""
        if not client.signed_in:
            if self.ledger.wrong_sign_ins_tried < WRONG_SIGN_INS and (
                client.random.random() < 0.3
            ):
                self.sign_in(client, "a wrong password")
            if not self.sign_in(client, STAFF_PASSWORD):
                return
        status, page, _ = client.call("GET", "/review", "/review")
        items = re.findall(r'href="(/review/[\w-]{16})"', page)
        if status != 200:
            client.signed_in = False
            return
        if items:
            item = client.random.choice(items)
            status, item_page, _ = client.call("GET", item, "/review/<public_id>")
            if status == 200:
                client.call(
                    "POST",
                    f"{item}/assign",
                    "/review/<public_id>/assign",
                    form=hidden_fields(item_page) | {"to_me": "1", "assignee": ""},
                )
        if client.random.random() < 0.1:
            status, _body, _ = client.call(
                "POST", "/logout", "/logout", form=hidden_fields(page)
            )
            if status in (302, 303):
                client.signed_in, client.cookie = False, None

    def sign_in(self, client: Client, password: str) -> bool:
        """Sign the staff member in with ``password``; True if let in. A
        wrong password must be refused (the form again, 200)."""
        wrong = password != STAFF_PASSWORD
        status, page, _ = client.call("GET", "/login", "/login")
        if status != 200:
            return False
        if wrong:
            with self.ledger.lock:
                self.ledger.wrong_sign_ins_tried += 1
        form = hidden_fields(page) | {"email": self.staff, "password": password}
        status, _body, _ = client.call("POST", "/login", "/login", form=form)
        with self.ledger.lock:
            if status in (302, 303):
                self.ledger.sign_ins += 1
            elif status == 200 and wrong:
                self.ledger.sign_ins_refused += 1
            if status in (302, 303) and wrong:
                self.ledger.wrong_sign_ins_let_in += 1
        client.signed_in = status in (302, 303)
        return client.signed_in

    def export(self, client: Client) -> None:
        client.call(
            "GET",
            "/api/v1/winback/contacts.csv",
            "/api/v1/winback/contacts.csv",
            headers=self.api(),
        )

    def erase(self, client: Client) -> None:
        picked = self.pick(client)
        if picked is None:
            return
        public_id, email, _path = picked
        status, _body, _ = client.call(
            "DELETE",
            f"/api/v1/contacts/{email}",
            "/api/v1/contacts/<email>",
            headers=self.api(),
        )
        if status == 200:
            client.mine.remove(picked)
            with self.ledger.lock:
                self.ledger.erased.add(public_id)

    def run(self, seed: int, role: str) -> None:
        client = Client(self.ports, self.ledger, seed)
        while time.monotonic() < self.until:
            if role == "staff":
                self.staff_work(client)
                continue
            roll = client.random.random()
            if roll < 0.30:
                self.record_departure(client, twice=client.random.random() < 0.2)
            elif roll < 0.70:
                self.answer(client)
            elif roll < 0.82:
                self.withdraw(client)
            elif roll < 0.90:
                self.export(client)
            elif roll < 0.93:
                self.erase(client)
            else:
                time.sleep(0.05)


# --- the run, then the checks --------------------------------------------------


@dataclass
class Kills:
    """When the soak killed something, to tell errors of a kill from others."""

    windows: list[tuple[float, float, str]] = field(default_factory=list)
    #: What went wrong killing or restarting (the run then proves nothing).
    failures: list[str] = field(default_factory=list)

    def during(self, moment: float) -> bool:
        return any(start <= moment <= end + 5 for start, end, _ in self.windows)

    def mid_send(self, moment: float) -> bool:
        """Whether a message that arrived at ``moment`` may have been sent by
        an outbox worker killed before it could record it (then sent again)."""
        return any(
            what == "outbox worker" and start - MID_SEND_SECONDS <= moment <= start + 1
            for start, _end, what in self.windows
        )


def kill_and_restart(
    deployment: Deployment, kills: Kills, at: dict[str, float]
) -> None:
    """Kill one outbox worker, then one app server, and start each again;
    a failure is kept in ``kills.failures`` (a thread's exception is lost)."""
    try:
        _kill_and_restart(deployment, kills, at)
    except Exception as error:
        kills.failures.append(f"killing and restarting failed: {error!r}")


def _kill_and_restart(
    deployment: Deployment, kills: Kills, at: dict[str, float]
) -> None:
    time.sleep(at["worker"])
    started = time.time()
    deployment.workers[0].kill()
    deployment.workers[0].wait()
    time.sleep(1)
    deployment.workers[0] = deployment.start_worker(0)
    kills.windows.append((started, time.time(), "outbox worker"))
    time.sleep(at["server"])
    started = time.time()
    deployment.servers[1].kill()  # the master; its workers follow
    deployment.servers[1].wait()
    time.sleep(2)
    deployment.servers[1] = deployment.start_server(1)
    wait_until_ready(deployment.ports[1])
    kills.windows.append((started, time.time(), "app server"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def traces_of(connection: Connection, needles: Sequence[str]) -> int:
    """Count the rows, of every table, with one of ``needles`` in a text or
    JSON column (a row once per needle it holds)."""
    tables = MetaData()
    tables.reflect(connection)
    found = 0
    for table in tables.sorted_tables:
        columns = [
            cast(column, Text) if isinstance(column.type, JSON) else column
            for column in table.columns
            if isinstance(column.type, String | JSON)
        ]
        for needle in needles if columns else ():
            holds = or_(*(c.contains(needle, autoescape=True) for c in columns))
            query = select(func.count()).select_from(table).where(holds)
            found += connection.scalar(query) or 0
    return found


@dataclass
class Counted:
    """What both machines' /metrics counted over the run."""

    sends: int = 0
    sign_in_failures: int = 0
    #: Servers whose /metrics could not be read (one not restarted, say).
    unreachable: list[str] = field(default_factory=list)


def read_metrics(ports: list[int], token: str) -> Counted:
    """Sum the outbox workers' sends and the refused sign-ins, as each
    machine's /metrics shows them (prometheus-client's multiprocess mode: a
    server's workers and the outbox worker beside it write their counters to
    one folder, which outlives a killed process)."""
    counted = Counted()
    for port in ports:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(
                "GET", "/metrics", headers={"Authorization": f"Bearer {token}"}
            )
            answer = connection.getresponse()
            body = answer.read().decode()
        except OSError as error:
            counted.unreachable.append(f"port {port}: {error!r}")
            continue
        finally:
            connection.close()
        if answer.status != 200:
            counted.unreachable.append(f"port {port}: status {answer.status}")
            continue
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if (
                    sample.name == "survey_outbox_attempts_total"
                    and sample.labels.get("outcome") == "sent"
                ):
                    counted.sends += int(sample.value)
                elif sample.name == "survey_sign_in_failures_total":
                    counted.sign_in_failures += int(sample.value)
    return counted


def check_counted_sends(counted: int, mailbox: Mailbox, kills: Kills) -> list[str]:
    """The sends counted in /metrics are the emails that arrived, less the
    second copies (a killed worker sent the first without recording it, so
    without counting it) and, with a worker killed, at most one batch it
    recorded but did not live to count."""
    with mailbox.lock:
        arrived = sum(len(messages) for messages in mailbox.by_recipient.values())
        ids = [m.get("Message-ID") for ms in mailbox.by_recipient.values() for m in ms]
    recorded = len(set(ids))
    slack = OUTBOX_BATCH if any(w == "outbox worker" for *_t, w in kills.windows) else 0
    print(f"  emails arrived: {arrived}; sends counted in /metrics: {counted}")
    if not recorded - slack <= counted <= recorded:
        return [f"/metrics counted {counted} sends for {recorded} emails delivered"]
    return []


def check_sign_ins(counted: int, ledger: Ledger) -> list[str]:
    """Staff got in, a wrong password never did, and /metrics counted every
    refusal the client saw (and none it did not try)."""
    print(
        f"  staff sign-ins: {ledger.sign_ins}; wrong passwords refused: "
        f"{ledger.sign_ins_refused} of {ledger.wrong_sign_ins_tried} tried; "
        f"refusals counted in /metrics: {counted}"
    )
    losses = []
    if ledger.sign_ins < 2:
        losses.append(f"only {ledger.sign_ins} staff sign-ins: staff were kept out")
    if ledger.wrong_sign_ins_let_in:
        losses.append(f"{ledger.wrong_sign_ins_let_in} wrong passwords let in")
    if not ledger.sign_ins_refused <= counted <= ledger.wrong_sign_ins_tried:
        losses.append(
            f"/metrics counted {counted} refused sign-ins for "
            f"{ledger.sign_ins_refused} refused ({ledger.wrong_sign_ins_tried} tried)"
        )
    return losses


def check_kills(kills: Kills) -> list[str]:
    """Both kills happened and both processes came back: else the run did
    not show what it is for."""
    done = {what for *_times, what in kills.windows}
    missing = [w for w in ("outbox worker", "app server") if w not in done]
    return kills.failures + [f"the {w} was not killed and restarted" for w in missing]


def check(
    database_url: str, ledger: Ledger, mailbox: Mailbox, kills: Kills
) -> list[str]:
    """Compare what the clients were told with the database and the mail."""
    losses: list[str] = []
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT d.public_id, d.contact_email, d.erased_at, r.reason, "
                "r.details, "
                "(SELECT action FROM consent_events c WHERE c.departure_id = d.id "
                " ORDER BY c.id DESC LIMIT 1) AS consent, "
                "(SELECT count(*) FROM outbox_messages o WHERE o.departure_id = d.id "
                " AND o.kind = 'invitation') AS invitations "
                "FROM departures d LEFT JOIN responses r ON r.departure_id = d.id"
            )
        ).all()
        pending = connection.scalar(
            text("SELECT count(*) FROM outbox_messages WHERE status = 'pending'")
        )
        erased_emails = [
            email
            for public_id, email, _path in ledger.departures.values()
            if public_id in ledger.erased
        ]
        # An erased person's address anywhere: every text column of every table.
        traces = traces_of(connection, erased_emails)
    engine.dispose()
    if traces:
        losses.append(f"{traces} traces of erased people's addresses remain")
    by_id = {row.public_id: row for row in rows}
    recorded = {public_id for public_id, _e, _p in ledger.departures.values()}
    duplicates = unexplained_twice = 0
    if missing := recorded - set(by_id):
        losses.append(f"{len(missing)} departures answered 201 are not stored")
    for public_id, email, _path in ledger.departures.values():
        row = by_id.get(public_id)
        if row is None:
            continue
        if row.invitations != 1:
            losses.append(f"{public_id}: {row.invitations} invitations queued")
        if public_id in ledger.erased:
            if row.erased_at is None:
                losses.append(f"{public_id}: erasure acknowledged, not done")
            if row.contact_email == email or row.details:
                losses.append(f"{public_id}: erased person's data still held")
            continue
        arrivals: dict[str, list[float]] = defaultdict(list)
        for message in mailbox.received(email):
            arrivals[message.get("Message-ID")].append(float(message[ARRIVED]))
        if not arrivals:
            losses.append(f"{public_id}: no invitation arrived")
        for times in arrivals.values():
            if kills.mid_send(min(times)):
                duplicates += len(times) - 1
            else:
                unexplained_twice += len(times) - 1
        if public_id in ledger.reasons and row.reason != ledger.reasons[public_id]:
            losses.append(
                f"{public_id}: answer {ledger.reasons[public_id]!r} acknowledged, "
                f"{row.reason!r} stored"
            )
        if public_id in ledger.consents and row.consent != ledger.consents[public_id]:
            losses.append(
                f"{public_id}: consent {ledger.consents[public_id]!r} acknowledged, "
                f"{row.consent!r} stored"
            )
    if pending:
        losses.append(f"{pending} messages still waiting in the outbox")
    if unexplained_twice:
        losses.append(
            f"{unexplained_twice} emails arrived twice, the first copy not sent "
            "just before a worker was killed"
        )
    unexplained = [e for e in ledger.server_errors if not kills.during(e[0])]
    if unexplained:
        losses.append(
            f"{len(unexplained)} 5xx answers outside the kills: {unexplained[:5]}"
        )
    print(f"  emails arrived twice (a worker killed mid-send): {duplicates}")
    return losses


def report(ledger: Ledger, seconds: float, kills: Kills) -> None:
    print(
        f"\n  {ledger.requests:,} requests in {seconds:.0f} s: "
        f"{ledger.requests / seconds:.1f} requests/s"
    )
    print(f"  statuses: {dict(sorted(ledger.statuses.items()))}")
    for start, end, what in kills.windows:
        print(
            f"  {what} killed at {start - ledger.started:.0f} s, "
            f"back at {end - ledger.started:.0f} s"
        )
    during = [e for e in ledger.server_errors if kills.during(e[0])]
    print(
        f"  5xx during the kills: {len(during)}; connections refused "
        f"(retried on the other server): {len(ledger.refused_connections)}"
    )
    print(f"\n  {'route':<44}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for route, values in sorted(ledger.latencies.items()):
        print(
            f"  {route:<44}{len(values):>7}"
            f"{1000 * statistics.median(values):>9.0f}"
            f"{1000 * percentile(values, 0.95):>9.0f}"
            f"{1000 * percentile(values, 0.99):>9.0f}"
        )


def soak(database_url: str, seconds: float, clients: int) -> int:
    fresh_database(database_url)
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        ports = [free_port(), free_port()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEY_")}
        env.update(
            SURVEY_SECRET_KEY=secrets.token_hex(32),
            SURVEY_INSTANCE_PATH=folder,
            SURVEY_DATABASE_URL=database_url,
            SURVEY_BASE_URL=f"http://127.0.0.1:{ports[0]}",
            SURVEY_MAIL_SERVER="127.0.0.1",
            SURVEY_MAIL_PORT=str(smtp_port),
            SURVEY_MAIL_DEFAULT_SENDER="Soak <soak@soak.example>",
            SURVEY_LOG_FORMAT="json",
            SURVEY_OUTBOX_POLL_SECONDS="1",
        )
        flask(env, "db", "upgrade")
        token = (
            flask(
                env,
                "tokens",
                "create",
                "--name",
                "soak",
                "--scope",
                "departures:write",
                "--scope",
                "winback:read",
                "--scope",
                "contacts:erase",
                "--scope",
                "metrics:read",
            )
            .strip()
            .splitlines()[-1]
            .strip()
        )
        staff = "csm@soak.example"
        flask(
            env,
            "users",
            "create",
            "--email",
            staff,
            "--name",
            "Soak Csm",
            "--role",
            "csm",
            "--password-stdin",
            stdin=STAFF_PASSWORD + "\n",
        )
        deployment = Deployment(env, ports, logs=Path(folder))
        ledger, kills = Ledger(), Kills()
        try:
            deployment.start()
            print(
                f"  soaking for {seconds:.0f} s with {clients} clients ...", flush=True
            )
            started = time.monotonic()
            ledger.started = time.time()
            load = Load(ports, ledger, mailbox, token, staff, started + seconds)
            threads = [
                threading.Thread(
                    target=load.run, args=(n, "staff" if n == 0 else "people")
                )
                for n in range(clients)
            ]
            killer = threading.Thread(
                target=kill_and_restart,
                args=(
                    deployment,
                    kills,
                    {"worker": seconds / 3, "server": seconds / 6},
                ),
            )
            for thread in [*threads, killer]:
                thread.start()
            for thread in [*threads, killer]:
                thread.join()
            elapsed = time.monotonic() - started
            wait_for_outbox(database_url, timeout=120)
            counted = read_metrics(ports, token)
        finally:
            deployment.stop()
            controller.stop()
        report(ledger, elapsed, kills)
        losses = check(database_url, ledger, mailbox, kills)
        if counted.unreachable:
            losses += [f"/metrics not read on {u}" for u in counted.unreachable]
        else:
            losses += check_counted_sends(counted.sends, mailbox, kills)
            losses += check_sign_ins(counted.sign_in_failures, ledger)
        losses += check_kills(kills)
    print()
    for loss in losses[:50]:
        print(f"  LOSS  {loss}")
    print("FAIL: " + f"{len(losses)} losses" if losses else "PASS: nothing lost")
    return 1 if losses else 0


def wait_for_outbox(database_url: str, timeout: float) -> None:
    """Wait until the outbox has nothing left to send (or the time is up)."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                waiting = connection.scalar(
                    text(
                        "SELECT count(*) FROM outbox_messages WHERE status = 'pending'"
                    )
                )
            if not waiting:
                return
            time.sleep(1)
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--database",
        default=os.environ.get("SOAK_DATABASE_URL", DEFAULT_DATABASE),
        help="a PostgreSQL database of its own (its schema is replaced)",
    )
    args = parser.parse_args()
    try:
        return soak(args.database, args.seconds, args.clients)
    except BenchError as error:
        print(f"soak could not run: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
