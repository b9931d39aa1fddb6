"""The API docs page in a real browser: Debian's chromium, headless, driven by selenium.

It loads the page from a live ``python run.py`` (the quick start's default: embedded
broker, embedded worker), checks that every tag of the served document renders with its
operations, then does what a reader does first: expands ``GET /api/shop/home``, clicks
"Try it out" and "Execute", and reads the 200 body in the page. The browser's own network
log proves the page fetched nothing from another host (deployments are often offline).

chromium and chromedriver come from apt (``scripts/test-setup`` installs them); both paths
are given to selenium, so selenium-manager never downloads a browser. A missing browser
fails the test, never skips it. The screenshot is kept in ``CORE_APP_TEST_ARTIFACTS``
(default ``.artifacts/`` in the repository, git-ignored).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import REPO, Web, clean_env
from selenium import webdriver
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("CORE_APP_TEST_ARTIFACTS") or REPO / ".artifacts")
#: Seconds the page may take to render or answer, on a loaded 2-core machine.
WAIT = 30
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Web]:
    env = clean_env(CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"))
    web = Web(env, tmp_path / "run.log").start()
    try:
        yield web
    finally:
        web.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"The docs page test needs {' and '.join(missing)}: run `bash scripts/test-setup` "
            "(or `apt-get install chromium chromium-driver`)."
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1600")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def operations_by_tag(document: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """Tag name -> the (METHOD, path) pairs the document files under it."""
    tagged: dict[str, set[tuple[str, str]]] = {tag["name"]: set() for tag in document["tags"]}
    for path, item in document["paths"].items():
        for method in METHODS:
            for tag in item.get(method, {}).get("tags", []):
                tagged[tag].add((method.upper(), path))
    return tagged


def rendered_operations(section: WebElement) -> set[tuple[str, str]]:
    return {
        (
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path")
            or "",
        )
        for block in section.find_elements(By.CSS_SELECTOR, ".opblock")
    }


def tag_section(browser: WebDriver, tag: str) -> WebElement:
    header = browser.find_element(By.CSS_SELECTOR, f'.opblock-tag[data-tag="{tag}"]')
    return header.find_element(By.XPATH, "./ancestor::div[contains(@class, 'opblock-tag-section')]")


def requested_urls(browser: WebDriver) -> list[str]:
    """Every URL the page asked for, from chromium's network log."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_docs_page_renders_every_plugin_and_tries_out_shop_home(
    server: Web, browser: WebDriver
) -> None:
    document = server.get("/openapi.json").json()
    expected = operations_by_tag(document)
    assert {"shop", "notifications"} <= set(expected), sorted(expected)

    browser.get(server.url("/docs"))
    wait = WebDriverWait(browser, WAIT)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-tag"))
    for tag, operations in expected.items():
        assert rendered_operations(tag_section(browser, tag)) == operations, tag

    home = next(
        block
        for block in tag_section(browser, "shop").find_elements(By.CSS_SELECTOR, ".opblock-get")
        if block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path")
        == "/api/shop/home"
    )
    home.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait.until(lambda b: home.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    try_out = home.find_element(By.CSS_SELECTOR, ".try-out__btn")
    assert try_out.text == "Try it out"
    try_out.click()
    wait.until(lambda b: home.find_elements(By.CSS_SELECTOR, ".execute"))
    home.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait.until(
        lambda b: home.find_elements(
            By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"
        )
    )[0]
    assert status.text.split()[0] == "200"
    shown = home.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .highlight-code pre"
    )
    assert json.loads(shown.text) == server.get("/api/shop/home").json()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "docs-page.png"
    browser.execute_script("arguments[0].scrollIntoView();", home)
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 0

    urls = requested_urls(browser)
    assert server.url("/docs/swagger-ui-bundle.js") in urls
    assert server.url("/openapi.json") in urls
    elsewhere = [url for url in urls if not url.startswith((server.base + "/", "data:"))]
    assert not elsewhere, elsewhere
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
