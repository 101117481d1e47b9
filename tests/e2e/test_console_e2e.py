"""The task console (GET /console) in a real headless browser: Debian's chromium, driven by Selenium
through Debian's chromedriver (never a driver or browser downloaded by Selenium Manager).

Each test signs in as its own project and asserts on what the page shows. Without chromium the tests
skip saying how to install it, except where CI promised it (IMAGETASKS_REQUIRE_BROWSER=1: they fail).
With IMAGETASKS_CONSOLE_SCREENSHOTS=<folder> (`make console-screenshots`) each test also saves
the view it checked there as a PNG: docs/console/ holds the ones committed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import DevStackHandle, ImageServer
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_raw

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "as root: apt-get install -y chromium chromium-driver"
SCREENSHOTS = os.environ.get("IMAGETASKS_CONSOLE_SCREENSHOTS")
MiB = 1024 * 1024
#: A step part of the way through a source of known length, as the progress column says it.
PART_WAY = re.compile(r"fetch: [1-9][0-9]?% \([0-9.]+ MiB of 96 MiB\)")
#: How long the page may take to show what a test waits for (the stack's import steps included).
DEADLINE_SECONDS = 60


def require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if not missing:
        return
    reason = f"no {' and no '.join(missing)}: the console's browser tests need them ({INSTALL})"
    if os.environ.get("IMAGETASKS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (IMAGETASKS_REQUIRE_BROWSER=1: CI must run these tests)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path below: Selenium Manager never runs
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The page as a user sees it: sign in, read rows, click."""

    def __init__(self, driver: Any, stack: DevStackHandle) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.stack = stack
        self.wait = WebDriverWait(driver, DEADLINE_SECONDS, poll_frequency=0.2)

    def open(self) -> None:
        self.driver.get(f"{self.stack.api_url}/console")
        self.driver.execute_script("window.sessionStorage.clear()")
        self.driver.get(f"{self.stack.api_url}/console")
        self.until(lambda: self.shown("sign-in"), "the sign-in form")

    def sign_in(self, token: str) -> None:
        field = self.find("#token")
        field.clear()
        field.send_keys(token)
        self.find("#sign-in-form button[type=submit]").click()

    def find(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:
            return str(self.find(selector).text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def shown(self, element_id: str) -> bool:
        return bool(self.driver.execute_script(f"return !document.getElementById('{element_id}').hidden"))

    def task_cell(self, task_id: str, cell: str) -> str:
        return self.text(f'#tasks tr[data-task-id="{task_id}"] td.{cell}')

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        return self.wait.until(lambda _: condition(), message=f"the console never showed {what}")

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


@pytest.fixture
def console(browser: Any, local_stack: DevStackHandle) -> Console:
    page = Console(browser, local_stack)
    page.open()
    return page


def imported(stack: DevStackHandle, image_server: ImageServer, project: str, name: str) -> dict[str, Any]:
    source = make_raw(image_server.root).rename(image_server.root / f"{name}.raw")
    body = import_body(image_server.url(source.name), "raw")
    body["input"]["image_properties"]["name"] = name
    task, _ = wait_for_task(stack, create_task(stack, body, project=project)["id"], project=project)
    assert task["status"] == "success", task
    return task


def test_signing_in_shows_the_projects_tasks_and_images(
    console: Console, local_stack: DevStackHandle, image_server: ImageServer
) -> None:
    # Given a project with one finished import
    project = "console-list"
    task = imported(local_stack, image_server, project, "console-cirros")
    console.screenshot("sign-in")

    # When its member signs in
    console.sign_in(local_stack.token(project))

    # Then its task and the image it made are listed, and the token stays in the tab only
    console.until(lambda: console.task_cell(task["id"], "status") == "success", "the task as success")
    console.until(lambda: "console-cirros" in console.text("#images tbody"), "the imported image")
    assert console.task_cell(task["id"], "type") == "import"
    assert task["result"]["image_id"] in console.task_cell(task["id"], "details")
    assert "active" in console.text(f'#images tr[data-image-id="{task["result"]["image_id"]}"]')
    stored = console.driver.execute_script("return [sessionStorage.length, localStorage.length]")
    assert stored == [1, 0]
    console.screenshot("tasks-and-images")


def test_a_running_import_shows_its_progress_live_then_its_success(
    console: Console, local_stack: DevStackHandle, image_server: ImageServer
) -> None:
    # Given a signed-in project whose import is held two thirds of the way through its source
    project = "console-live"
    console.sign_in(local_stack.token(project))
    console.until(lambda: console.shown("console"), "the console")
    release = image_server.stepped("console-live.raw", size=96 * MiB, hold_at=66 * MiB)
    try:
        body = import_body(image_server.url("console-live.raw"), "raw")
        task = create_task(local_stack, body, project=project)

        # When the page lists it (its periodic refresh or a click on Refresh)
        console.find("#refresh").click()

        # Then the row shows the step and a percentage between 0 and 100 while the task runs
        console.until(
            lambda: (
                console.task_cell(task["id"], "status") == "processing"
                and PART_WAY.search(console.task_cell(task["id"], "progress"))
            ),
            "the import's progress part of the way",
        )
        assert "following 1 running task live" in console.text("#live")
        console.screenshot("progress")
    finally:
        release.set()
    # And, without a reload, its success (the long poll answers the change)
    console.until(lambda: console.task_cell(task["id"], "status") == "success", "the task's success")
    assert "fetch: 100% (96 MiB of 96 MiB)" in console.task_cell(task["id"], "progress")
    assert console.task_cell(task["id"], "actions") == ""


def test_cancel_from_the_page_ends_the_task_cancelled(
    console: Console, local_stack: DevStackHandle, image_server: ImageServer
) -> None:
    # Given a running import whose source is held
    project = "console-cancel"
    held = make_raw(image_server.root).rename(image_server.root / "console-cancel.raw")
    requested, release = image_server.hold(held.name)
    try:
        task = create_task(local_stack, import_body(image_server.url(held.name), "raw"), project=project)
        assert requested.wait(60), "the import step never fetched its source"
        console.sign_in(local_stack.token(project))
        console.until(lambda: console.task_cell(task["id"], "status") == "processing", "the running task")

        # When the user clicks Cancel, then confirms
        console.find(f'#tasks tr[data-task-id="{task["id"]}"] button.cancel').click()
        console.until(
            lambda: console.task_cell(task["id"], "actions") == "Confirm cancel", "the confirmation"
        )
        console.find(f'#tasks tr[data-task-id="{task["id"]}"] button.cancel').click()

        # Then the page shows the task cancelled, by whom, and the API agrees
        console.until(lambda: console.task_cell(task["id"], "status") == "cancelled", "the task cancelled")
    finally:
        release.set()
    details = console.task_cell(task["id"], "details")
    assert "Cancelled:" in details and f"cancelled by user {project}-user of project {project}" in details
    assert f"Cancel requested for task {task['id']}." in console.text("#notice")
    console.screenshot("cancelled")
    finished, _ = wait_for_task(local_stack, task["id"], project=project)
    assert (finished["status"], finished["error_code"]) == ("failure", "cancelled")


def test_a_failed_tasks_reason_is_shown_in_words(
    console: Console, local_stack: DevStackHandle, image_server: ImageServer
) -> None:
    # Given an import whose source answers 404
    project = "console-failure"
    url = image_server.url("console-nowhere.raw")
    task = create_task(local_stack, import_body(url, "raw"), project=project)
    failed, _ = wait_for_task(local_stack, task["id"], project=project)
    assert failed["error_code"] == "source_unavailable", failed

    # When its project signs in and opens the task
    console.sign_in(local_stack.token(project))
    console.until(lambda: console.task_cell(task["id"], "status") == "failure", "the failed task")
    console.find(f'#tasks tr[data-task-id="{task["id"]}"] td.id button').click()
    console.until(lambda: console.shown("task-detail"), "the task's details")

    # Then the row and the details say what happened and what to do, in words
    details = console.task_cell(task["id"], "details")
    assert details.startswith("Source unavailable:")
    assert f"The image source answered 404 Not Found: {url}" in details
    assert "Check that the address (or upload) is reachable" in details
    panel = console.text("#task-detail")
    assert "what to do" in panel and "source_unavailable" in panel and url in panel
    console.screenshot("failure-explained")


def test_a_token_the_api_refuses_is_said_so(console: Console, local_stack: DevStackHandle) -> None:
    # When someone signs in with a token that is not one
    console.sign_in("not-a-token")

    # Then the page says the token was refused, with the API's words, and keeps nothing
    console.until(lambda: "This token was refused (401)" in console.text("#sign-in-error"), "the refusal")
    assert "requires authentication" in console.text("#sign-in-error")
    assert console.shown("sign-in") and not console.shown("console")
    assert console.driver.execute_script("return sessionStorage.length") == 0
    console.screenshot("token-refused")


def test_the_console_page_carries_its_security_headers(local_stack: DevStackHandle) -> None:
    response = requests.get(f"{local_stack.api_url}/console", timeout=30)

    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'sha256-")


def test_a_page_on_another_origin_reads_answers_and_errors(
    browser: Any, local_stack: DevStackHandle, image_server: ImageServer
) -> None:
    # Given a page served from another origin (the image server's port)
    (image_server.root / "elsewhere.html").write_text("<!doctype html><title>elsewhere</title>")
    browser.get(image_server.url("elsewhere.html"))
    script = """
        const [url, token, done] = arguments;
        fetch(url, {headers: {"X-Auth-Token": token, "Content-Type": "application/json"}})
          .then(async (r) => done([r.status, await r.text(), r.headers.get("x-openstack-request-id")]))
          .catch((e) => done([0, String(e), null]));
    """

    # When it calls the API with a token (a preflighted request), and with a refused one
    listed = browser.execute_async_script(
        script, f"{local_stack.api_url}/v2/tasks", local_stack.token("cors")
    )
    refused = browser.execute_async_script(script, f"{local_stack.api_url}/v2/tasks", "not-a-token")

    # Then the browser lets it read both answers, the request id included
    assert listed[0] == 200 and '"tasks"' in listed[1] and listed[2].startswith("req-")
    assert refused[0] == 401 and "requires authentication" in refused[1]
