"""The brand: an admin sets who is asking; the emails and pages show it."""

from __future__ import annotations

import html as html_module
import io
import re
from email.header import decode_header, make_header
from email.utils import parseaddr

import pytest
from PIL import Image
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from survey.audit import AuditEvent
from survey.branding.logos import MAX_UPLOAD_BYTES, checked_logo
from survey.branding.models import Brand
from survey.demo import DEMO_BRAND, DEMO_LOGO
from tests.factories import (
    hidden_fields,
    login,
    make_departure,
    make_user,
    path_of,
    set_brand,
    submit,
    survey_path,
)
from tests.test_outbox import deliver, html_part, text_part

PAGE = "/admin/survey"


def png(width: int = 600, height: int = 200, colour: str = "#0b57d0") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


SVG_LOGO = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg"
     xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
     viewBox="0 0 120 40" inkscape:version="1.3">
  <metadata>
    <rdf xmlns="http://www.w3.org/1999/02/22-rdf-syntax-ns#">by me</rdf>
  </metadata>
  <title>Acme</title>
  <rect width="120" height="40" fill="#0b57d0" inkscape:label="box"/>
  <text x="10" y="28" fill="#fff">Acme</text>
</svg>"""


@pytest.fixture
def admin(app, client):
    user = make_user(app, role="admin")
    assert login(client, user.email).status_code == 302
    return user


def save(client, **fields):
    data = {
        "company_name": "Acme",
        "sender_name": "",
        "reply_to": "",
        "website_url": "",
        "accent_color": "",
        **fields,
    }
    return submit(client, PAGE, data)


def upload(client, content: bytes, name: str = "logo.png"):
    return save(client, logo=(io.BytesIO(content), name))


def errors_on(response) -> str:
    assert response.status_code == 200, response.status_code
    html = response.get_data(as_text=True)
    found = re.findall(r'<ul class="errors"[^>]*>(.*?)</ul>', html, re.S)
    return html_module.unescape(" ".join(found))


def stored(session) -> Brand | None:
    session.rollback()
    return session.get(Brand, 1)


# --- who may set it ---------------------------------------------------------


def test_only_admins_open_the_brand_page(app, client):
    csm = make_user(app, role="csm")
    login(client, csm.email)
    assert client.get(PAGE).status_code == 403


def test_an_admin_saves_the_brand_and_the_change_is_audited(client, admin, session):
    saved = save(
        client,
        company_name="Acme",
        sender_name="Ana at Acme",
        reply_to="care@acme.example",
        website_url="https://acme.example/",
        accent_color="#0B57D0",
    )
    assert saved.status_code == 303
    brand = stored(session)
    assert (brand.company_name, brand.sender_name, brand.reply_to) == (
        "Acme",
        "Ana at Acme",
        "care@acme.example",
    )
    assert (brand.website_url, brand.accent_color) == (
        "https://acme.example/",
        "#0b57d0",
    )
    [event] = session.scalars(
        select(AuditEvent).where(AuditEvent.kind == "brand.changed")
    )
    assert event.actor_id == admin.id
    assert set(event.detail["fields"]) == {
        "company_name",
        "sender_name",
        "reply_to",
        "website_url",
        "accent_color",
    }
    page = client.get(PAGE).get_data(as_text=True)
    assert "One question from Acme before you go" in page  # the preview


# --- the accent's contrast ----------------------------------------------------


@pytest.mark.parametrize("colour", ["#ffff00", "#7f9fbf", "#999999"])
def test_an_accent_without_enough_contrast_on_white_is_refused(
    client, admin, session, colour
):
    refused = errors_on(save(client, accent_color=colour))
    assert "contrast on white" in refused
    assert "4.5:1" in refused
    assert stored(session) is None or stored(session).accent_color is None


def test_an_accent_with_enough_contrast_colours_the_customer_pages(app, client, admin):
    assert save(client, accent_color="#767676").status_code == 303  # 4.54:1
    departure = make_departure(app)
    page = app.test_client().get(survey_path(app, departure)).get_data(as_text=True)
    [href] = re.findall(r'href="(/brand/accent-[0-9a-f]{6}\.css)"', page)
    stylesheet = client.get(href)
    assert stylesheet.mimetype == "text/css"
    assert "--accent: #767676" in stylesheet.get_data(as_text=True)
    assert "immutable" in stylesheet.headers["Cache-Control"]


@pytest.mark.parametrize("colour", ["blue", "#12345", "#gggggg", "#0b57d0;x"])
def test_an_accent_that_is_not_a_colour_is_refused(client, admin, colour):
    assert "six hexadecimal digits" in errors_on(save(client, accent_color=colour))


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "acme.example", "ftp://acme.example", "https://"]
)
def test_a_website_that_is_not_a_web_address_is_refused(client, admin, url):
    assert "full web address" in errors_on(save(client, website_url=url))


# --- the logo -----------------------------------------------------------------


def test_a_png_logo_is_redrawn_small_and_served_from_our_origin(
    app, client, admin, session
):
    assert upload(client, png(1200, 400)).status_code == 303
    brand = stored(session)
    assert brand.logo_type == "image/png"
    assert (brand.logo_width, brand.logo_height) == (240, 80)  # twice as shown
    departure = make_departure(app)
    page = app.test_client().get(survey_path(app, departure)).get_data(as_text=True)
    [src] = re.findall(r'<img src="(/brand/logo-[0-9a-f]{16}\.png)"', page)
    assert 'width="120" height="40"' in page
    served = app.test_client().get(src)
    assert served.status_code == 200
    assert served.mimetype == "image/png"
    assert served.data == brand.logo
    assert "sandbox" in served.headers["Content-Security-Policy"]
    assert "immutable" in served.headers["Cache-Control"]
    # An older logo's name is no longer served.
    assert app.test_client().get("/brand/logo-0000000000000000.png").status_code == 404


def test_a_jpeg_logo_is_kept_as_jpeg(client, admin, session):
    out = io.BytesIO()
    Image.new("RGB", (300, 100), "#222222").save(out, "JPEG")
    assert upload(client, out.getvalue(), "logo.jpg").status_code == 303
    brand = stored(session)
    assert brand.logo_type == "image/jpeg"
    assert Image.open(io.BytesIO(brand.logo)).format == "JPEG"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GIF89a" + bytes(100), "not a PNG, JPEG or SVG"),
        (b"just some text", "not a PNG, JPEG or SVG"),
        (b"", "empty"),
        ("gif", "GIF image"),
        ("tiny", "at least 24 are needed"),
        ("huge", "at most 4000 on a side"),
        ("thin", "too tall or too wide"),
    ],
)
def test_a_logo_of_the_wrong_type_or_size_is_refused(
    client, admin, session, content, message
):
    if content == "gif":
        out = io.BytesIO()
        Image.new("RGB", (100, 100)).save(out, "GIF")
        content = out.getvalue()
    elif isinstance(content, str):
        size = {"tiny": (100, 20), "huge": (5000, 100), "thin": (2000, 100)}[content]
        content = png(*size)
    assert message in errors_on(upload(client, content))
    brand = stored(session)
    assert brand is None or brand.logo is None


def test_a_logo_file_too_large_is_refused(client, admin, session):
    content = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)
    form = client.get(PAGE).get_data(as_text=True)
    logo = FileStorage(io.BytesIO(content), "logo.png", content_type="image/png")
    # Encoded here, in memory: the test client spools a body this large to a
    # temporary file it never closes (a ResourceWarning in a later test).
    boundary, body = encode_multipart(
        {**hidden_fields(form), "company_name": "Acme", "logo": logo}
    )
    response = client.post(
        PAGE, data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert "larger than 1,024 KB" in errors_on(response)
    brand = stored(session)
    assert brand is None or brand.logo is None


def test_an_svg_logo_keeps_its_drawing_and_loses_the_editor_metadata(
    client, admin, session
):
    assert upload(client, SVG_LOGO, "logo.svg").status_code == 303
    brand = stored(session)
    assert brand.logo_type == "image/svg+xml"
    assert (brand.logo_width, brand.logo_height) == (120, 40)
    svg = brand.logo.decode()
    assert "<rect" in svg
    assert "Acme</text>" in svg
    assert "inkscape" not in svg
    assert "metadata" not in svg


@pytest.mark.parametrize(
    ("svg", "message"),
    [
        ('<script>alert(1)</script><rect width="9" height="9"/>', "<script>"),
        ('<rect width="9" height="9" onload="alert(1)"/>', "event attribute"),
        ('<rect width="9" height="9" ONCLICK="alert(1)"/>', "event attribute"),
        (
            '<foreignObject><p xmlns="http://www.w3.org/1999/xhtml"/></foreignObject>',
            "<foreignObject>",
        ),
        ('<image href="https://evil.example/x.png"/>', "<image>"),
        ('<use href="https://evil.example/x.svg#a"/>', "outside itself"),
        (
            '<use xmlns:xlink="http://www.w3.org/1999/xlink"'
            ' xlink:href="javascript:alert(1)"/>',
            "outside itself",
        ),
        ('<a href="javascript:alert(1)"><rect width="9" height="9"/></a>', "<a>"),
        ('<set attributeName="href" to="javascript:alert(1)"/>', "<set>"),
        ("<style>@import url(https://evil.example/x.css);</style>", "from outside"),
        ('<rect style="fill: url(https://evil.example/x)"/>', "from outside"),
    ],
)
def test_an_svg_that_could_run_or_load_something_is_refused(
    client, admin, session, svg, message
):
    content = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 90 30">{svg}</svg>'
    ).encode()
    assert message in errors_on(upload(client, content, "logo.svg"))
    brand = stored(session)
    assert brand is None or brand.logo is None


def test_an_svg_with_entities_is_refused_before_they_expand(client, admin):
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><text>&b;</text></svg>"""
    assert "DTD or entities" in errors_on(upload(client, bomb, "logo.svg"))


