"""The "API tokens" pages (SPEC section 2), through the real app: sign-in, sessions, CSRF,
creating and revoking keys, the security headers and cookies, and what never reaches a log."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import stat
from datetime import timedelta
from html import unescape

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.accounts import Accounts
from service.app import create_app
from service.config import ConfigError
from service.refresh import refresh
from service.snapshots import SnapshotStore
from service.web import web_app_kwargs
from service.web_auth import LoginThrottle, WebSessions, WebSettings
from tests.conftest import make_settings
from tests.test_cli import quarry

ALICE, BOB = "alice@example.com", "bob@example.com"
PASSWORD = "alice's long password"
BOB_PASSWORD = "bob's long password"
WRONG = "Wrong email or password."


@pytest.fixture(scope="module")
def web_settings(tmp_path_factory, fixture_drop):
    """A data folder with one snapshot and two users, shared by this module's tests."""
    settings = make_settings(tmp_path_factory.mktemp("web-data"))
    refresh(SnapshotStore(settings.data_dir), fixture_drop)
    accounts = Accounts(settings.db_path)
    accounts.create_user(ALICE, PASSWORD)
    accounts.create_user(BOB, BOB_PASSWORD)
    return settings


@pytest.fixture
def accounts(web_settings):
    return Accounts(web_settings.db_path)


@pytest.fixture
def web(web_settings, monkeypatch):
    """A fresh app (so a fresh sign-in throttle) and a browser-like client for it."""
    monkeypatch.delenv("QUARRY_SECURE_COOKIES", raising=False)
    monkeypatch.delenv("QUARRY_SESSION_SECRET", raising=False)
    with TestClient(create_app(web_settings), base_url="http://127.0.0.1:8000") as client:
        yield client


def csrf_of(page) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client, email=ALICE, password=PASSWORD):
    token = csrf_of(client.get("/login"))
    return client.post("/login", data={"email": email, "password": password,
                                       "_csrf_token": token}, follow_redirects=False)


def signed_in(client, email=ALICE, password=PASSWORD) -> str:
    """Signs in; returns the CSRF token to post the forms with."""
    answer = sign_in(client, email, password)
    assert answer.status_code == 303 and answer.headers["location"] == "/settings/tokens"
    return csrf_of(client.get("/settings/tokens"))


def create_key(client, token: str, name: str):
    return client.post("/settings/tokens", data={"name": name, "_csrf_token": token})


def new_key_of(page) -> str:
    match = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', page.text)
    assert match, "the page shows no new key"
    return match.group(1).strip()


def message_of(page) -> str:
    match = re.search(r'class="message [^"]*"[^>]*>([^<]+)<', page.text)
    return unescape(match.group(1)) if match else ""


def api_search(client, key: str):
    return client.get("/v1/companies/search", headers={"Authorization": f"Bearer {key}"})


def set_cookies(answer) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in answer.headers.get_list("set-cookie")}


# --- signed out -------------------------------------------------------------------------------


