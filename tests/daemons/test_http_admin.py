"""The admin page over a real server on 127.0.0.1: logins, sessions, CSRF, the throttle, a real browser."""

from __future__ import annotations

import json
import pathlib
import re
import tempfile
from collections.abc import Callable

import pytest

from bouncekeeper.daemons import http_admin, metrics
from bouncekeeper.store import Store
from tests.daemons.test_httpd import (
    TOKEN,
    Api,
    api,
    disable_by_bounces,
    keys,
    serve_api,
    service,
    session_cookie,
    store,
)
from tests.support.chromium import Chromium

__all__ = ["api", "serve_api", "service", "store"]  # the fixtures, shared with test_httpd


def test_admin_form_refuses_missing_csrf_foreign_origin_and_no_session(api: Api, store: Store) -> None:
    disable_by_bounces(store, "e@example.org")
    cookie = session_cookie(api)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = api.request("POST", "/admin/enable", "address=e%40example.org", token=None,
                               headers={**form, "Cookie": cookie})  # fmt: skip
    assert status == 403
    page = api.request("GET", "/", token=None, headers={"Cookie": cookie})[2].decode()
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    body = f"address=e%40example.org&csrf={csrf.group(1)}"
    evil = {**form, "Cookie": cookie, "Origin": "http://evil.example"}
    assert api.request("POST", "/admin/enable", body, token=None, headers=evil)[0] == 403
    assert api.request("POST", "/admin/enable", body, token=None, headers=form)[0] == 401
    # The bearer token does not stand in for the session on the form, nor the cookie for the token.
    assert api.request("POST", "/admin/enable", body, headers=form)[0] == 401
    assert api.request("GET", "/suppressions", token=None, headers={"Cookie": cookie})[0] == 401
    assert store.is_suppressed("e@example.org")
    # With all three, it works.
    assert (
        api.request("POST", "/admin/enable", body, token=None, headers={**form, "Cookie": cookie})[0] == 303
    )
    assert not store.is_suppressed("e@example.org")


def test_wrong_login_token_gets_the_form_again(api: Api) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, head, data = api.request("POST", "/login", "token=guess", token=None, headers=form)
    assert status == 401
    assert "set-cookie" not in head
    assert b"Wrong token" in data


def test_admin_page_re_enables_an_address_in_a_real_browser(api: Api, store: Store) -> None:
    disable_by_bounces(store, "frank@example.org", reason="userunknown")
    disable_by_bounces(store, "grace@example.org", reason="hostunknown")
    with tempfile.TemporaryDirectory(prefix="bk-chromium-") as profile:
        browser = Chromium(pathlib.Path(profile))
        try:
            browser.open(f"http://127.0.0.1:{api.port}/")
            assert "API token" in browser.text()
            browser.type_into("#token", TOKEN)
            browser.click("#login")
            text = browser.text()
            assert "frank@example.org" in text
            assert "userunknown" in text
            assert "hostunknown" in text
            browser.click('tr[data-address="frank@example.org"] button')
            assert browser.evaluate("document.getElementById('notice').innerText") == (
                "frank@example.org was re-enabled."
            )
            rows = browser.evaluate(
                "[...document.querySelectorAll('tr[data-address]')].map(r => r.dataset.address)"
            )
            assert rows == ["grace@example.org"]
            browser.click("#logout")  # the form carries its CSRF token; the session ends on the server
            assert "API token" in browser.text()
            browser.open(f"http://127.0.0.1:{api.port}/")
            assert "API token" in browser.text()
        finally:
            browser.close()
    assert not store.is_suppressed("frank@example.org")
    assert store.is_suppressed("grace@example.org")
    (event,) = [e for e in store.view("frank@example.org").events if e["kind"] == "enabled"]
    assert event["source"] == "http"


def test_next_page_link_on_the_admin_page(api: Api, store: Store) -> None:
    for i in range(3):
        disable_by_bounces(store, f"p{i}@example.org")
    cookie = session_cookie(api)
    page = api.request("GET", "/", token=None, headers={"Cookie": cookie})[2].decode()
    assert "p0@example.org" in page
    assert "p2@example.org" not in page  # page_size 2
    assert 'href="/?after=p1%40example.org"' in page
    page = api.request("GET", "/?after=p1%40example.org", token=None, headers={"Cookie": cookie})[2].decode()
    assert "p2@example.org" in page