def test_the_logo_can_be_removed(client, admin, session):
    assert upload(client, png()).status_code == 303
    assert save(client, remove_logo="y").status_code == 303
    assert stored(session).logo is None


# --- the brand where the customer meets it -----------------------------------


def test_the_email_comes_from_the_brand(mail_app, smtp):
    set_brand(
        mail_app,
        company_name="Acme",
        sender_name="Ana at Acme",
        reply_to="care@acme.example",
        website_url="https://acme.example/",
        logo=checked_logo(png()),
    )
    make_departure(mail_app, company="Customer Corp", contact_name="Bo")
    assert deliver(mail_app).sent == 1
    [received] = smtp.messages
    name, address = parseaddr(received["From"])
    assert str(make_header(decode_header(name))) == "Ana at Acme"
    assert address == "survey@localhost"
    assert received["Reply-To"] == "care@acme.example"
    # Who asks, not who left.
    assert received["Subject"] == "One question from Acme before you go"
    for part in (text_part(received), html_part(received)):
        assert "Ana at Acme" in part  # the signature
        assert "your Acme account was cancelled" in part  # the footer
        assert "https://acme.example/" in part
        assert "Customer Corp" not in part
    # The logo heads the HTML part, served from our own origin.
    html = html_part(received)
    [logo] = re.findall(r'<img src="http://survey\.test(/brand/logo-\w+\.png)"', html)
    assert mail_app.test_client().get(logo).mimetype == "image/png"


