"""The "API tokens" page as a person uses it: a real `quarry serve` process and headless
Chromium (Debian's package, driven by Playwright): sign in, create a token, copy it, call the
API with it, revoke it; and the page's layout with long names and many keys, on a desktop and
on a phone. Leaves screenshots in test-artifacts/tokens-page*.png."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.accounts import Accounts
from tests.serving import running_server
from tests.test_cli import REPO, quarry

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
LONG_NAME = "ci-runner-" + "W" * 90  # 100 characters, the most a name may have, no spaces
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}


def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"no Chromium at {CHROMIUM}, and no apt-get (as root) to install Debian's "
                    "chromium package")
    pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it "
                "(apt-get install chromium); or install it by hand")


@contextmanager
def launched_chromium():
    """Debian's Chromium, headless, through Playwright; closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def web_server(data_dir, fixture_drop):
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    accounts = Accounts(data_dir / "quarry.db")
    accounts.create_user(EMAIL, PASSWORD)
    # Earlier keys, so the page looks as it does after a while: one in use, one revoked.
    nightly, _ = accounts.create_key(EMAIL, "Nightly CRM export")
    accounts.authenticate(nightly)
    _, old = accounts.create_key(EMAIL, "Old laptop")
    accounts.revoke_key(old.prefix)
    accounts.close()
    with running_server(data_dir, data_dir.parent / "serve.log",
                        QUARRY_SECURE_COOKIES="", QUARRY_SESSION_SECRET="") as running:
        yield running.base


def test_create_copy_use_and_revoke_a_token_in_the_browser(web_server):
    from playwright.sync_api import expect

    base = web_server
    ARTIFACTS.mkdir(exist_ok=True)
    with launched_chromium() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = context.new_page()
        # Script errors, anything the CSP blocked, any stylesheet/script/icon that failed.
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text)
                if message.type == "error" and "Failed to load resource" not in message.text
                else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda answer: problems.append(f"{answer.status} {answer.url}")
                if answer.status >= 400 and answer.request.resource_type != "document"
                else None)

        # Signed out: the tokens page sends us to sign in. A wrong password first.
        page.goto(f"{base}/settings/tokens")
        expect(page).to_have_url(f"{base}/login")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill("not my password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
        expect(page.get_by_label("Email")).to_have_value(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base}/settings/tokens")
        expect(page).to_have_title("API tokens")
        expect(page.get_by_role("heading", name="API tokens", level=1)).to_be_visible()

        # Create a token: shown once, with a copy button that really copies it.
        page.get_by_label("Token name").fill("Browser test")
        page.get_by_role("button", name="Create token").click()
        expect(page.get_by_text("It will not be shown again")).to_be_visible()
        key = page.locator("#new-key").inner_text().strip()
        assert key.startswith("qry_") and len(key) >= 40
        copy = page.locator('button[data-copy="new-key"]')
        expect(copy).to_have_text("Copy")
        copy.click()
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == key
        page.screenshot(path=str(ARTIFACTS / "tokens-page.png"), full_page=True)

        # The copied token works on the API.
        headers = {"Authorization": f"Bearer {key}"}
        search = httpx.get(f"{base}/v1/companies/search", headers=headers)
        assert search.status_code == 200 and search.json()["errors"] == []

        # Reloaded, the list shows only the token's prefix, now used; then revoke it.
        page.goto(f"{base}/settings/tokens")
        row = page.locator(f'tr[data-prefix="{key[:12]}"]')
        expect(row).to_contain_text("Browser test")
        expect(row).to_contain_text("Active")
        assert key not in page.content()
        dialogs: list[str] = []
        page.once("dialog", lambda dialog: (dialogs.append(dialog.message),
                                            dialog.accept()))
        row.get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status").filter(has_text="is revoked")).to_be_visible()
        assert dialogs and "Browser test" in dialogs[0]
        expect(row).to_contain_text("Revoked")

        refused = httpx.get(f"{base}/v1/companies/search", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["id"] == "unauthorized"

        # On a phone-sized screen the list is still readable (saved for a look).
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(ARTIFACTS / "tokens-page-phone.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("status")).to_have_text("You have signed out.")
        assert problems == []


def test_api_reference_renders_from_this_origin_only(web_server):
    """The /schema page under the tokens page's Content-Security-Policy, with every request to
    another origin refused (as on a machine without internet access): Swagger UI still renders
    the operations, nothing was blocked and nothing was asked of another host."""
    from playwright.sync_api import expect

    base = web_server
    ARTIFACTS.mkdir(exist_ok=True)
    with launched_chromium() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        elsewhere: list[str] = []

        def only_this_origin(route) -> None:
            if route.request.url.startswith(f"{base}/"):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort("internetdisconnected")

        context.route("**/*", only_this_origin)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text)
                if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda answer: problems.append(f"{answer.status} {answer.url}")
                if answer.status >= 400 else None)

        page.goto(f"{base}/schema")
        search = page.locator(".opblock-summary-path", has_text="/v1/contacts/search")
        expect(search.first).to_be_visible(timeout=20_000)
        document = httpx.get(f"{base}/schema/openapi.json").json()
        operations = sum(len(methods) for methods in document["paths"].values())
        expect(page.locator(".opblock")).to_have_count(operations)
        search.first.click()  # the operation opens, with its parameters
        expect(page.locator(".opblock-body").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "schema-page.png"))
        assert elsewhere == [] and problems == []