# --- sessions and logins -----------------------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def csrf_of(api: Api, cookie: str) -> str:
    page = api.request("GET", "/", token=None, headers={"Cookie": cookie})[2].decode()
    found = re.search(r'action="/logout"><input type="hidden" name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found.group(1)


def test_logout_ends_the_session_on_the_server(api: Api, store: Store) -> None:
    disable_by_bounces(store, "olga@example.org")
    cookie = session_cookie(api)
    csrf = csrf_of(api, cookie)
    status, head, _ = api.request(
        "POST", "/logout", f"csrf={csrf}", token=None, headers={**FORM, "Cookie": cookie}
    )
    assert status == 303
    assert "Max-Age=0" in head["set-cookie"]
    # The browser was told to forget the cookie; one kept (stolen) no longer works either.
    assert b"API token" in api.request("GET", "/", token=None, headers={"Cookie": cookie})[2]
    body = f"address=olga%40example.org&csrf={csrf_token_for(cookie)}"
    assert (
        api.request("POST", "/admin/enable", body, token=None, headers={**FORM, "Cookie": cookie})[0] == 401
    )
    assert store.is_suppressed("olga@example.org")
    assert not [k for k in keys(store) if ":session:" in k]


def csrf_token_for(cookie: str) -> str:
    return http_admin.csrf_token(TOKEN.encode(), cookie.partition("=")[2])


def test_a_cross_origin_or_csrf_less_logout_is_refused(api: Api) -> None:
    cookie = session_cookie(api)
    csrf = csrf_of(api, cookie)
    evil = {**FORM, "Cookie": cookie, "Origin": "http://evil.example"}
    assert api.request("POST", "/logout", f"csrf={csrf}", token=None, headers=evil)[0] == 403
    assert api.request("POST", "/logout", "", token=None, headers={**FORM, "Cookie": cookie})[0] == 403
    assert b"Disabled addresses" in api.request("GET", "/", token=None, headers={"Cookie": cookie})[2]


def test_the_session_is_kept_in_redis_by_digest_and_ends_with_its_ttl(api: Api, store: Store) -> None:
    cookie = session_cookie(api)
    value = cookie.partition("=")[2]
    (key,) = [k for k in keys(store) if ":session:" in k]
    assert value not in key  # a copy of the database does not hold a live cookie
    assert 0 < store._client.ttl(key) <= http_admin.SESSION_SECONDS
    store._client.delete(key)  # as its TTL would
    assert b"API token" in api.request("GET", "/", token=None, headers={"Cookie": cookie})[2]


@pytest.mark.parametrize("secure", [False, True])
def test_the_cookie_is_secure_when_configured(serve_api: Callable[..., Api], secure: bool) -> None:
    api = serve_api(secure_cookie=secure)
    status, head, _ = api.request("POST", "/login", f"token={TOKEN}", token=None, headers=FORM)
    assert status == 303
    attributes = [a.strip() for a in head["set-cookie"].split(";")]
    assert ("Secure" in attributes) is secure
    assert {"HttpOnly", "SameSite=Strict"} <= set(attributes)


def test_failed_logins_are_logged_and_throttled_per_client(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(http_admin.LOGIN_FAILURES):
        assert api.request("POST", "/login", "token=guess", token=None, headers=FORM)[0] == 401
    assert (
        sum("failed admin login from 127.0.0.1" in r.getMessage() for r in caplog.records)
        == http_admin.LOGIN_FAILURES
    )
    # Locked out for the window, even with the right token (or a guess would be confirmed).
    status, head, data = api.request("POST", "/login", f"token={TOKEN}", token=None, headers=FORM)
    assert status == 429
    assert 0 < int(head["retry-after"]) <= http_admin.LOGIN_WINDOW
    assert json.loads(data)["error"] == "throttled"
    assert metrics.HTTP_AUTH_FAILURES.value("throttled") >= 1
