"""Driving Debian's Chromium with Playwright: one browser per test session, logging in, watching for
Content-Security-Policy violations and pages wider than their viewport."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PASSWORD

CHROMIUM = os.environ.get("TUNEYARD_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium() -> Iterator[Any]:
    """The session's browser (the ``browser`` fixture of tests/conftest.py)."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the test's own
    # database calls happen between its steps, never inside the loop.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"^(?!.*/login/)"))


def csp_violations(context: Any) -> list[str]:
    """A list that fills with every Content-Security-Policy violation the context's pages report."""
    violations: list[str] = []
    context.on(
        "console",
        lambda message: "Content Security Policy" in message.text and violations.append(message.text),
    )
    return violations


def overflow_px(page: Any) -> int:
    """How far the page is wider than its viewport (0: it fits, no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))


def screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    """Save the page as ``name`` (a .png) into $TUNEYARD_SCREENSHOT_DIR when it is set (the README's
    pictures: `TUNEYARD_SCREENSHOT_DIR=docs/screenshots make test`); otherwise nothing is written."""
    folder = os.environ.get("TUNEYARD_SCREENSHOT_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, name), full_page=full_page)