def test_signed_out_visitors_are_sent_to_the_login_page(web, accounts):
    for path in ("/settings/tokens", "/settings"):
        answer = web.get(path, follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] in ("/login", "/settings/tokens")
    assert web.get("/settings/tokens", follow_redirects=False).headers["location"] == "/login"
    token = csrf_of(web.get("/login"))  # a valid form token, but no session
    before = len(accounts.list_keys(ALICE))
    for path, data in (("/settings/tokens", {"name": "sneaky"}),
                       ("/settings/tokens/revoke", {"prefix": "qry_whatever", "confirmed": "yes"})):
        answer = web.post(path, data={**data, "_csrf_token": token}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert len(accounts.list_keys(ALICE)) == before
    page = web.get("/settings/tokens")  # followed: the login form
    assert page.status_code == 200 and '<label for="email">' in page.text


def test_login_page_has_a_labelled_form(web):
    page = web.get("/login")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for field in ("email", "password"):
        assert f'<label for="{field}">' in page.text and f'id="{field}"' in page.text
    assert 'autocomplete="current-password"' in page.text
    assert '<meta name="viewport"' in page.text


# --- signing in -------------------------------------------------------------------------------


def test_sign_in_sets_a_safe_session_cookie_and_shows_the_page(web):
    answer = sign_in(web)
    assert answer.status_code == 303 and answer.headers["location"] == "/settings/tokens"
    cookie = set_cookies(answer)["quarry_session"]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # off by default, so http://127.0.0.1 works
    page = web.get("/settings/tokens")
    assert page.status_code == 200
    assert "<title>API tokens</title>" in page.text and "<h1>API tokens</h1>" in page.text
    assert ALICE in page.text and 'action="/logout"' in page.text
    # Signed in already: the login page leads to the tokens page.
    again = web.get("/login", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/settings/tokens"


def test_csrf_cookie_is_http_only_and_lax(web):
    cookie = set_cookies(web.get("/login"))["quarry_csrf"]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags


def test_secure_cookies_when_configured(web_settings, monkeypatch):
    monkeypatch.setenv("QUARRY_SECURE_COOKIES", "1")
    with TestClient(create_app(web_settings), base_url="https://quarry.example") as client:
        page = client.get("/login")
        assert "secure" in set_cookies(page)["quarry_csrf"].lower().split("; ")
        answer = client.post("/login", data={"email": ALICE, "password": PASSWORD,
                                              "_csrf_token": csrf_of(page)},
                             follow_redirects=False)
        flags = [p.strip().lower() for p in set_cookies(answer)["quarry_session"].split(";")]
        assert {"secure", "httponly", "samesite=lax"} <= set(flags)
        assert client.get("/settings/tokens").status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_answer(web):
    for email, password in ((ALICE, "not the password"), ("nobody@example.com", PASSWORD),
                            ("not an email", PASSWORD)):
        answer = sign_in(web, email, password)
        assert answer.status_code == 400
        assert message_of(answer) == WRONG
        assert "quarry_session" not in set_cookies(answer)
        assert password not in answer.text  # never echoed back
        assert f'value="{email}"' in answer.text  # the email is kept, to fix a typo
    assert web.get("/settings/tokens", follow_redirects=False).status_code == 303


def test_empty_fields_have_their_own_messages(web):
    token = csrf_of(web.get("/login"))
    for data, message in (({"email": " ", "password": "x"}, "Enter your email address."),
                          ({"email": ALICE, "password": ""}, "Enter your password."),
                          ({}, "Enter your email address.")):
        answer = web.post("/login", data={**data, "_csrf_token": token})
        assert answer.status_code == 400 and message_of(answer) == message


def test_repeated_failures_lock_the_email_out(web):
    for _ in range(5):
        assert message_of(sign_in(web, ALICE, "guess guess")) == WRONG
    refused = sign_in(web, ALICE, PASSWORD)  # even the right password, now
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in message_of(refused)
    assert "15 minutes" in message_of(refused)
    assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
    assert "quarry_session" not in set_cookies(refused)


def test_repeated_failures_lock_the_address_out(web):
    for number in range(5):  # five different accounts guessed from one address
        assert message_of(sign_in(web, f"user{number}@example.com", "guess guess")) == WRONG
    refused = sign_in(web, BOB, BOB_PASSWORD)
    assert refused.status_code == 429 and "Try again in" in message_of(refused)


def test_lockout_ends_after_the_window(web_settings, accounts):
    now = [1000.0]
    app = Litestar(**web_app_kwargs(web_settings, accounts, environ={}, clock=lambda: now[0]))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for _ in range(5):
            assert sign_in(client, BOB, "guess guess").status_code == 400
        assert sign_in(client, BOB, BOB_PASSWORD).status_code == 429
        now[0] += 15 * 60 - 5
        assert sign_in(client, BOB, BOB_PASSWORD).status_code == 429
        now[0] += 10
        assert sign_in(client, BOB, BOB_PASSWORD).status_code == 303


def test_throttle_counts_per_email_and_per_address():
    now = [0.0]
    throttle = LoginThrottle(limit=3, window=60, clock=lambda: now[0])
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert throttle.retry_after("Ann@Example.com", address) == 0
        throttle.attempt("ann@example.com", address)  # one guess from each address
    assert throttle.retry_after("ann@example.com", "10.0.0.9") == 61  # the email is locked
    assert throttle.retry_after("bob@example.com", "10.0.0.9") == 0
    now[0] = 30
    throttle.attempt("bob@example.com", "10.0.0.9")
    throttle.succeeded("bob@example.com", "10.0.0.9")  # a success takes its attempt back
    assert throttle.retry_after("bob@example.com", "10.0.0.9") == 0
    now[0] = 60.5  # the first guess is older than the window
    assert throttle.retry_after("ann@example.com", "10.0.0.9") == 0


# --- CSRF -------------------------------------------------------------------------------------


def test_forms_without_a_valid_csrf_token_are_refused(web, accounts):
    token = signed_in(web)
    before = [key.prefix for key in accounts.list_keys(ALICE)]
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    for data in ({"name": "no token"}, {"name": "bad token", "_csrf_token": forged},
                 {"name": "empty token", "_csrf_token": ""}):
        answer = web.post("/settings/tokens", data=data)
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("text/html")
        assert "Form expired" in answer.text and "qry_" not in answer.text
        assert answer.headers["x-frame-options"] == "DENY"
    # Another site's form: the browser sends the cookies, but the attacker cannot read the token.
    assert web.post("/logout", data={}).status_code == 403
    assert web.get("/settings/tokens", follow_redirects=False).status_code == 200  # still in
    # The token must match this browser's cookie, not just be well-formed.
    other = TestClient(web.app, base_url="http://127.0.0.1:8000")
    other_token = csrf_of(other.get("/login"))
    assert web.post("/settings/tokens", data={"name": "x", "_csrf_token": other_token},
                    headers={"Cookie": f"quarry_csrf={token}"}).status_code == 403
    assert [key.prefix for key in accounts.list_keys(ALICE)] == before


def test_login_needs_a_csrf_token_too(web):
    answer = web.post("/login", data={"email": ALICE, "password": PASSWORD},
                      follow_redirects=False)
    assert answer.status_code == 403 and "quarry_session" not in set_cookies(answer)


def test_json_api_health_and_schema_are_unaffected(web, accounts):
    key, _ = accounts.create_key(ALICE, "api")
    search = web.post("/v1/companies/search", json={"per_page": 1},
                      headers={"Authorization": f"Bearer {key}"})
    assert search.status_code == 200 and "set-cookie" not in search.headers
    health = web.get("/health")
    assert health.status_code == 200 and "set-cookie" not in health.headers
    assert "content-security-policy" not in health.headers
    wrong_method = web.post("/health")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["errors"][0]["id"] == "method_not_allowed"
    assert web.get("/schema/openapi.json").status_code == 200
    assert "set-cookie" not in web.get("/schema").headers
    unknown = web.post("/v1/nothing-here", json={})
    assert unknown.status_code == 401 and unknown.json()["errors"][0]["id"] == "unauthorized"


# --- keys -------------------------------------------------------------------------------------


def test_a_new_key_is_shown_once_and_stored_only_as_a_hash(web, accounts, web_settings):
    token = signed_in(web)
    page = create_key(web, token, "  CRM sync  ")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    key = new_key_of(page)
    assert key.startswith("qry_") and page.text.count(key) == 1
    assert "will not be shown again" in page.text and 'data-copy="new-key"' in page.text
    assert "“CRM sync”" in page.text  # the name, trimmed
    assert key not in str(page.headers)  # not in a cookie, a header or a redirect
    assert api_search(web, key).status_code == 200

    listing = web.get("/settings/tokens")
    assert key not in listing.text and key[:12] in listing.text
    assert 'id="new-key"' not in listing.text
    row = re.search(rf'<tr class="key key-active" data-prefix="{key[:12]}">(.+?)</tr>',
                    listing.text, re.S).group(1)
    assert "CRM sync" in row and "Active" in row and "UTC" in row
    assert "minute" in row or "Just now" in row  # last used: it was used just above

    with sqlite3.connect(web_settings.db_path) as conn:
        rows = [[str(value) for value in row] for row in conn.execute("SELECT * FROM api_keys")]
        dumped = "\n".join(line for line in conn.iterdump())
    assert key not in dumped
    assert any(hashlib.sha256(key.encode()).hexdigest() in row for row in rows)


def test_key_names_are_checked_with_clear_messages(web, accounts):
    token = signed_in(web)
    before = len(accounts.list_keys(ALICE))
    for name, message in (("", "Give the token a name"), ("   ", "Give the token a name"),
                          ("x" * 101, "The name is too long (101 characters); use at most 100"),
                          ("tab\there", "must not contain control characters"),
                          ("report\u202efdp.exe", "invisible formatting characters (it has "
                                                   "U+202E)")):
        page = create_key(web, token, name)
        assert page.status_code == 400, name
        assert message in message_of(page), message_of(page)
        assert 'id="new-key"' not in page.text
    assert new_key_of(create_key(web, token, "x" * 100)).startswith("qry_")
    assert len(accounts.list_keys(ALICE)) == before + 1


def held_rows(web_settings) -> str:
    """Everything the users database holds about keys waiting for their page view."""
    with sqlite3.connect(web_settings.db_path) as conn:
        return "\n".join(line for line in conn.iterdump() if "web_new_keys" in line)


def test_the_create_form_is_answered_with_a_redirect_and_the_key_shown_once(
        web, accounts, web_settings):
    token = signed_in(web)
    before = len(accounts.list_keys(ALICE))
    posted = web.post("/settings/tokens", data={"name": "PRG", "_csrf_token": token},
                      follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"] == "/settings/tokens"
    assert len(accounts.list_keys(ALICE)) == before + 1
    waiting = held_rows(web_settings)
    assert "INSERT INTO" in waiting  # held for the page view, sealed

    page = web.get("/settings/tokens")
    key = new_key_of(page)
    assert page.status_code == 200 and page.text.count(key) == 1 and "“PRG”" in page.text
    for secret in (key, key[12:], key.encode().hex(), key[12:].encode().hex()):
        assert secret not in posted.text + str(posted.headers) + waiting
    assert held_rows(web_settings).count("INSERT INTO") == 0  # taken out by the page view
    # Reloading shows it no more, and creates nothing.
    again = web.get("/settings/tokens")
    assert key not in again.text and 'id="new-key"' not in again.text
    assert key[:12] in again.text
    assert len(accounts.list_keys(ALICE)) == before + 1
    assert api_search(web, key).status_code == 200


def test_two_forms_sent_before_the_page_view_show_both_keys(web):
    token = signed_in(web)  # a double click on "Create token", say
    for name in ("first", "second"):
        web.post("/settings/tokens", data={"name": name, "_csrf_token": token},
                 follow_redirects=False)
    page = web.get("/settings/tokens")
    keys = re.findall(r'<code id="new-key[-0-9]*"[^>]*>([^<]+)</code>', page.text)
    assert len(keys) == 2 and len(set(keys)) == 2
    assert page.text.index("“first”") < page.text.index("“second”")
    assert all(api_search(web, key).status_code == 200 for key in keys)


def test_a_held_key_is_shown_to_its_own_session_only(web, web_settings):
    token = signed_in(web)
    with TestClient(web.app, base_url="http://127.0.0.1:8000") as other, \
            TestClient(web.app, base_url="http://127.0.0.1:8000") as bob:
        signed_in(other)  # alice again, in another browser
        signed_in(bob, BOB, BOB_PASSWORD)
        web.post("/settings/tokens", data={"name": "mine", "_csrf_token": token},
                 follow_redirects=False)
        for client in (other, bob):
            assert 'id="new-key"' not in client.get("/settings/tokens").text
        assert new_key_of(web.get("/settings/tokens")).startswith("qry_")  # still there for it
        # Signing out before the page view drops the held key with the session.
        web.post("/settings/tokens", data={"name": "unseen", "_csrf_token": token},
                 follow_redirects=False)
        assert held_rows(web_settings).count("INSERT INTO") == 1
        web.post("/logout", data={"_csrf_token": token})
        assert held_rows(web_settings).count("INSERT INTO") == 0
    sign_in(web)
    assert 'id="new-key"' not in web.get("/settings/tokens").text


def test_a_held_key_expires_and_opens_only_with_its_session_id(web_settings, accounts):
    user = accounts.get_user(ALICE)
    expired = WebSessions(web_settings.db_path, new_key_lifetime=timedelta(0))
    session_id = expired.start(user.id, user.email)
    expired.hold_new_key(session_id, user.id, "qry_" + "a" * 43, "late")
    assert expired.take_new_keys(session_id) == []
    sessions = WebSessions(web_settings.db_path)
    sessions.hold_new_key(session_id, user.id, "qry_" + "b" * 43, "on time")
    assert sessions.take_new_keys("another session id") == []
    assert [(held.key, held.name) for held in sessions.take_new_keys(session_id)] == \
        [("qry_" + "b" * 43, "on time")]
    assert sessions.take_new_keys(session_id) == []  # once
    # Altered in the database, a held key is dropped rather than shown wrong.
    sessions.hold_new_key(session_id, user.id, "qry_" + "c" * 43, "altered")
    with sqlite3.connect(web_settings.db_path) as conn:
        conn.execute("UPDATE web_new_keys SET sealed = '00' || substr(sealed, 3)")
    assert sessions.take_new_keys(session_id) == []
    # A password reset signs the user out everywhere: held keys go with the sessions.
    sessions.hold_new_key(session_id, user.id, "qry_" + "d" * 43, "reset")
    sessions.end_all(user.id)
    assert sessions.take_new_keys(session_id) == []
    assert held_rows(web_settings).count("INSERT INTO") == 0


def rows_of(page, kind: str) -> list[str]:
    table = re.search(rf'<table class="keys keys-{kind}">(.+?)</table>', page.text, re.S)
    return re.findall(r'<td data-label="Name" class="key-name">([^<]+)</td>',
                      table.group(1)) if table else []


def test_the_list_is_paged_and_revoked_keys_are_folded_away(web, accounts):
    email = "carol@example.com"
    accounts.create_user(email, PASSWORD)
    for number in range(11):
        _, info = accounts.create_key(email, f"old {number}")
        accounts.revoke_key(info.prefix)
    for number in range(13):
        accounts.create_key(email, f"key {number}")
    signed_in(web, email)
    first = web.get("/settings/tokens")
    assert rows_of(first, "active") == [f"key {number}" for number in range(12, 2, -1)]
    assert "Page 1 of 2" in first.text and 'href="/settings/tokens?page=2"' in first.text
    assert "(13 active)" in first.text
    folded = re.search(r'<details class="revoked-keys" id="revoked"( open)?>', first.text)
    assert folded and folded.group(1) is None
    assert "Revoked tokens (11)" in first.text
    assert rows_of(first, "revoked") == [f"old {number}" for number in range(10, 0, -1)]

    second = web.get("/settings/tokens?page=2")
    assert rows_of(second, "active") == ["key 2", "key 1", "key 0"]
    assert "Page 2 of 2" in second.text and 'href="/settings/tokens?page=1"' in second.text
    older = web.get("/settings/tokens?page=2&revoked_page=2")
    assert '<details class="revoked-keys" id="revoked" open>' in older.text
    assert rows_of(older, "revoked") == ["old 0"] and rows_of(older, "active")[0] == "key 2"
    # Past the end: the last page (revoking the last key of a page lands there).
    assert rows_of(web.get("/settings/tokens?page=99"), "active") == rows_of(second, "active")
    for bad in ("abc", "0", "-1", "1.5", "1e3", "١", "9" * 20):
        answer = web.get("/settings/tokens", params={"page": bad})
        assert answer.status_code == 400, bad
        assert "page number" in message_of(answer)
        assert rows_of(answer, "active") == rows_of(first, "active")
    assert web.get("/settings/tokens", params={"revoked_page": "x"}).status_code == 400


def test_revoking_from_page_two_answers_with_page_two(web, accounts):
    email = "dave@example.com"
    accounts.create_user(email, PASSWORD)
    keys = [accounts.create_key(email, f"key {number}")[1] for number in range(12)]
    token = signed_in(web, email)
    page = web.get("/settings/tokens?page=2")
    assert '<input type="hidden" name="page" value="2">' in page.text
    confirm = web.post("/settings/tokens/revoke",
                       data={"prefix": keys[0].prefix, "page": "2", "_csrf_token": token})
    assert '<input type="hidden" name="page" value="2">' in confirm.text
    assert 'href="/settings/tokens?page=2">Cancel' in confirm.text
    done = web.post("/settings/tokens/revoke", data={"prefix": keys[0].prefix, "page": "2",
                                                      "confirmed": "yes", "_csrf_token": token})
    assert "is revoked" in message_of(done) and "Page 2 of 2" in done.text
    assert rows_of(done, "active") == ["key 1"] and rows_of(done, "revoked") == ["key 0"]


def test_the_page_refuses_a_21st_active_key_with_a_clear_message(web, accounts):
    carol = "erin@example.com"
    accounts.create_user(carol, PASSWORD)
    token = signed_in(web, carol)
    for n in range(20):
        new_key_of(create_key(web, token, f"key {n}"))
    page = create_key(web, token, "one too many")
    assert page.status_code == 409 and 'id="new-key"' not in page.text
    assert message_of(page) == ("You already have 20 active tokens, the most an account may "
                                "have. Revoke one you no longer use, then create the new one.")
    assert "at most 20 active tokens" in page.text
    assert len(accounts.list_keys(carol)) == 20
    prefix = accounts.list_keys(carol)[0].prefix
    web.post("/settings/tokens/revoke", data={"prefix": prefix, "confirmed": "yes",
                                              "_csrf_token": token})
    assert new_key_of(create_key(web, token, "one too many")).startswith("qry_")


def test_names_are_escaped(web):
    token = signed_in(web)
    page = create_key(web, token, '<script>alert("x")</script>')
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/quarry.js" defer>']


def test_revoke_own_key_after_confirmation(web, accounts):
    token = signed_in(web)
    key = new_key_of(create_key(web, token, "to revoke"))
    prefix = key[:12]
    assert api_search(web, key).status_code == 200

    confirm = web.post("/settings/tokens/revoke", data={"prefix": prefix, "_csrf_token": token})
    assert confirm.status_code == 200 and "Revoke the token “to revoke”?" in unescape(confirm.text)
    assert 'name="confirmed" value="yes"' in confirm.text
    assert api_search(web, key).status_code == 200  # not yet

    done = web.post("/settings/tokens/revoke",
                    data={"prefix": prefix, "confirmed": "yes", "_csrf_token": token})
    assert done.status_code == 200 and "is revoked" in message_of(done)
    assert re.search(rf'data-prefix="{prefix}">.+?Revoked', done.text, re.S)
    answer = api_search(web, key)
    assert answer.status_code == 401 and answer.json()["errors"][0]["id"] == "unauthorized"
    again = web.post("/settings/tokens/revoke",
                     data={"prefix": prefix, "confirmed": "yes", "_csrf_token": token})
    assert "already revoked" in message_of(again)


def test_revoking_another_users_key_is_refused_and_changes_nothing(web, accounts):
    bob_key, bob_info = accounts.create_key(BOB, "bob's key")
    token = signed_in(web)  # alice
    assert bob_info.prefix not in web.get("/settings/tokens").text
    for prefix in (bob_info.prefix, bob_key, bob_info.prefix[:8]):
        answer = web.post("/settings/tokens/revoke",
                          data={"prefix": prefix, "confirmed": "yes", "_csrf_token": token})
        assert answer.status_code == 404
        assert message_of(answer) == "There is no such token among yours."
        assert bob_key not in answer.text and "bob's key" not in answer.text
    assert next(k for k in accounts.list_keys(BOB) if k.prefix == bob_info.prefix).state == "active"
    assert api_search(web, bob_key).status_code == 200


# --- sessions ---------------------------------------------------------------------------------


def test_sign_out_ends_the_session_for_good(web):
    token = signed_in(web)
    session = web.cookies.get("quarry_session")
    answer = web.post("/logout", data={"_csrf_token": token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?signed_out"
    assert "max-age=0" in set_cookies(answer)["quarry_session"].lower()
    assert "You have signed out." in web.get(answer.headers["location"]).text
    # The old cookie, replayed (as a thief would), opens nothing: the session is gone server-side.
    web.cookies.set("quarry_session", session)
    assert web.get("/settings/tokens", follow_redirects=False).headers["location"] == "/login"


def test_a_made_up_session_cookie_opens_nothing(web):
    for value in (b"made-up", b"x" * 500, b"null", b"", "é".encode("latin-1")):
        answer = web.get("/settings/tokens", follow_redirects=False,
                         headers={"Cookie": b"quarry_session=" + value})
        assert answer.status_code == 303 and answer.headers["location"] == "/login"


def test_sessions_and_forms_survive_a_restart(web_settings, monkeypatch):
    monkeypatch.delenv("QUARRY_SESSION_SECRET", raising=False)
    with TestClient(create_app(web_settings), base_url="http://127.0.0.1:8000") as first:
        token = signed_in(first)
        cookies = dict(first.cookies)
    with TestClient(create_app(web_settings), base_url="http://127.0.0.1:8000") as second:
        second.cookies.update(cookies)
        assert second.get("/settings/tokens").status_code == 200
        assert new_key_of(create_key(second, token, "after restart")).startswith("qry_")


def test_sessions_expire(web_settings, accounts):
    sessions = WebSessions(web_settings.db_path, lifetime=timedelta(0))
    user = accounts.get_user(ALICE)
    assert sessions.get(sessions.start(user.id, user.email)) is None
    live = WebSessions(web_settings.db_path)
    session_id = live.start(user.id, user.email)
    assert live.get(session_id).user_id == user.id
    with sqlite3.connect(web_settings.db_path) as conn:  # only a digest is stored
        assert session_id not in "\n".join(conn.iterdump())


def test_set_password_from_the_command_line(web, web_settings):
    token = signed_in(web, BOB, BOB_PASSWORD)
    assert web.get("/settings/tokens", follow_redirects=False).status_code == 200
    done = quarry(web_settings.data_dir, "users", "set-password", BOB, "--password-stdin",
                  stdin="a fresh password for bob\n")
    assert re.search(r"signed out of [1-9]\d* web session", done.stdout), done.stdout
    # The new password is the one the page takes; open sessions were ended.
    assert web.get("/settings/tokens", follow_redirects=False).headers["location"] == "/login"
    assert message_of(sign_in(web, BOB, BOB_PASSWORD)) == WRONG
    assert sign_in(web, BOB, "a fresh password for bob").status_code == 303
    assert web.post("/logout", data={"_csrf_token": token}).status_code == 200
    quarry(web_settings.data_dir, "users", "set-password", BOB, "--password-stdin",
           stdin=BOB_PASSWORD + "\n")


# --- headers, settings, logs ------------------------------------------------------------------


def test_pages_send_the_security_headers(web):
    token = signed_in(web)
    pages = [web.get("/login"), web.get("/settings/tokens"), create_key(web, token, "headers"),
             web.post("/settings/tokens", data={"name": "x"}),  # the 403 page
             web.get("/static/quarry.js"), web.get("/static/quarry.css")]
    for page in pages:
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
    for page in pages[:4]:
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text  # no inline script: the CSP would block it
    assert pages[4].headers["content-type"].startswith("text/javascript") or \
        pages[4].headers["content-type"].startswith("application/javascript")
    assert web.get("/static/nothing.js").status_code == 404


def test_secret_from_the_environment_or_a_private_file(tmp_path):
    settings = WebSettings.from_env(tmp_path, {})
    secret_file = tmp_path / "session-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(settings.secret) >= 32 and not settings.secure_cookies
    assert WebSettings.from_env(tmp_path, {}).secret == settings.secret  # kept across restarts
    given = WebSettings.from_env(tmp_path, {"QUARRY_SESSION_SECRET": "s" * 40,
                                            "QUARRY_SECURE_COOKIES": "1"})
    assert given.secret == "s" * 40 and given.secure_cookies
    assert given.derived("csrf") != settings.derived("csrf")
    with pytest.raises(ConfigError, match="at least 32"):
        WebSettings.from_env(tmp_path, {"QUARRY_SESSION_SECRET": "short"})
    with pytest.raises(ConfigError, match="QUARRY_SECURE_COOKIES"):
        WebSettings.from_env(tmp_path, {"QUARRY_SECURE_COOKIES": "maybe"})


def test_no_key_or_password_reaches_a_log(web, caplog):
    caplog.set_level(logging.DEBUG)
    typed_in_email = "my secret password typed in the email field"
    sign_in(web, typed_in_email, PASSWORD)
    sign_in(web, ALICE, "a wrong password 123")
    token = signed_in(web)
    key = new_key_of(create_key(web, token, "logged?"))
    api_search(web, key)
    web.post("/settings/tokens/revoke",
             data={"prefix": key[:12], "confirmed": "yes", "_csrf_token": token})
    api_search(web, key)
    web.post("/logout", data={"_csrf_token": token})
    logged = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    assert "web sign-in failed" in logged and "created key" in logged  # it did log
    for secret in (PASSWORD, "a wrong password 123", typed_in_email, key, key[12:]):
        assert secret not in logged