@pytest.fixture
def crowded_server(data_dir, fixture_drop):
    """A user with 29 keys: 17 active (one with the longest possible name), 12 revoked."""
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    accounts = Accounts(data_dir / "quarry.db")
    accounts.create_user(EMAIL, PASSWORD)
    for number in range(12):
        _, info = accounts.create_key(EMAIL, f"Retired worker {number}")
        accounts.revoke_key(info.prefix)
    accounts.create_key(EMAIL, LONG_NAME)
    for number in range(16):
        accounts.create_key(EMAIL, f"Worker {number}")
    accounts.close()
    with running_server(data_dir, data_dir.parent / "serve.log",
                        QUARRY_SECURE_COOKIES="", QUARRY_SESSION_SECRET="") as running:
        yield running.base, data_dir / "quarry.db"


def active_keys(db_path: Path) -> int:
    accounts = Accounts(db_path)
    try:
        return sum(key.state == "active" for key in accounts.list_keys(EMAIL))
    finally:
        accounts.close()


def fits(page, viewport: dict[str, int], what: str, rows: bool = True) -> None:
    """Nothing wider than the screen, and the "Name" labels of the phone layout on one line."""
    page.set_viewport_size(viewport)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"{what}: {width} px wide at {viewport['width']} px"
    labels = page.evaluate("""() => [...document.querySelectorAll('td[data-label="Name"]')]
        .filter(cell => cell.offsetParent !== null).map(cell => {
            const label = getComputedStyle(cell, "::before");
            return [parseFloat(label.width), parseFloat(label.height),
                    parseFloat(label.lineHeight)];
        })""")
    if viewport is PHONE and rows:
        assert labels, f"{what}: no key rows"
        for label_width, height, line in labels:
            assert label_width >= 36 and height <= line * 1.2, \
                f"{what}: the Name label is {label_width:.0f} x {height:.0f} px"


@contextmanager
def signed_in_page(base: str, viewport: dict[str, int], **context_options):
    """A Chromium page signed in as EMAIL, on the tokens page."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    with launched_chromium() as browser:
        page = browser.new_context(viewport=viewport, **context_options).new_page()
        page.goto(f"{base}/login")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base}/settings/tokens")
        yield page


def test_a_new_key_with_a_long_name_fits_and_a_reload_makes_no_second_key(crowded_server):
    from playwright.sync_api import expect

    base, db_path = crowded_server
    with signed_in_page(base, DESKTOP) as page:
        page.get_by_label("Token name").fill(LONG_NAME[:-1] + "y")
        page.get_by_role("button", name="Create token").click()
        expect(page.get_by_text("It will not be shown again")).to_be_visible()
        key = page.locator("#new-key").inner_text().strip()
        assert key.startswith("qry_") and active_keys(db_path) == 18
        assert page.url == f"{base}/settings/tokens"  # the key is in no address
        fits(page, DESKTOP, "new key, desktop")
        fits(page, PHONE, "new key, phone")
        page.screenshot(path=str(ARTIFACTS / "tokens-page-new-key-phone.png"), full_page=True)

        # Reloading the page that showed the key creates no second key and shows it no more.
        page.reload()
        expect(page.get_by_role("heading", name="Your tokens")).to_be_visible()
        assert active_keys(db_path) == 18
        assert key not in page.content() and page.locator("#new-key").count() == 0


def test_thirty_keys_are_paged_and_revoked_ones_folded_on_desktop_and_phone(crowded_server):
    from playwright.sync_api import expect

    base, _ = crowded_server
    with signed_in_page(base, DESKTOP) as page:
        for viewport, most in ((DESKTOP, 2400), (PHONE, 4200)):
            fits(page, viewport, "the list")
            height = page.evaluate("document.documentElement.scrollHeight")
            assert height <= most, f"{height} px tall at {viewport['width']} px"
        active = page.locator("table.keys-active tr.key")
        expect(active).to_have_count(10)
        revoked = page.locator("details.revoked-keys")
        expect(revoked).not_to_have_attribute("open", "")
        expect(revoked.locator("summary")).to_contain_text("Revoked tokens (12)")
        expect(revoked.locator("tr.key").first).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "tokens-page-many-phone.png"), full_page=True)
        revoked.locator("summary").click()
        expect(revoked.locator("tr.key").first).to_be_visible()
        fits(page, PHONE, "the revoked keys, unfolded")
        page.get_by_role("link", name="Next page of revoked tokens").click()
        expect(page).to_have_url(f"{base}/settings/tokens?page=1&revoked_page=2#revoked")
        expect(revoked).to_have_attribute("open", "")
        expect(revoked.locator("tr.key")).to_have_count(2)
        fits(page, PHONE, "the revoked keys, page 2")
        page.get_by_role("link", name="Next page of active tokens").click()
        expect(page).to_have_url(f"{base}/settings/tokens?page=2")
        expect(active).to_have_count(7)
        expect(page.get_by_text("Page 2 of 2")).to_be_visible()
        expect(page.locator("tr.key", has_text=LONG_NAME)).to_be_visible()
        fits(page, DESKTOP, "page 2")
        fits(page, PHONE, "page 2")


def test_revoking_a_key_with_a_long_name_without_script_fits_a_phone(crowded_server):
    from playwright.sync_api import expect

    base, db_path = crowded_server
    with signed_in_page(base, PHONE, java_script_enabled=False) as page:
        # 17 active keys, newest first: the long name is on page 2, and the answer stays there.
        page.goto(f"{base}/settings/tokens?page=2")
        page.locator("tr.key", has_text=LONG_NAME).get_by_role("button").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(LONG_NAME)
        fits(page, PHONE, "revoke confirmation", rows=False)
        page.get_by_role("button", name="Revoke token").click()
        expect(page.get_by_role("status")).to_contain_text("is revoked")
        expect(page.get_by_text("Page 2 of 2")).to_be_visible()
        fits(page, PHONE, "revoked notice")
        fits(page, DESKTOP, "revoked notice")
        assert active_keys(db_path) == 16
