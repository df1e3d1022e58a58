"""Shared pieces of the feedback app's tests: a database with users, a logged-in HTTP client."""

from __future__ import annotations

import re

from conftest import write_jsonl

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "correct horse battery"


def make_users(sessions, **users: str) -> None:
    """users: name=role, every password PASSWORD."""
    from redline.app.projects import add_user

    with sessions.begin() as db:
        for name, role in users.items():
            add_user(db, name, role, PASSWORD)


def make_project(sessions, tmp_path, name: str, task_type: str, rows: list[dict], overlap: int = 1, guidelines: str = ""):
    from redline.app import projects as P

    path = write_jsonl(tmp_path / f"{name}-prompts.jsonl", rows)
    items = P.plan_items(task_type, P.read_prompts(path))
    with sessions.begin() as db:
        return P.create_project(db, name, task_type, items, overlap=overlap, guidelines=guidelines).id


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client, name: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password, "csrf": csrf_of(page.text), "next": "/"},
                       follow_redirects=False)


RANK_ROWS = [
    {"id": f"q{i}", "prompt": f"Write about topic {i}.", "responses": [f"answer {i}.{j}" for j in range(4)],
     "meta": {"topic": f"topic {i}"}}
    for i in range(3)
]
CRITIQUE_ROWS = [{"id": f"c{i}", "prompt": f"Describe thing {i}.", "response": f"Thing {i} is red and round.", "source": "model-x"}
                 for i in range(2)]
PAIR_ROWS = [{"id": f"p{i}", "prompt": f"Pick {i}", "responses": [f"left {i}", f"right {i}"]} for i in range(2)]
DEMO_ROWS = [{"id": "d0", "prompt": "Say hello politely."}]


def cheap_hashing(monkeypatch) -> None:
    """argon2 at its lowest cost: the tests log in dozens of times on a shared CPU."""
    from argon2 import PasswordHasher

    from redline.app import security

    monkeypatch.setattr(security, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


# ----------------------------------------------------------------------------- a throwaway PostgreSQL


def postgres_bin() -> str | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    import glob
    import os
    import shutil

    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


class PostgresCluster:
    """initdb + pg_ctl in a fresh folder, listening on a free loopback port; PostgreSQL refuses to
    run as root, so as root it runs as the unprivileged user ``nobody`` (through ``runuser``)."""

    def __init__(self, bindir: str):
        import os
        import shutil
        import socket
        import tempfile

        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="redline-pg-")
        self.data = os.path.join(self.root, "data")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root and runuser is missing (PostgreSQL refuses to run as root)")
            shutil.chown(self.root, "nobody")
            os.chmod(self.root, 0o700)
            self.as_user = [runuser, "-u", "nobody", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        import subprocess

        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "PostgresCluster":
        import os

        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "redline", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c max_connections=60"
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", options, "-l",
                  os.path.join(self.root, "log"), "-w", "-t", "60", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://redline@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        import os
        import shutil

        try:
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def postgres_or_skip_reason() -> str | None:
    """None if a throwaway cluster can start here, else why not."""
    import importlib.util
    import os
    import shutil

    if importlib.util.find_spec("psycopg") is None:
        return "the psycopg driver is not installed (pip install 'psycopg[binary]')"
    if postgres_bin() is None:
        return "PostgreSQL's initdb and pg_ctl are not on this machine (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


def postgres_cluster():
    """Generator body of a session fixture: a started cluster, stopped afterwards; skips with the reason."""
    import pytest

    reason = postgres_or_skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = PostgresCluster(postgres_bin()).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def browser_or_skip_reason() -> str | None:
    import importlib.util
    import shutil

    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "Chromium is not installed (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def chromium(download_dir: str):
    """Headless Debian Chromium driven by Selenium through the system chromedriver."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--disable-gpu"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": download_dir, "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": download_dir})
    return driver
