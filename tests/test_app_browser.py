"""The feedback app in a real browser: Debian's Chromium, headless, driven by Selenium.

An admin adds an annotator and creates a project from the shipped test prompts, with answers
written by tiny-random through redline's engine; the annotator ranks four answers with the
keyboard, writes a critique and a revision, picks the better of two; the admin exports. The
exported files pass ``redline data validate`` and (once, on SQLite) train a tiny-random critic and
reward model for 2 steps. The same flow runs on SQLite and on a throwaway PostgreSQL cluster. Screenshots go to
$REDLINE_SCREENSHOTS when it is set (docs/app/ holds the ones docs/app.md shows).

Skips, with the reason, where Chromium, chromedriver, selenium or PostgreSQL are missing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("fastapi")

from app_helpers import (  # noqa: E402
    PASSWORD,
    browser_or_skip_reason,
    cheap_hashing,
    chromium,
    make_project,
    make_users,
    postgres_cluster,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "simulated"

postgres = pytest.fixture(scope="module")(postgres_cluster)


def head(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def four_answers(rows: list[dict]) -> list[dict]:
    """The shipped rankings hold K = 5 answers; the flow ranks four (the first four of each)."""
    return [{"prompt": r["prompt"], "responses": r["responses"][:4], "ranks": r["ranks"][:4], "id": r["id"]} for r in rows]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    cluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"browser_{os.getpid()}_{int(time.time() * 1000) % 10**8}")


@pytest.fixture
def browser(tmp_path):
    reason = browser_or_skip_reason()
    if reason:
        pytest.skip(reason)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(str(downloads))
    driver.downloads = downloads
    yield driver
    driver.quit()


class Flow:
    """The steps a person takes, each waiting for the page it leads to."""

    def __init__(self, driver, base: str, shots: Path | None):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base, self.shots, self.By = driver, base, shots, By
        # pages that reload themselves (a project being generated) make elements stale: look again
        self.wait = WebDriverWait(driver, 90, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

    def find(self, css: str):
        return self.wait.until(lambda d: d.find_element(self.By.CSS_SELECTOR, css))

    def go(self, path: str):
        self.d.get(self.base + path)

    def keys(self, *keys: str, ctrl: bool = False):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        chain = ActionChains(self.d)
        if ctrl:
            chain = chain.key_down(Keys.CONTROL)
        for key in keys:
            chain = chain.send_keys(key)
        if ctrl:
            chain = chain.key_up(Keys.CONTROL)
        chain.perform()

    def submit_with_keyboard(self):
        from selenium.webdriver.common.keys import Keys

        before = self.d.current_url
        self.keys(Keys.ENTER, ctrl=True)
        self.wait.until(lambda d: d.current_url != before)

    def shot(self, name: str):
        if self.shots is not None:  # the whole page, up to 2400 pixels tall
            self.shots.mkdir(parents=True, exist_ok=True)
            self.d.execute_script("window.scrollTo(0, 0)")
            height = min(2400, self.d.execute_script("return document.documentElement.scrollHeight") + 20)
            self.d.set_window_size(1280, max(900, height))
            self.d.save_screenshot(str(self.shots / f"{name}.png"))
            self.d.set_window_size(1280, 900)

    def login(self, name: str):
        self.go("/login")
        self.find("#name").send_keys(name)
        self.find("#password").send_keys(PASSWORD)
        self.find("#login").click()
        self.wait.until(lambda d: "/login" not in d.current_url)

    def logout(self):
        self.find("button.link").click()
        self.wait.until(lambda d: "/login" in d.current_url)

    def task(self, project: str):
        self.go("/tasks")
        self.find(f"#start-{project}").click()
        self.wait.until(lambda d: "/items/" in d.current_url or d.find_elements(self.By.ID, "done"))

    def download(self, folder: Path, name: str) -> Path:
        path = folder / name
        self.wait.until(lambda d: path.exists() and path.stat().st_size > 0)
        return path


def test_annotate_in_chromium_with_the_keyboard_export_validate_and_train(browser, database_url, tmp_path, monkeypatch, capsys):
    from redline.app.db import open_database
    from redline.app.projects import shown_order
    from redline.app.web import make_app
    from redline.cli import main
    from redline.serve import start_server

    cheap_hashing(monkeypatch)
    sessions = open_database(database_url)
    make_users(sessions, root="admin")
    guidelines = ("Rank by how well an answer follows **every** instruction of the prompt.\n\n"
                  "- 1 is best; give two answers the same number when you cannot tell them apart\n- skip what you cannot judge")
    rank_rows = four_answers(head(DATA / "rankings.jsonl", 2))
    make_project(sessions, tmp_path, "ranks", "rank", rank_rows, guidelines=guidelines)
    make_project(sessions, tmp_path, "pairs", "pair", head(DATA / "preferences.jsonl", 1),
                 guidelines="Pick the answer that follows the prompt's instructions better.")
    prompts = tmp_path / "test-prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in head(DATA / "test.jsonl", 2)))
    shots = Path(os.environ["REDLINE_SCREENSHOTS"]) if os.environ.get("REDLINE_SCREENSHOTS") and database_url.startswith("sqlite") else None
    server = start_server(make_app(sessions))
    try:
        flow = Flow(browser, f"http://127.0.0.1:{server.port}", shots)
        By = flow.By

        # the admin creates a critique project from the shipped test prompts, answers written by a model
        # through redline's engine (tiny-random here; `embedded` by default)
        flow.login("root")
        flow.go("/admin")
        form = flow.find("#new-user")  # the admin adds an annotator
        form.find_element(By.NAME, "name").send_keys("ann")
        form.find_element(By.NAME, "password").send_keys(PASSWORD)
        form.find_element(By.CSS_SELECTOR, "button").click()
        assert "added annotator ann" in flow.find("#notice").text
        form = flow.find("#new-project")
        form.find_element(By.NAME, "name").send_keys("critiques")
        form.find_element(By.CSS_SELECTOR, "select[name=task_type] option[value=critique]").click()
        form.find_element(By.NAME, "prompts").send_keys(str(prompts))
        form.find_element(By.NAME, "generate").send_keys("tiny-random")
        max_tokens = form.find_element(By.NAME, "max_new_tokens")
        max_tokens.clear()
        max_tokens.send_keys("24")
        form.find_element(By.NAME, "guidelines").send_keys("Name every instruction the answer breaks; revise only that.")
        flow.shot("new-project")
        flow.find("#create-project").click()
        flow.wait.until(lambda d: "/admin/projects/" in d.current_url)
        flow.wait.until(lambda d: "status: ready" in d.find_element(By.ID, "status").text)  # the page reloads itself
        assert "2 items" in flow.find("#progress").text and "answers by tiny-random" in flow.find("#status").text
        flow.logout()

        # the annotator ranks four answers with number keys (a tie included), down the page, and submits with
        # Ctrl+Enter; the page shows them in the prompt's hashed order, each card's id and field its place in the file
        flow.login("ann")
        flow.task("ranks")
        shown = shown_order(rank_rows[0]["prompt"], 4)
        assert [card.get_attribute("id") for card in browser.find_elements(By.CSS_SELECTOR, ".rankable")] == [f"answer-{i}" for i in shown]
        assert browser.switch_to.active_element.get_attribute("id") == f"answer-{shown[0]}"
        flow.keys("2", "1", "2", "4")
        assert [flow.find(f"#rank_{i}").get_attribute("value") for i in shown] == ["2", "1", "2", "4"]
        flow.shot("rank")
        flow.submit_with_keyboard()
        assert "/items/" in browser.current_url
        flow.keys("1", "3", "2", "4")
        flow.submit_with_keyboard()
        assert flow.find("#done")

        # a critique and a revision; the diff shows the change
        flow.task("critiques")
        flow.find("#critique").send_keys("The answer ignores the instruction on bullet points.")
        revision = flow.find("#revision")
        revision.clear()
        revision.send_keys("* one\n* two\n* three\n* four\n\nCrosswords reward patience.")
        assert flow.find("#diff ins").text.strip()
        flow.shot("critique")
        flow.submit_with_keyboard()
        flow.find("#critique").send_keys("Too long; cut it to the point.")
        revision = flow.find("#revision")
        revision.send_keys(" Shorter now.")
        flow.submit_with_keyboard()
        assert flow.find("#done")

        # the better of two, picked with the B key
        flow.task("pairs")
        flow.find("body").click()
        flow.keys("b")
        assert flow.find("#choice-b input").is_selected()
        flow.shot("pair")
        flow.submit_with_keyboard()
        assert flow.find("#done")
        flow.go("/admin")
        assert "for admins only" in flow.find("#message").text
        flow.logout()

        # the admin exports every kind
        flow.login("root")
        flow.go("/admin")
        flow.shot("admin")
        exported = {}
        for project, kind in (("ranks", "ranking"), ("critiques", "feedback"), ("pairs", "preference"), ("ranks", "preference")):
            flow.go("/admin")
            flow.find(f"#projects a[href^='/admin/projects/']")
            browser.find_element(By.LINK_TEXT, project).click()
            flow.find(f"#export-{kind}").click()
            path = flow.download(browser.downloads, f"{project}-{kind}.jsonl")
            exported[(project, kind)] = path
        flow.shot("project")

        # the quality page of a project that three simulated annotators filled (gold item included)
        from redline.app.bots import simulate

        gold = head(DATA / "rankings.jsonl", 9)
        gold[0]["meta"]["gold"] = True
        make_project(sessions, tmp_path, "bots", "rank", gold, overlap=3)
        simulate(sessions, "bots", annotators=3)
        flow.go("/admin")
        browser.find_element(By.LINK_TEXT, "bots").click()
        assert "Krippendorff" in flow.find("#agreement").text
        flow.shot("quality")
    finally:
        server.stop()

    for (project, kind), path in exported.items():
        assert main(["data", "validate", str(path), "--kind", kind]) == 0
        assert f"{2 if kind != 'preference' or project == 'ranks' else 1} valid {kind} records" in capsys.readouterr().out
    feedback = [json.loads(line) for line in exported[("critiques", "feedback")].read_text().splitlines()]
    assert feedback[0]["critique"] == "The answer ignores the instruction on bullet points."
    assert feedback[0]["revision"].startswith("* one\n* two") and feedback[0]["meta"]["annotator"] == "ann"
    assert feedback[1]["revision"].endswith("Shorter now.") and feedback[1]["meta"]["revision_edit_distance"] == 2
    assert feedback[0]["meta"]["source"] == "tiny-random"
    ranking = [json.loads(line) for line in exported[("ranks", "ranking")].read_text().splitlines()]
    # typed down the page 2 1 2 4 and 1 3 2 4; shown in the file's places [0, 2, 1, 3] and [2, 1, 0, 3]; stored in the
    # file's order: [2, 2, 1, 4] and [2, 3, 1, 4], dense
    assert [shown_order(r["prompt"], 4) for r in rank_rows] == [[0, 2, 1, 3], [2, 1, 0, 3]]
    assert [r["ranks"] for r in ranking] == [[1, 1, 0, 2], [1, 2, 0, 3]]
    assert all(r["meta"]["seconds"] > 0 for r in ranking + feedback)
    [pair] = [json.loads(line) for line in exported[("pairs", "preference")].read_text().splitlines()]
    source = head(DATA / "preferences.jsonl", 1)[0]
    from redline.app.projects import _flipped

    shown = [source["rejected"], source["chosen"]] if _flipped(source["prompt"], "#0") else [source["chosen"], source["rejected"]]
    assert (pair["chosen"], pair["rejected"]) == (shown[1], shown[0])  # B, the answer shown second, was picked

    if not database_url.startswith("sqlite"):
        return  # the records are the same whatever the database; train once
    critic, reward = tmp_path / "critic", tmp_path / "reward"
    assert main(["train", "critic", "--data", str(exported[("critiques", "feedback")]), "--model", "tiny-random",
                 "--out", str(critic), "--max-steps", "2", "--batch-size", "2"]) == 0
    assert main(["train", "reward", "--data", str(exported[("ranks", "ranking")]), "--model", "tiny-random",
                 "--out", str(reward), "--max-steps", "2", "--batch-size", "2", "--eval-split", "0.5"]) == 0
    assert json.loads((critic / "redline.json").read_text())["kind"] == "critic"
    assert json.loads((reward / "redline.json").read_text())["kind"] == "reward"