def test_an_svg_logo_stays_out_of_the_email(mail_app, smtp):
    set_brand(mail_app, company_name="Acme", logo=checked_logo(SVG_LOGO))
    make_departure(mail_app)
    assert deliver(mail_app).sent == 1
    [received] = smtp.messages
    html = html_part(received)
    assert "<img" not in html  # mail programs do not draw SVG
    assert ">Acme</span>" in html


def test_without_a_brand_the_email_is_as_before(mail_app, smtp):
    make_departure(mail_app)
    assert deliver(mail_app).sent == 1
    [received] = smtp.messages
    assert str(make_header(decode_header(received["From"]))) == (
        "Exit Survey <survey@localhost>"
    )
    assert received["Reply-To"] is None
    assert received["Subject"] == "One question before you go"
    assert "our team" in text_part(received)


def test_the_pages_show_the_company_and_the_thanks_page_links_its_site(app):
    set_brand(app, company_name="Acme", website_url="https://acme.example/")
    departure = make_departure(app)
    customer = app.test_client()
    page = customer.get(survey_path(app, departure)).get_data(as_text=True)
    assert re.search(
        r'<header class="brand-header">\s*<span class="brand-name">Acme</span>', page
    )
    answered = submit(customer, survey_path(app, departure), {"reason": "switched"})
    assert answered.status_code == 303
    thanks = customer.get(path_of(answered.location).replace("/more", "/thanks"))
    html = thanks.get_data(as_text=True)
    assert '<a href="https://acme.example/" rel="noopener">' in html
    assert "Go to Acme's website" in html


def test_a_company_name_is_escaped_on_the_pages(app):
    set_brand(app, company_name="<b>Acme</b>")
    departure = make_departure(app)
    page = app.test_client().get(survey_path(app, departure)).get_data(as_text=True)
    assert "&lt;b&gt;Acme&lt;/b&gt;" in page
    assert "<b>Acme</b>" not in page


def test_a_branded_customer_page_weighs_under_30_kb(app):
    """HTML, stylesheets and logo of each survey page, as a browser fetches them."""
    set_brand(app, **DEMO_BRAND, logo=checked_logo(DEMO_LOGO))
    departure = make_departure(app)
    customer = app.test_client()
    link = survey_path(app, departure)
    answered = submit(customer, link, {"reason": "switched"})
    assert answered.status_code == 303
    for path in (
        link,
        link + "?reason=too_expensive",
        link + "/more",
        link + "/thanks",
    ):
        page = customer.get(path)
        assert page.status_code == 200, path
        html = page.get_data(as_text=True)
        assets = re.findall(
            r'<(?:link rel="stylesheet"|img) (?:href|src)="([^"]+)"', html
        )
        assert any("/brand/logo-" in asset for asset in assets), assets
        weights = {path: len(page.data)}
        for asset in assets:
            with customer.get(asset) as fetched:  # a static file: closed after
                assert fetched.status_code == 200, asset
                weights[asset] = len(fetched.data)
        assert sum(weights.values()) < 30 * 1024, weights
