"""Load and faults: twenty annotators asking for items and submitting at once over loopback HTTP
(SQLite in WAL mode, and PostgreSQL), every submission stored exactly once; a server killed
mid-submission loses no accepted submission and stores no half one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from sqlalchemy import event, func, select  # noqa: E402
from app_helpers import PASSWORD, cheap_hashing, csrf_of, make_project, make_users, postgres_cluster  # noqa: E402

from redline.app import projects as P  # noqa: E402
from redline.app.db import Annotation, Item, User, open_database  # noqa: E402

N = 20
ROWS = [{"id": f"q{i}", "prompt": f"Question {i}?", "responses": [f"a{i}", f"b{i}", f"c{i}", f"d{i}"]} for i in range(60)]
RANKS = {"rank_0": "1", "rank_1": "2", "rank_2": "2", "rank_3": "3"}


postgres = pytest.fixture(scope="module")(postgres_cluster)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'load.db'}"
    return request.getfixturevalue("postgres").create_database(f"load_{os.getpid()}_{int(time.time() * 1000) % 10**8}")


def annotator(base: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    page = client.get("/login")
    r = client.post("/login", data={"name": name, "password": PASSWORD, "csrf": csrf_of(page.text), "next": "/"})
    assert r.status_code == 303, r.text
    return client


def open_item(client: httpx.Client, pid: int) -> tuple[str, str]:
    r = client.get(f"/projects/{pid}/next")
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    return url, csrf_of(client.get(url).text)


def test_twenty_annotators_submit_at_once_and_each_submission_is_stored_once(database_url, tmp_path, monkeypatch):
    from redline.app.web import make_app
    from redline.serve import start_server

    cheap_hashing(monkeypatch)
    sessions = open_database(database_url)
    names = [f"ann{i:02d}" for i in range(N)]
    make_users(sessions, **{n: "annotator" for n in names})
    pid = make_project(sessions, tmp_path, "load", "rank", ROWS[:N])
    server = start_server(make_app(sessions))
    try:
        base = f"http://127.0.0.1:{server.port}"
        with ThreadPoolExecutor(N) as pool:
            clients = list(pool.map(lambda n: annotator(base, n), names))
            start = threading.Barrier(N)

            def first_item(c):
                start.wait()  # twenty ask for their next item at once
                return open_item(c, pid)

            opened = list(pool.map(first_item, clients))
            assert len({url for url, _ in opened}) == N  # overlap 1: twenty different items
            barrier = threading.Barrier(N)

            def submit(i: int) -> list[int]:
                url, csrf = opened[i]
                barrier.wait()  # all at once
                first = clients[i].post(url, data={"csrf": csrf, **RANKS}).status_code
                again = clients[i].post(url, data={"csrf": csrf, **RANKS}).status_code  # a retry: stored nowhere
                return [first, again]

            codes = list(pool.map(submit, range(N)))
        assert codes == [[303, 303]] * N
    finally:
        server.stop()
    with sessions() as db:
        annotations = db.scalars(P.select(Annotation)).all()
        assert len(annotations) == N and len({(a.user_id, a.item_id) for a in annotations}) == N
        assert len(P.export_records(db, P.get_project(db, "load"), "ranking")) == N


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app_process(db_url: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "redline.cli", "app", "--db", db_url, "--port", str(port)],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the app did not start: {log.read_text()}")


@pytest.mark.slow
def test_a_killed_server_loses_no_accepted_submission_and_stores_no_half_one(tmp_path, monkeypatch):
    cheap_hashing(monkeypatch)  # the hashes carry their own (cheap) parameters into the server process
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    sessions = open_database(url)
    names = [f"ann{i:02d}" for i in range(N)]
    make_users(sessions, **{n: "annotator" for n in names})
    pid = make_project(sessions, tmp_path, "kill", "rank", ROWS)
    port = free_port()
    server = start_app_process(url, port, tmp_path / "server.log")
    accepted: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work(name: str) -> None:
        try:
            client = annotator(f"http://127.0.0.1:{port}", name)
            while not stop.is_set():
                item_url, csrf = open_item(client, pid)
                if client.post(item_url, data={"csrf": csrf, **RANKS}).status_code == 303:
                    with lock:
                        accepted.append((name, item_url.rsplit("/", 1)[1]))
        except (httpx.HTTPError, AssertionError):
            return  # the server died under us

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(accepted) < 25 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)  # mid-submission: others are in flight
    server.wait()
    stop.set()
    for t in threads:
        t.join(60)
    assert len(accepted) >= 25
    sessions = open_database(url)
    with sessions() as db:
        from sqlalchemy import text

        assert db.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        stored = {(u.name, str(a.item_id)): a for a, u in db.execute(P.select(Annotation, P.User).join(P.User, P.User.id == Annotation.user_id))}
        for key in accepted:
            assert key in stored, f"accepted submission {key} was lost"
        for annotation in stored.values():  # nothing half-written: every stored answer is whole
            assert annotation.status == "submitted" and annotation.payload == {"ranks": [0, 1, 1, 2]}
        assert len(P.export_records(db, P.get_project(db, "kill"), "ranking")) == len(stored)
    restarted = start_app_process(url, port, tmp_path / "server2.log")  # and it opens again
    restarted.terminate()
    restarted.wait(30)


def test_two_holders_past_the_time_limit_cannot_both_fill_an_items_last_place(database_url, tmp_path, monkeypatch):
    """ann held the item past the time limit, so bob was given its one place too. Both submit at once: the second
    submission waits for the first's transaction and is refused (on PostgreSQL both were stored, overlap 1 exceeded:
    the last-place check read the committed answers while the first was not committed yet)."""
    from sqlalchemy import func, select

    from redline.app.db import Assignment, Item, Project, User

    cheap_hashing(monkeypatch)
    sessions = open_database(database_url)
    make_users(sessions, ann="annotator", bob="annotator")
    pid = make_project(sessions, tmp_path, "race", "rank", ROWS[:1])

    def held(db, name):
        user = db.scalar(select(User).where(User.name == name))
        return user, db.get(Project, pid), db.scalar(select(Item).where(Item.project_id == pid))

    with sessions.begin() as db:
        ann, project, item = held(db, "ann")
        assert P.next_item(db, ann, project).id == item.id
        db.get(Assignment, (ann.id, item.id)).started_at -= 2 * P.ASSIGNMENT_TTL
        bob, _, _ = held(db, "bob")
        assert P.next_item(db, bob, project).id == item.id  # ann's hold lapsed: her place went to bob
    first = sessions()
    first.begin()
    P.submit(first, *held(first, "ann"), dict(RANKS))  # stored, not yet committed
    outcome = {}

    def second():
        with sessions.begin() as db:
            try:
                outcome["bob"] = P.submit(db, *held(db, "bob"), dict(RANKS))
            except P.FormError as e:
                outcome["bob"] = e

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(1.0)
    waited = thread.is_alive()
    first.commit()
    first.close()
    thread.join(30)
    assert waited and isinstance(outcome["bob"], P.FormError) and "has its 1 answer(s) already" in str(outcome["bob"])
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Annotation).where(Annotation.status == "submitted")) == 1


def test_an_import_adds_its_records_in_batches_giving_the_rows_one_at_a_time_gave(database_url, tmp_path, monkeypatch, jsonl):
    # one add_items per record (a max(position) query and a flush each) took 50-90 ms a record: hours for 160k pairs
    sessions = open_database(database_url)
    statements: list[str] = []
    event.listen(sessions.kw["bind"], "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
    rows = [{"id": f"r{i}", "prompt": f"Old {i}?", "chosen": f"good {i}", "rejected": f"bad {i}",
             "meta": {"annotator": ["ann", "Bob B"][i % 2], "seconds": i, "topic": i}} for i in range(5)]
    path = jsonl(rows, "old.jsonl")

    def imported(name: str, batch: int | None) -> tuple[int, list, list]:
        """How many max(position) queries importing ``path`` into a fresh project with one item took; its rows."""
        make_project(sessions, tmp_path, name, "pair", [{"prompt": "Seed?", "responses": ["x", "y"]}])
        if batch is not None:
            monkeypatch.setattr(P, "IMPORT_BATCH", batch, raising=False)
        statements.clear()
        with sessions.begin() as db:
            assert P.import_records(db, P.get_project(db, name), path) == 5
        with sessions() as db:
            items = db.execute(select(Item.id, Item.position, Item.external_id, Item.prompt, Item.meta, Item.answers)
                               .where(Item.project_id == P.get_project(db, name).id).order_by(Item.id)).all()
            notes = db.execute(select(Annotation.item_id, User.name, Annotation.status, Annotation.payload, Annotation.seconds,
                                      Annotation.imported).join(User, User.id == Annotation.user_id)
                               .where(Annotation.item_id.in_([i.id for i in items])).order_by(Annotation.id)).all()
        base = items[0].id  # ids relative to the project's first item: the projects' rows compare
        return (sum("max(items.position)" in s for s in statements),
                [(i.id - base, *i[1:]) for i in items], [(n.item_id - base, *n[1:]) for n in notes])

    default_queries, default_items, default_notes = imported("default", None)
    batched_queries, batched_items, batched_notes = imported("batched", 2)
    one_queries, one_items, one_notes = imported("one-at-a-time", 1)
    assert (one_queries, batched_queries) == (5, 3)
    assert default_queries == 1  # five records: one batch
    assert batched_items == one_items == default_items and batched_notes == one_notes == default_notes
    assert [(i[0], i[1], i[2]) for i in one_items] == [(n, n, f"r{n - 1}" if n else None) for n in range(6)]
    assert [n[:2] for n in one_notes] == [(1, "ann"), (2, "Bob-B"), (3, "ann"), (4, "Bob-B"), (5, "ann")]
    assert [n[4] for n in one_notes] == [0.0, 1.0, 2.0, 3.0, 4.0] and {n[2] for n in one_notes} == {"submitted"}


def test_an_import_reads_adds_and_reads_on_a_batch_at_a_time(database_url, tmp_path, monkeypatch, jsonl):
    # the whole file became records before the first was added: 160k records held at once
    sessions = open_database(database_url)
    make_project(sessions, tmp_path, "p", "pair", [{"prompt": "Seed?", "responses": ["x", "y"]}])
    path = jsonl([{"prompt": f"Old {i}?", "chosen": "good", "rejected": "bad"} for i in range(5)], "old.jsonl")
    events: list = []
    read, add = P.iter_records, P.add_items

    def logged_read(*args, **kwargs):
        for line, record in read(*args, **kwargs):
            events.append(line)
            yield line, record

    monkeypatch.setattr(P, "iter_records", logged_read)
    monkeypatch.setattr(P, "add_items", lambda db, project, items: events.append(f"add {len(items)}") or add(db, project, items))
    monkeypatch.setattr(P, "IMPORT_BATCH", 2)
    with sessions.begin() as db:
        assert P.import_records(db, P.get_project(db, "p"), path) == 5
    assert events == [1, 2, 3, 4, 5, 1, 2, "add 2", 3, 4, "add 2", 5, "add 1"]  # checked whole, then added as read


@pytest.mark.parametrize("late", [
    {"prompt": "Bad?", "chosen": "good"},  # no record: read_records' error
    {"prompt": "Bad?", "chosen": "good", "rejected": "bad", "meta": {"seconds": -1}},  # a record import refuses
])
def test_a_bad_line_late_in_an_import_leaves_the_database_as_it_was(late, database_url, tmp_path, monkeypatch, jsonl):
    sessions = open_database(database_url)
    make_project(sessions, tmp_path, "p", "pair", [{"prompt": "Seed?", "responses": ["x", "y"]}])
    rows = [{"prompt": f"Old {i}?", "chosen": "good", "rejected": "bad", "meta": {"annotator": f"new{i % 2}"}} for i in range(6)]
    path = jsonl([*rows, late], "old.jsonl")
    monkeypatch.setattr(P, "IMPORT_BATCH", 2)

    def counts() -> tuple[int, int, int]:
        with sessions() as db:
            return tuple(db.scalar(select(func.count()).select_from(table)) for table in (Item, Annotation, User))

    before = counts()
    with sessions.begin() as db:  # a caller that goes on after the refusal commits what import added
        with pytest.raises(P.RecordError, match=r"old.jsonl:7: (rejected|meta.seconds): "):
            P.import_records(db, P.get_project(db, "p"), path)
    assert counts() == before


def test_a_file_changed_between_an_imports_check_and_its_adding_adds_nothing(database_url, tmp_path, monkeypatch, jsonl):
    sessions = open_database(database_url)
    make_project(sessions, tmp_path, "p", "pair", [{"prompt": "Seed?", "responses": ["x", "y"]}])
    rows = [{"prompt": f"Old {i}?", "chosen": "good", "rejected": "bad", "meta": {"annotator": "new"}} for i in range(5)]
    path = jsonl(rows, "old.jsonl")
    check = P._import_annotators

    def then_changed(*args):
        users = check(*args)
        jsonl([*rows[:4], {**rows[4], "meta": {"annotator": "zed"}}], "old.jsonl")
        return users

    monkeypatch.setattr(P, "_import_annotators", then_changed)
    monkeypatch.setattr(P, "IMPORT_BATCH", 2)
    with sessions.begin() as db:
        with pytest.raises(P.RecordError, match="old.jsonl:5: meta.annotator: 'zed' was not in the file when it was checked"):
            P.import_records(db, P.get_project(db, "p"), path)
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Item)) == 1  # the seed: the first two batches rolled back
        assert db.scalar(select(User).where(User.name == "new")) is None
