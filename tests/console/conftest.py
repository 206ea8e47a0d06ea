"""Fixtures of the browser suite; the world they build is described in console_world.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from console.console_world import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OPERATOR,
    Family,
    console_settings,
    make_family,
    start_guard,
)
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from support.rpc import BACKEND

from purchase_guard.api.client import GuardClient
from purchase_guard.api.server import RunningServer
from purchase_guard.console.server import RunningConsole, start_console


# ------------------------------------------------------------------ servers
@pytest.fixture(scope="session")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_guard(tmp_path_factory.mktemp("guard"))
    yield running
    running.stop(grace=0)


@pytest.fixture(scope="session")
def target(guard: RunningServer) -> str:
    return f"127.0.0.1:{guard.port}"


@pytest.fixture(scope="session")
def operator(target: str) -> Iterator[GuardClient]:
    client = GuardClient(target, OPERATOR, timeout=30, backend_token=BACKEND)
    yield client
    client.close()


@pytest.fixture(scope="session")
def console(target: str) -> Iterator[RunningConsole]:
    # No sign-in delay here: tests mistype on purpose; the throttle has its own console and tests.
    running = start_console(console_settings(target, signin_delay_seconds=0.0, signin_max_failures=50))
    yield running
    running.stop()


@pytest.fixture
def family(operator: GuardClient) -> Family:
    return make_family(operator, "The Smiths")


# ------------------------------------------------------------------ browser
@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail("Debian's chromium is missing: `make venv` installs it (apt-get install chromium)")
    # Playwright gives every launch a fresh temporary profile (--user-data-dir) and deletes it after.
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    made: list[BrowserContext] = []

    def make(**kwargs: Any) -> BrowserContext:
        ctx = browser.new_context(viewport={"width": 1100, "height": 800}, **kwargs)
        ctx.set_default_timeout(10_000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context().new_page()
