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
    items, _ = P.plan_items(task_type, P.read_prompts(path))
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
