"""The feedback app over HTTP (FastAPI's TestClient on a real SQLite file): every route, every role,
the four task types, bad input, security, export that the record readers accept."""

from __future__ import annotations

import html
import json
import re

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("fastapi")

from app_helpers import (  # noqa: E402
    CRITIQUE_ROWS,
    DEMO_ROWS,
    PAIR_ROWS,
    PASSWORD,
    RANK_ROWS,
    cheap_hashing,
    csrf_of,
    login,
    make_project,
    make_users,
)
from fastapi.testclient import TestClient  # noqa: E402

from redline import RedlineError  # noqa: E402
from redline.app import projects as P  # noqa: E402
from redline.app.db import open_database  # noqa: E402
from redline.app.web import CARRY_MAX, LOGIN_FORM_MAX, make_app  # noqa: E402
from redline.records import read_records  # noqa: E402


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    cheap_hashing(monkeypatch)
    sessions = open_database(f"sqlite:///{tmp_path / 'app.db'}")
    make_users(sessions, root="admin", ann="annotator", bob="annotator")
    return sessions


@pytest.fixture
def client(sessions):
    return TestClient(make_app(sessions))


def client_for(sessions, name):
    c = TestClient(make_app(sessions))
    assert login(c, name).status_code == 303
    return c


def open_task(c, pid):
    """Follow /next to the assigned item; (item url, page)."""
    r = c.get(f"/projects/{pid}/next", follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    page = c.get(url)
    assert page.status_code == 200
    return url, page


def export(sessions, name, kind, tmp_path):
    from redline.records import write_records

    with sessions() as db:
        records = P.export_records(db, P.get_project(db, name), kind)
    path = tmp_path / f"{name}-{kind}.jsonl"
    write_records(path, records)
    return read_records(path, kind)


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("a,b,d", [("", "", 0), ("a b c", "a b c", 0), ("a b c", "a x c", 1), ("a b c", "a c", 1),
                                   ("a b", "a b c d", 2), ("one two", "", 2), ("kitten sitting", "sitting kitten", 2)])
def test_edit_distance_counts_word_edits(a, b, d):
    assert P.edit_distance(a, b) == d == P.edit_distance(b, a)


def test_dense_ranks_keep_ties_and_order():
    assert P.dense_ranks([1, 1, 3]) == [0, 0, 1]
    assert P.dense_ranks([4, 2, 3, 1]) == [3, 1, 2, 0]


# ----------------------------------------------------------------------------- login, sessions, roles


def test_login_sets_an_httponly_samesite_cookie_and_logout_ends_the_session(client):
    r = login(client, "ann")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "redline_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    page = client.get("/tasks")
    assert page.status_code == 200 and "ann (annotator)" in page.text
    assert client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False).status_code == 303
    assert client.get("/tasks", follow_redirects=False).headers["location"].startswith("/login")


def test_wrong_password_is_401_and_the_sixth_failure_is_rate_limited(client):
    for _ in range(5):
        assert login(client, "ann", "wrong password").status_code == 401
    r = login(client, "ann", PASSWORD)  # even the right password waits now
    assert r.status_code == 429 and "too many failed logins" in r.text and int(r.headers["retry-after"]) > 0
    assert login(client, "bob").status_code == 303  # another name from the same address still may


def test_a_refused_login_shows_its_reason_once_and_no_empty_error(client):
    # base.html read the login page's error (a string) as a form's: a second, empty red box said ": "
    for _ in range(6):
        r = login(client, "ann", "wrong password")
        errors = re.findall(r'<p class="error"[^>]*>(.*?)</p>', r.text)
        assert len(errors) == 1 and ("wrong name or password" in errors[0] or "too many failed logins" in errors[0])
    assert r.status_code == 429


def test_concurrent_wrong_passwords_are_limited_like_sequential_ones(client, monkeypatch):
    # the limit was checked before the (slow) password check and counted after it: tries sent at once all passed it
    import threading
    import time

    from redline.app import security

    checked = []

    def slow_verify(password_hash, password):
        checked.append(password)
        time.sleep(0.3)  # argon2 at its real cost takes a while; every try is in flight before any has failed
        return False

    monkeypatch.setattr(security, "verify_password", slow_verify)
    csrf = csrf_of(client.get("/login").text)
    statuses = []

    def guess(n):
        r = client.post("/login", data={"name": "ann", "password": f"guess {n}", "csrf": csrf}, follow_redirects=False)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checked) == 5 and sorted(statuses) == [401] * 5 + [429] * 5
    limiter = security.LoginLimiter(per_name=5, per_address=20)
    for _ in range(25):  # a try that succeeds is taken back: logins that work never meet the address's limit
        assert limiter.attempt("10.0.0.1", "ann") == 0
        limiter.succeeded("10.0.0.1", "ann")


def test_expired_sessions_and_old_login_failures_are_forgotten(sessions, monkeypatch):
    """Expired session rows and the limiter's keys were never removed: both grew with every login ever made."""
    from datetime import timedelta

    from redline.app import security
    from redline.app.db import Session as SessionRow
    from redline.app.db import now

    with sessions.begin() as db:
        user = P.get_user(db, "ann")
        for token, expires in (("old", now() - timedelta(seconds=1)), ("live", now() + timedelta(days=1))):
            db.add(SessionRow(token_hash=security.token_hash(token), user_id=user.id, csrf="c", expires_at=expires))
    assert login(TestClient(make_app(sessions)), "bob").status_code == 303
    with sessions() as db:
        held = {row.token_hash for row in db.query(SessionRow)}
    assert security.token_hash("old") not in held and security.token_hash("live") in held and len(held) == 2

    clock = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: clock[0])
    limiter = security.LoginLimiter(per_name=5, per_address=20, window_s=300)
    for n in range(50):  # a scan of names from many addresses
        limiter.failed(f"10.0.0.{n}", f"name{n}")
        assert limiter.wait_s("10.9.9.9", f"never-tried-{n}") == 0  # a check stores nothing
    assert limiter.keys_held() == 100
    clock[0] += 301  # the window has passed: the next try forgets them
    assert limiter.attempt("10.0.0.1", "ann") == 0
    assert limiter.keys_held() == 2
    limiter.succeeded("10.0.0.1", "ann")
    assert limiter.keys_held() == 0


def test_a_logins_password_check_holds_no_database_lock(client, tmp_path, monkeypatch):
    # it ran inside the login's transaction: on SQLite every annotator's submission waited for each login's argon2
    import sqlite3

    from redline.app import security

    verify, writable = security.verify_password, []

    def verify_and_try_to_write(password_hash, password):
        other = sqlite3.connect(tmp_path / "app.db", timeout=0.1, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            writable.append(True)
        except sqlite3.OperationalError:  # database is locked
            writable.append(False)
        finally:
            other.close()
        return verify(password_hash, password)

    monkeypatch.setattr(security, "verify_password", verify_and_try_to_write)
    assert login(client, "ann", "wrong password").status_code == 401
    assert login(client, "ann").status_code == 303 and client.get("/tasks").status_code == 200
    assert writable == [True, True]


def test_login_without_its_csrf_token_is_refused(client):
    client.get("/login")
    for forged in ("forged", "forgé"):  # a non-ASCII token is refused too, not a 500
        r = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": forged}, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text


def test_login_refuses_to_redirect_off_site(client):
    page = client.get("/login")
    r = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": csrf_of(page.text), "next": "//evil.example/x"},
                    follow_redirects=False)
    assert r.headers["location"] == "/"


ANNOTATOR_ROUTES = ["/", "/tasks", "/mywork", "/projects/1/next", "/projects/1/items/1"]
ADMIN_GET = ["/admin", "/admin/projects/1", "/admin/projects/1/export?kind=ranking"]
ADMIN_POST = ["/admin/users", "/admin/projects", "/admin/projects/1/import", "/admin/projects/1/drafts", "/admin/token"]


def test_anonymous_visitors_are_sent_to_the_login_page(client, sessions, tmp_path):
    make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    for url in ANNOTATOR_ROUTES + ADMIN_GET:
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), url
    for url in ADMIN_POST + ["/logout"]:
        r = client.post(url, data={}, follow_redirects=False)
        # home after the login: a GET of a form's action (/admin/users) was a 405
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/", url
    r = client.post("/projects/1/items/1", data={}, follow_redirects=False)  # a task form: the login page, back to it after
    assert r.status_code == 401 and 'name="next" value="/projects/1/items/1"' in r.text
    assert client.get("/health").json() == {"ok": True}
    assert client.get("/login").status_code == 200


READ: list = []


def upload_body():
    """A multipart upload that records whether the server read it."""
    READ.append(True)
    yield b"--b\r\nContent-Disposition: form-data; name=\"prompts\"; filename=\"p.jsonl\"\r\n\r\n"
    yield b"x" * (1 << 20)
    yield b"\r\n--b--\r\n"


def test_an_anonymous_post_body_is_never_read(client):
    # the form (an upload spooled to disk, of any size) was read before the login check refused it
    READ.clear()
    for url in ("/admin/projects", "/projects/1/items/1", "/logout"):
        r = client.post(url, content=upload_body(), headers={"content-type": "multipart/form-data; boundary=b"},
                        follow_redirects=False)
        if "items" in url:  # the login page, which says the form was not kept
            assert r.status_code == 401 and "could not be kept through the login" in r.text
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), url
    assert READ == []
    csrf = csrf_of(client.get("/login").text)  # the login form itself: read only when it is small
    r = client.post("/login", data={"name": "ann", "password": "x" * LOGIN_FORM_MAX, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 413
    r = client.post("/login", content=upload_body(), headers={"content-type": "multipart/form-data; boundary=b"},
                    follow_redirects=False)  # no Content-Length: its size is not known before reading it
    assert r.status_code == 413 and READ == []
    assert login(client, "ann").status_code == 303


def end_sessions(sessions) -> None:
    from redline.app.db import Session

    with sessions.begin() as db:
        for row in db.scalars(P.select(Session)):
            row.expires_at = P.now() - P.timedelta(seconds=1)


def test_a_critique_sent_after_its_session_ended_is_given_back_after_the_login(sessions, tmp_path):
    # the expired session's POST was sent to the login page unread, and the login led to an empty form: work lost
    pid = make_project(sessions, tmp_path, "c", "critique", CRITIQUE_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    critique = 'Too vague: "red" <b>and</b> round & \u05e9\u05dc\u05d5\u05dd.\n\nSecond paragraph.'
    revision = "\nThing 0 is a red, round ball.\n"
    end_sessions(sessions)
    r = c.post(url, data={"csrf": csrf_of(page.text), "critique": critique.replace("\n", "\r\n"),
                          "revision": revision.replace("\n", "\r\n"), "action": "submit"}, follow_redirects=False)
    assert r.status_code == 401 and "your session ended before your answer was saved" in r.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text))
    assert html.unescape(fields["carried:critique"]) == critique
    with sessions() as db:
        assert P.progress(db, P.get_project(db, "c"))["submitted"] == 0  # nothing was submitted for her
    data = {k: html.unescape(v).replace("\n", "\r\n") for k, v in fields.items()}  # as a browser sends them
    data |= {"name": "ann", "password": "wrong password"}
    r = c.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 401 and "carried:revision" in r.text  # a mistyped password keeps them too
    r = c.post("/login", data=data | {"password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 200 and "here it is again" in r.text and f'action="{url}"' in r.text
    assert element_text(r.text, "textarea", "critique") == critique and element_text(r.text, "textarea", "revision") == revision
    form = {"csrf": csrf_of(r.text), "critique": critique, "revision": revision}
    assert c.post(url, data=form, follow_redirects=False).status_code == 303
    [record] = export(sessions, "c", "feedback", tmp_path)
    assert (record.critique, record.revision) == (critique, revision)


def test_a_rank_sent_after_a_logout_elsewhere_is_given_back_and_an_unkept_form_is_named(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    c.cookies.clear()  # logged out in another tab: the cookie is gone too
    ranks = {"rank_0": "2", "rank_1": "1", "rank_2": "2", "rank_3": "3"}
    r = c.post(url, data={"csrf": csrf_of(page.text), **ranks})
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text))
    r = c.post("/login", data=fields | {"name": "ann", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 200 and all(f'name="{k}" id="{k}" value="{v}"' in r.text for k, v in ranks.items())
    c.cookies.clear()
    r = c.post(url, data={"csrf": "x", "reason": "x" * CARRY_MAX})  # too long to carry: said, not dropped silently
    assert r.status_code == 401 and "could not be kept through the login" in r.text and "carried:" not in r.text


def test_a_form_of_an_earlier_session_is_given_back_not_refused_blank(sessions, tmp_path):
    # logged in again in another tab: the old page's CSRF token was refused with "reload the page", losing the text
    pid = make_project(sessions, tmp_path, "d", "demonstration", DEMO_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    assert login(c, "ann").status_code == 303  # a new session, a new CSRF token
    r = c.post(url, data={"csrf": csrf_of(page.text), "response": "Hello, and good day to you."})
    assert r.status_code == 403 and "CSRF token is of an earlier session" in r.text
    assert element_text(r.text, "textarea", "response") == "Hello, and good day to you."
    with sessions() as db:
        assert P.progress(db, P.get_project(db, "d"))["submitted"] == 0
    r = c.post(url, data={"csrf": csrf_of(r.text), "response": "Hello, and good day to you."}, follow_redirects=False)
    assert r.status_code == 303 and len(export(sessions, "d", "demonstration", tmp_path)) == 1


def test_a_kept_form_for_an_item_answered_since_elsewhere_is_refused_not_dropped(sessions, tmp_path):
    # the laptop's critique, kept through the login (or sent with an earlier session's token), for an item answered
    # meanwhile on the phone (or in another tab): the login led on to the next item without a word, and the old
    # token's page was refused with "reload the page", the text lost
    pid = make_project(sessions, tmp_path, "c", "critique", CRITIQUE_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    old = {"csrf": csrf_of(page.text), "critique": "Too vague, laptop.", "revision": "Thing 0 is a ball."}
    end_sessions(sessions)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', c.post(url, data=old).text))
    phone = client_for(sessions, "ann")
    answer = {"csrf": csrf_of(phone.get(url).text), "critique": "Too vague, phone.", "revision": "Thing 0 is red."}
    assert phone.post(url, data=answer, follow_redirects=False).status_code == 303
    r = c.post("/login", data={k: html.unescape(v) for k, v in fields.items()} | {"name": "ann", "password": PASSWORD},
               follow_redirects=False)
    assert r.status_code == 422 and "you submitted this item already" in r.text and "this one was not saved" in r.text
    assert element_text(r.text, "textarea", "critique") == "Too vague, laptop."  # still there to copy
    r = c.post(url, data=old)  # the ended session's page sent again, under the new session
    assert r.status_code == 422 and "you submitted this item already" in r.text
    assert element_text(r.text, "textarea", "critique") == "Too vague, laptop."
    [record] = export(sessions, "c", "feedback", tmp_path)
    assert record.critique == "Too vague, phone."


def test_an_annotator_sees_no_admin_page(sessions, tmp_path):
    make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    c = client_for(sessions, "ann")
    csrf = csrf_of(c.get("/tasks").text)
    for url in ADMIN_GET:
        r = c.get(url)
        assert r.status_code == 403 and "for admins only" in r.text and "ann (annotator)" in r.text, url
    for url in ADMIN_POST:
        assert c.post(url, data={"csrf": csrf}).status_code == 403, url
    READ.clear()  # refused before its upload is read
    r = c.post("/admin/projects", content=upload_body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 403 and "for admins only" in r.text and READ == []


def test_an_id_past_an_integer_column_is_a_404_not_a_500(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    huge = 10**20  # SQLite cannot bind it (OverflowError); PostgreSQL's Integer stops at 2**31 - 1
    ann, admin = client_for(sessions, "ann"), client_for(sessions, "root")
    for url in (f"/projects/{huge}/next", f"/projects/{pid}/items/{huge}", f"/projects/{huge}/items/1"):
        assert ann.get(url).status_code == 404, url
    for url in (f"/admin/projects/{huge}", f"/admin/projects/{huge}/export?kind=ranking"):
        assert admin.get(url).status_code == 404, url


def test_every_post_needs_the_session_csrf_token(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    c = client_for(sessions, "ann")
    url, _ = open_task(c, pid)
    data = {"rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "4"}
    for csrf in (None, "forged", "forgé"):  # a non-ASCII token too (compare_digest raises on a non-ASCII str)
        r = c.post(url, data=data if csrf is None else {**data, "csrf": csrf})
        assert r.status_code == 403 and "CSRF" in r.text
    admin = client_for(sessions, "root")
    assert admin.post("/admin/users", data={"name": "eve", "role": "admin"}).status_code == 403
    with sessions() as db:
        assert db.scalar(P.select(P.User).where(P.User.name == "eve")) is None


def test_pages_carry_a_strict_content_security_policy(client):
    r = client.get("/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


def test_no_page_title_holds_markup_or_the_csrf_token(sessions, tmp_path):
    # the admin page's title once held its API-token form: the session's CSRF token went to tabs and browser history
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    admin = client_for(sessions, "root")
    for url in ("/admin", f"/admin/projects/{pid}", "/tasks", "/mywork"):
        page = admin.get(url).text
        title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
        assert csrf_of(page) not in title and "<" not in title and "\n" not in title, (url, title)
    assert admin.get("/admin").text.count('action="/admin/token"') == 1


# ----------------------------------------------------------------------------- the four task types


def test_rank_with_ties_refuses_a_missing_rank_and_exports_rankings_and_pairs(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS, guidelines="Rank by **helpfulness**.")
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    assert "<strong>helpfulness</strong>" in page.text and page.text.count('class="answer rankable') == 4
    # the answers are shown in the prompt's hashed order, not the file's ([0, 1, 3, 2] here); each card's field names
    # its answer's place in the file, so the page's "answer 3" is rank_3
    shown = P.shown_order(RANK_ROWS[0]["prompt"], 4)
    assert shown == [0, 1, 3, 2]
    assert re.findall(r"answer 0\.(\d)", page.text) == [str(i) for i in shown]
    assert re.findall(r'Rank of answer (\d) <input [^>]* name="rank_(\d)"', page.text) == [(str(n + 1), str(i)) for n, i in enumerate(shown)]
    csrf = csrf_of(page.text)
    r = c.post(url, data={"csrf": csrf, "rank_0": "1", "rank_1": "2", "rank_2": "3"})
    assert r.status_code == 422 and "rank of answer 3 is missing" in r.text and 'data-field="rank_3"' in r.text
    r = c.post(url, data={"csrf": csrf, "rank_0": "2", "rank_1": "2", "rank_2": "2", "rank_3": "2"})
    assert r.status_code == 422 and "every answer has the same rank" in r.text
    r = c.post(url, data={"csrf": csrf, "rank_0": "9", "rank_1": "1", "rank_2": "1", "rank_3": "1"})
    assert r.status_code == 422 and "from 1 to 4" in r.text
    # ranks 2, 1, 2, 4 down the page: stored and exported in the file's order
    on_page = {f"rank_{i}": rank for i, rank in zip(shown, ["2", "1", "2", "4"])}
    r = c.post(url, data={"csrf": csrf, **on_page}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/projects/{pid}/next"
    # the same submission again (a double click, a retry) stores nothing more; another ranking is refused, not dropped
    assert c.post(url, data={"csrf": csrf, **on_page}, follow_redirects=False).status_code == 303
    assert c.post(url, data={"csrf": csrf, "rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "4"},
                  follow_redirects=False).status_code == 422
    [ranking] = export(sessions, "r", "ranking", tmp_path)
    assert ranking.ranks == [1, 0, 2, 1] and ranking.responses == RANK_ROWS[0]["responses"]
    assert ranking.meta["annotator"] == "ann" and ranking.meta["seconds"] >= 0 and ranking.meta["topic"] == "topic 0"
    assert ranking.meta["project"] == "r" and ranking.meta["item"] == "q0"
    [pref] = export(sessions, "r", "preference", tmp_path)
    assert pref.chosen == "answer 0.1" and pref.rejected == "answer 0.2"  # the page's 2nd (best) and 4th (worst)


def test_critique_and_revise_refuses_empty_fields_and_exports_feedback(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "c", "critique", CRITIQUE_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    assert "Thing 0 is red and round." in page.text and "(model-x)" in page.text
    csrf = csrf_of(page.text)
    r = c.post(url, data={"csrf": csrf, "critique": "  ", "revision": "Thing 0 is blue."})
    assert r.status_code == 422 and "critique: critique is empty" in r.text
    assert "Thing 0 is blue." in r.text  # what was typed is kept
    r = c.post(url, data={"csrf": csrf, "critique": "It is blue, not red.", "revision": ""})
    assert r.status_code == 422 and "revision: revision is empty" in r.text
    r = c.post(url, data={"csrf": csrf, "critique": "It is blue, not red.", "revision": "Thing 0 is blue and round."},
               follow_redirects=False)
    assert r.status_code == 303
    [record] = export(sessions, "c", "feedback", tmp_path)
    assert (record.critique, record.revision, record.response) == ("It is blue, not red.", "Thing 0 is blue and round.",
                                                                    "Thing 0 is red and round.")
    assert record.meta["revision_edit_distance"] == 1 and record.meta["source"] == "model-x"


def test_pick_the_better_of_two_and_write_a_demonstration(sessions, tmp_path):
    pair = make_project(sessions, tmp_path, "p", "pair", PAIR_ROWS)
    demo = make_project(sessions, tmp_path, "d", "demonstration", DEMO_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pair)
    assert r'value="a"' in page.text and "left 0" in page.text and "right 0" in page.text
    csrf = csrf_of(page.text)
    r = c.post(url, data={"csrf": csrf})
    assert r.status_code == 422 and "choice: missing" in r.text
    assert c.post(url, data={"csrf": csrf, "choice": "b"}, follow_redirects=False).status_code == 303
    url, page = open_task(c, demo)
    r = c.post(url, data={"csrf": csrf, "response": ""})
    assert r.status_code == 422 and "response: response is empty" in r.text
    assert c.post(url, data={"csrf": csrf, "response": "Hello, and welcome."}, follow_redirects=False).status_code == 303
    [pref] = export(sessions, "p", "preference", tmp_path)
    assert (pref.chosen, pref.rejected) == ("right 0", "left 0")
    [dem] = export(sessions, "d", "demonstration", tmp_path)
    assert dem.response == "Hello, and welcome." and dem.meta["annotator"] == "ann"
    with sessions() as db, pytest.raises(RedlineError, match="exports preference, not 'feedback'"):
        P.export_records(db, P.get_project(db, "p"), "feedback")


def test_skip_and_flag_need_no_answer_but_a_flag_needs_a_reason(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    csrf = csrf_of(page.text)
    assert c.post(url, data={"csrf": csrf, "action": "skip"}, follow_redirects=False).status_code == 303
    url2, _ = open_task(c, pid)
    assert url2 != url  # a skipped item is not handed back
    r = c.post(url2, data={"csrf": csrf, "action": "flag"})
    assert r.status_code == 422 and "reason: say why" in r.text
    assert c.post(url2, data={"csrf": csrf, "action": "flag", "reason": "answers are in French"},
                  follow_redirects=False).status_code == 303
    mywork = c.get("/mywork").text
    assert "skipped" in mywork and "flagged" in mywork and "answers are in French" in mywork
    with sessions() as db:
        assert P.progress(db, P.get_project(db, "r")) | {} == {"items": 3, "submitted": 0, "skipped": 1, "flagged": 1,
                                                                "complete": 0, "needed": 3}
    with sessions() as db:
        assert P.export_records(db, P.get_project(db, "r"), "ranking") == []


def test_another_answer_to_an_answered_item_is_refused_not_dropped_unsaid(sessions, tmp_path):
    # a second tab (or the back button) sent a changed critique: it was stored nowhere and the app moved on silently
    pid = make_project(sessions, tmp_path, "c", "critique", CRITIQUE_ROWS)
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    first = {"csrf": csrf_of(page.text), "critique": "Too vague.", "revision": "Thing 0 is a red ball."}
    assert c.post(url, data=first, follow_redirects=False).status_code == 303
    assert c.post(url, data=first, follow_redirects=False).status_code == 303  # a double click: the same, stored once
    r = c.post(url, data={**first, "critique": "Too vague, and wrong."})
    assert r.status_code == 422 and "you submitted this item already" in r.text and "this one was not saved" in r.text
    assert element_text(r.text, "textarea", "critique") == "Too vague, and wrong."  # still there to copy
    r = c.post(url, data={"csrf": first["csrf"], "action": "skip"})
    assert r.status_code == 422 and "you submitted this item already" in r.text
    [record] = export(sessions, "c", "feedback", tmp_path)
    assert record.critique == "Too vague."


def test_overlap_hands_each_item_to_n_annotators_and_then_to_nobody(sessions, tmp_path):
    make_users(sessions, cat="annotator")
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS[:1], overlap=2)
    ann, bob, cat = (client_for(sessions, n) for n in ("ann", "bob", "cat"))
    url_a, _ = open_task(ann, pid)
    url_b, _ = open_task(bob, pid)
    assert url_a == url_b  # the one item goes to two people
    r = cat.get(f"/projects/{pid}/next")
    assert r.status_code == 200 and "Nothing left for you" in r.text  # both places are held
    assert ann.get(url_a).status_code == 200  # coming back gives the same open item
    ranks = {"rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "4"}
    for c, url in ((ann, url_a), (bob, url_b)):
        assert c.post(url, data={**ranks, "csrf": csrf_of(c.get("/tasks").text)}, follow_redirects=False).status_code == 303
    assert "Nothing left for you" in ann.get(f"/projects/{pid}/next").text
    assert "Nothing left for you" in cat.get(f"/projects/{pid}/next").text
    assert len(export(sessions, "r", "ranking", tmp_path)) == 2


def test_an_item_left_open_past_its_time_gets_no_label_past_the_overlap(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS[:1])  # one item, one answer wanted
    ann, bob = client_for(sessions, "ann"), client_for(sessions, "bob")
    url_a, page_a = open_task(ann, pid)
    with sessions.begin() as db:  # ann leaves it open past the time an assignment holds a place
        for assignment in db.scalars(P.select(P.Assignment)):
            assignment.started_at -= P.ASSIGNMENT_TTL * 2
    url_b, page_b = open_task(bob, pid)
    assert url_b == url_a  # the place went to bob
    ranks = {"rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "4"}
    assert bob.post(url_b, data={**ranks, "csrf": csrf_of(page_b.text)}, follow_redirects=False).status_code == 303
    r = ann.post(url_a, data={**ranks, "csrf": csrf_of(page_a.text)})
    assert r.status_code == 422 and "this item has its 1 answer(s) already" in r.text
    assert "Nothing left for you" in ann.get(f"/projects/{pid}/next").text
    assert [row.meta["annotator"] for row in export(sessions, "r", "ranking", tmp_path)] == ["bob"]


def test_one_overlap_gives_two_annotators_different_items(sessions, tmp_path):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    ann, bob = client_for(sessions, "ann"), client_for(sessions, "bob")
    url_a, _ = open_task(ann, pid)
    url_b, page_b = open_task(bob, pid)
    assert url_a != url_b
    # bob can neither open nor answer ann's item
    assert bob.get(url_a).status_code == 404
    r = bob.post(url_a, data={"csrf": csrf_of(page_b.text), "rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "4"})
    assert r.status_code == 404 and "not assigned to you" in r.text


def test_model_text_is_shown_escaped(sessions, tmp_path):
    rows = [{"prompt": "Say <b>hi</b>", "responses": ["<script>alert('x')</script>", "[link](javascript:alert(1)) <img src=x onerror=alert(1)>"]}]
    pid = make_project(sessions, tmp_path, "x", "rank", rows)
    c = client_for(sessions, "ann")
    _, page = open_task(c, pid)
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(" in page.text
    assert "<img" not in page.text and 'href="javascript:' not in page.text and "<b>hi</b>" not in page.text


@pytest.mark.parametrize("task_type", ["critique", "rank", "pair", "demonstration"])
def test_right_to_left_text_and_long_words_keep_their_direction_and_box_and_every_field_is_labelled(task_type, sessions, tmp_path):
    # an Arabic or Hebrew prompt or answer was laid out left to right; a 300-letter word ran past its box (and widened a
    # pair's column); the reason box had only a placeholder for a name
    rtl, long_word = "\u05de\u05d4 \u05e9\u05dc\u05d5\u05de\u05da?", "x" * 300
    rows = [{"id": "h", "prompt": rtl, "responses": [rtl + " " + long_word, "\u0645\u0631\u062d\u0628\u0627"]}]
    rows = [{"id": "h", "prompt": rtl, "response": long_word}] if task_type == "critique" else rows
    pid = make_project(sessions, tmp_path, "t", task_type, rows, guidelines="\u05db\u05dc\u05dc\u05d9\u05dd")
    _, page = open_task(client_for(sessions, "ann"), pid)
    tags = re.findall(r'<(?:div class="[^"]*\bmd\b[^"]*"|div id="diff"|textarea)[^>]*>', page.text)
    assert tags and all('dir="auto"' in tag for tag in tags), [t for t in tags if 'dir="auto"' not in t]
    for match in re.finditer(r'<(input|textarea|select)\b[^>]*>', page.text):  # a label, or a name for a screen reader
        tag, before = match.group(0), page.text[:match.start()]
        if 'type="hidden"' in tag:
            continue
        field_id = re.search(r'id="([^"]+)"', tag)
        named = "aria-label=" in tag or (field_id and f'for="{field_id.group(1)}"' in page.text)
        assert named or before.rfind("<label") > before.rfind("</label>"), tag  # or inside its label
    from redline.app.web import HERE

    css = (HERE / "static" / "app.css").read_text()
    assert re.search(r"^\.md, [^{]*\{ overflow-wrap: anywhere; \}", css, re.M)


# ----------------------------------------------------------------------------- admin


def upload(c, csrf, **fields):
    files = {}
    for key in ("prompts", "responses"):
        if key in fields:
            path = fields.pop(key)
            files[key] = (path.name, path.read_bytes(), "application/jsonl")
    return c.post("/admin/projects", data={"csrf": csrf, **fields}, files=files, follow_redirects=False)


def test_admin_creates_a_project_from_prompts_and_a_responses_file(sessions, tmp_path, jsonl):
    admin = client_for(sessions, "root")
    csrf = csrf_of(admin.get("/admin").text)
    prompts = jsonl([{"id": "a", "prompt": "First?"}, {"id": "b", "prompt": "Second?"}], "prompts.jsonl")
    responses = jsonl([{"id": "a", "prompt": "First?", "response": "one", "source": "gpt"},
                       {"id": "a", "prompt": "First?", "response": "uno", "source": "llama"},
                       {"prompt": "Second?", "response": "two", "source": "gpt"},
                       {"prompt": "Second?", "response": "dos", "source": "llama"}], "responses.jsonl")
    r = upload(admin, csrf, name="cmp", task_type="pair", overlap="2", guidelines="Be *fair*.", prompts=prompts, responses=responses)
    assert r.status_code == 303
    page = admin.get(r.headers["location"])
    assert "2 items" in page.text and "<em>fair</em>" in page.text and 'href="/admin/projects/1/export?kind=preference"' in page.text
    with sessions() as db:
        project = P.get_project(db, "cmp")
        items = db.scalars(P.select(P.Item).where(P.Item.project_id == project.id).order_by(P.Item.position)).all()
        assert project.overlap == 2 and [a["source"] for a in items[0].answers] == ["gpt", "llama"]
        assert [a["text"] for a in items[1].answers] == ["two", "dos"]


def test_a_bad_upload_is_refused_with_file_line_field_and_nothing_is_imported(sessions, tmp_path, jsonl):
    admin = client_for(sessions, "root")
    csrf = csrf_of(admin.get("/admin").text)
    prompts = jsonl([{"prompt": "ok", "response": "fine"}, {"response": "no prompt"}, "{not json", {"prompt": ""}], "bad.jsonl")
    r = upload(admin, csrf, name="bad", task_type="critique", prompts=prompts)
    assert r.status_code == 422
    assert "bad.jsonl:2: prompt: missing" in r.text and "bad.jsonl:3: &lt;line&gt;: not JSON" in r.text
    assert "bad.jsonl:4: prompt: empty string" in r.text
    good = jsonl([{"id": "a", "prompt": "Q?"}], "prompts.jsonl")
    stray = jsonl([{"id": "zz", "prompt": "Other?", "response": "x"}], "resp.jsonl")
    r = upload(admin, csrf, name="bad", task_type="critique", prompts=good, responses=stray)
    assert r.status_code == 422 and "resp.jsonl:1: prompt: matches no prompt" in r.text
    r = upload(admin, csrf, name="bad", task_type="rank", prompts=good)
    assert r.status_code == 422 and "prompts.jsonl:1: responses: 0 answer(s); ranking needs at least 2" in r.text
    r = upload(admin, csrf, name="has space", task_type="demonstration", prompts=good)
    assert r.status_code == 422 and "name:" in r.text
    for overlap in ("two", str(10**20)):  # past an Integer column too: a 422, not a 500 from the database
        r = upload(admin, csrf, name="ok", task_type="demonstration", overlap=overlap, prompts=good)
        assert r.status_code == 422 and "overlap:" in r.text
    # a file field sent as text (a hand-made request) is no file: a 422 naming it, not a 500
    r = admin.post("/admin/projects", data={"csrf": csrf, "name": "ok", "task_type": "demonstration", "prompts": "p.jsonl"})
    assert r.status_code == 422 and "prompts:" in r.text
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    r = admin.post(f"/admin/projects/{pid}/import", data={"csrf": csrf, "records": "r.jsonl"})
    assert r.status_code == 422 and "records:" in r.text
    with sessions() as db:
        assert db.scalar(P.select(P.func.count()).select_from(P.Project)) == 1  # "r", made above
        assert db.scalar(P.select(P.func.count()).select_from(P.Item)) == len(RANK_ROWS)  # nothing imported


def test_an_empty_answer_is_refused_by_line_and_field_not_left_out(tmp_path, jsonl):
    # ["a", "", "c"] became a ranking of two answers without a word (and a pair or critique lost its answer unsaid)
    prompts = jsonl([{"id": "q", "prompt": "Q?", "responses": ["a", " ", "c"]}, {"id": "p", "prompt": "P?", "chosen": "x", "rejected": ""}],
                    "prompts.jsonl")
    with pytest.raises(P.RecordError) as e:
        P.plan_items("rank", P.read_prompts(prompts), "prompts.jsonl")
    assert "prompts.jsonl:1: responses[1]: empty string" in str(e.value) and "prompts.jsonl:2: rejected: empty" in str(e.value)
    assert len(P.plan_items("demonstration", P.read_prompts(prompts))) == 2  # shows no answers: takes the prompts
    rows = P.read_prompts(jsonl([{"id": "q", "prompt": "Q?"}], "q.jsonl"))
    responses = jsonl([{"id": "q", "prompt": "Q?", "response": "fine"}, {"id": "q", "prompt": "Q?", "response": "\n"}], "r.jsonl")
    with pytest.raises(P.RecordError, match="r.jsonl:2: response: empty string .*: remove this line from the file"):
        P.attach_responses(rows, [responses])  # as `generate` writes a model that wrote nothing: not "leave it out"


def test_admin_adds_users_with_a_generated_password_shown_once(sessions):
    admin = client_for(sessions, "root")
    csrf = csrf_of(admin.get("/admin").text)
    r = admin.post("/admin/users", data={"csrf": csrf, "name": "dora", "role": "annotator"})
    assert r.status_code == 200 and "password (shown once): " in r.text
    password = r.text.split("password (shown once): ")[1].split("<")[0].strip()
    assert login(TestClient(make_app(sessions)), "dora", password).status_code == 303
    r = admin.post("/admin/users", data={"csrf": csrf, "name": "dora", "role": "annotator", "password": "another one"})
    assert r.status_code == 422 and "exists" in r.text
    r = admin.post("/admin/users", data={"csrf": csrf, "name": "ed", "role": "boss", "password": "long enough"})
    assert r.status_code == 422 and "role:" in r.text


def test_admin_export_downloads_jsonl_and_import_adds_existing_records(sessions, tmp_path, jsonl):
    pid = make_project(sessions, tmp_path, "r", "rank", RANK_ROWS[:1])
    admin = client_for(sessions, "root")
    r = admin.get(f"/admin/projects/{pid}/export?kind=ranking")  # nothing submitted: no empty file, as the CLI
    assert r.status_code == 409 and "has no submitted ranking annotations yet" in r.text
    c = client_for(sessions, "ann")
    url, page = open_task(c, pid)
    # a rank in digits int() does not read ("²" is a digit to str.isdigit) is a form error, not a server error; it names
    # the answer as the page numbers it (shown in the order [0, 1, 3, 2]: the file's answer 3 is the page's 3rd)
    assert P.shown_order(RANK_ROWS[0]["prompt"], 4) == [0, 1, 3, 2]
    r = c.post(url, data={"csrf": csrf_of(page.text), "rank_0": "1", "rank_1": "1", "rank_2": "2", "rank_3": "\u00b2"})
    assert r.status_code == 422 and "rank of answer 3 must be a whole number from 1 to 4" in r.text
    c.post(url, data={"csrf": csrf_of(page.text), "rank_0": "1", "rank_1": "1", "rank_2": "2", "rank_3": "3"})
    admin = client_for(sessions, "root")
    r = admin.get(f"/admin/projects/{pid}/export?kind=ranking")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    [row] = [json.loads(line) for line in r.text.splitlines()]
    assert row["ranks"] == [0, 0, 1, 2] and row["meta"]["annotator"] == "ann"
    assert admin.get(f"/admin/projects/{pid}/export?kind=feedback").status_code == 400
    records = jsonl([{"prompt": "Old?", "responses": ["x", "y", "z"], "ranks": [2, 0, 1], "meta": {"annotator": "carol", "seconds": 12}}],
                    "old.jsonl")
    csrf = csrf_of(admin.get(f"/admin/projects/{pid}").text)
    r = admin.post(f"/admin/projects/{pid}/import", data={"csrf": csrf}, files={"records": ("old.jsonl", records.read_bytes())})
    assert r.status_code == 200 and "imported 1 records" in r.text
    exported = export(sessions, "r", "ranking", tmp_path)
    assert [e.meta["annotator"] for e in exported] == ["ann", "carol"] and exported[1].meta["imported"] is True
    assert exported[1].ranks == [2, 0, 1] and exported[1].meta["seconds"] == 12
    # an imported ranking all tied has no best-vs-worst pair: left out of the preferences, not exported as chosen = rejected
    tied = jsonl([{"prompt": "Tied?", "responses": ["x", "y"], "ranks": [0, 0], "meta": {"annotator": "dan"}}], "tied.jsonl")
    r = admin.post(f"/admin/projects/{pid}/import", data={"csrf": csrf}, files={"records": ("tied.jsonl", tied.read_bytes())})
    assert r.status_code == 200
    assert [p.meta["annotator"] for p in export(sessions, "r", "preference", tmp_path)] == ["ann", "carol"]
    bad = jsonl([{"prompt": "x", "responses": ["a"], "ranks": [0]}], "badrank.jsonl")
    r = admin.post(f"/admin/projects/{pid}/import", data={"csrf": csrf}, files={"records": ("badrank.jsonl", bad.read_bytes())})
    assert r.status_code == 422 and "badrank.jsonl:1: responses: a ranking needs at least 2" in r.text
    # two people whose names become one user name: refused before anything is added, not merged into one annotator
    two = jsonl([{"prompt": f"Who {i}?", "id": f"w{i}", "responses": ["x", "y"], "ranks": [0, 1], "meta": {"annotator": name}}
                 for i, name in enumerate(["Ann B", "Ann-B"])], "two.jsonl")
    r = admin.post(f"/admin/projects/{pid}/import", data={"csrf": csrf}, files={"records": ("two.jsonl", two.read_bytes())})
    assert r.status_code == 422 and "two.jsonl:2: meta.annotator: 'Ann-B' and 'Ann B' both become the user name 'Ann-B'" in html.unescape(r.text)
    assert len(export(sessions, "r", "ranking", tmp_path)) == 3
    # ...nor across imports: the user Ann-B made from "Ann B" takes Ann B's later work, never another file's "Ann-B"
    def one(name, i, file):
        return jsonl([{"prompt": f"Whose {i}?", "responses": ["x", "y"], "ranks": [0, 1], "meta": {"annotator": name}}], file)

    def upload(file):
        return admin.post(f"/admin/projects/{pid}/import", data={"csrf": csrf}, files={"records": (file.name, file.read_bytes())})

    assert upload(one("Ann B", 1, "first.jsonl")).status_code == 200
    r = upload(one("Ann-B", 2, "second.jsonl"))
    assert r.status_code == 422, r.text
    assert ("second.jsonl:1: meta.annotator: 'Ann-B' becomes the user name 'Ann-B' (letters, digits, '.', '_' and '-', "
            "at most 80), an earlier import made from 'Ann B'") in html.unescape(r.text)
    r = upload(one("root", 3, "root.jsonl"))  # a user's own name is that user: an admin's imported work is the admin's
    assert r.status_code == 200, r.text
    assert upload(one("Ann B", 5, "third.jsonl")).status_code == 200
    assert [e.meta["annotator"] for e in export(sessions, "r", "ranking", tmp_path)][3:] == ["Ann-B", "root", "Ann-B"]


# ----------------------------------------------------------------------------- the database


def test_an_unreachable_database_and_a_newer_schema_are_one_clear_error(tmp_path):
    from sqlalchemy import text

    with pytest.raises(RedlineError, match="cannot open database sqlite:///.*no-such-dir"):
        open_database(f"sqlite:///{tmp_path}/no-such-dir/app.db")
    with pytest.raises(RedlineError, match="not usable"):
        open_database("nosuchdialect://x")
    not_a_db = tmp_path / "prompts.jsonl"  # --db pointed at the wrong file
    not_a_db.write_text('{"prompt": "x"}\n')
    with pytest.raises(RedlineError, match="cannot open database sqlite:///.*prompts.jsonl: file is not a database"):
        open_database(f"sqlite:///{not_a_db}")
    assert not_a_db.read_text() == '{"prompt": "x"}\n'
    url = f"sqlite:///{tmp_path / 'new.db'}"
    sessions = open_database(url)
    with sessions.begin() as db:
        db.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    with pytest.raises(RedlineError, match="schema revision ffff9999, newer than this redline"):
        open_database(url)


def test_sqlite_runs_in_wal_mode(sessions):
    from sqlalchemy import text

    with sessions() as db:
        assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"


# ----------------------------------------------------------------------------- the command line


def test_serving_prints_the_database_url_without_its_password(tmp_path, monkeypatch, capsys):
    import uvicorn

    from redline.app import commands
    from redline.cli import main

    served = []
    monkeypatch.setattr(commands, "_open", lambda args: open_database(f"sqlite:///{tmp_path / 'app.db'}"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    assert main(["app", "--db", "postgresql+psycopg://ann:s3cret-pw@db.example:5432/feedback", "--port", "8090"]) == 0
    out = capsys.readouterr().out
    assert served and "http://127.0.0.1:8090/" in out
    assert "s3cret-pw" not in out and "postgresql+psycopg://ann:***@db.example:5432/feedback" in out


def test_behind_a_trusted_proxy_each_client_has_its_own_login_limit(tmp_path, monkeypatch, capsys):
    """Behind a proxy on another machine every client shared its address, so one client's failed logins locked
    everyone out; --forwarded-allow-ips names the proxies whose X-Forwarded-For gives the client."""
    import uvicorn
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from redline.app import commands
    from redline.app.security import LoginLimiter
    from redline.cli import main

    cheap_hashing(monkeypatch)
    served = []
    monkeypatch.setattr(commands, "_open", lambda args: open_database(f"sqlite:///{tmp_path / 'app.db'}"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    assert main(["app", "--db", "x.db"]) == 0 and served[-1][1]["forwarded_allow_ips"] is None  # uvicorn's default
    assert main(["app", "--db", "x.db", "--forwarded-allow-ips", "10.0.0.5, 10.1.2.3/16"]) == 0
    app, kw = served[-1]
    assert kw["forwarded_allow_ips"] == ["10.0.0.5", "10.1.0.0/16"]
    make_users(app.state.sessions, ann="annotator")

    def ann_after_mallory(trusted) -> int:
        app.state.limiter = LoginLimiter(per_name=5, per_address=2)
        proxied = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # what uvicorn.run puts in front of the app
        via_proxy = {"client": ("10.1.9.9", 40000)}
        mallory = TestClient(proxied, headers={"X-Forwarded-For": "203.0.113.9"}, **via_proxy)
        for _ in range(2):
            assert login(mallory, "nobody", "wrong").status_code == 401
        assert login(mallory, "nobody", "wrong").status_code == 429
        return login(TestClient(proxied, headers={"X-Forwarded-For": "198.51.100.7"}, **via_proxy), "ann").status_code

    assert ann_after_mallory("127.0.0.1") == 429  # the proxy untrusted: everyone behind it shares mallory's limit
    assert ann_after_mallory(kw["forwarded_allow_ips"]) == 303
    capsys.readouterr()
    with pytest.raises(SystemExit):  # as argparse refuses any flag
        main(["app", "--db", "x.db", "--forwarded-allow-ips", "10.0.0.256"])
    assert "'10.0.0.256' is not an IP address, a network (10.0.0.0/8) or '*'" in capsys.readouterr().err


def test_cli_adds_a_user_creates_a_project_and_exports(tmp_path, jsonl, monkeypatch, capsys):
    import io

    from redline.cli import main

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["app", "user", "add", "ann", "--role", "annotator", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "added annotator ann" in out and "password (shown once): " in out
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine password\n"))
    assert main(["app", "--db", db, "user", "add", "root", "--role", "admin", "--password-stdin"]) == 0
    assert "shown once" not in capsys.readouterr().out
    prompts = jsonl(RANK_ROWS, "p.jsonl")
    guidelines = tmp_path / "g.md"
    guidelines.write_text("# Rank well")
    assert main(["app", "project", "create", "r", "--type", "rank", "--prompts", str(prompts), "--guidelines", str(guidelines),
                 "--overlap", "2", "--db", db]) == 0
    assert "3 items, overlap 2" in capsys.readouterr().out
    assert main(["app", "project", "create", "r", "--type", "rank", "--prompts", str(prompts), "--db", db]) == 2
    assert "a project named 'r' exists" in capsys.readouterr().err
    # guidelines that are not UTF-8 gave the codec's message alone, naming no file; a BOM is no part of the text
    (tmp_path / "latin.md").write_bytes("# Rank\nwell, caf\u00e9".encode("latin-1"))
    assert main(["app", "project", "create", "s", "--type", "rank", "--prompts", str(prompts), "--guidelines",
                 str(tmp_path / "latin.md"), "--db", db]) == 2
    assert f"{tmp_path / 'latin.md'}: line 2: the guidelines file is not UTF-8 text" in capsys.readouterr().err
    assert main(["app", "export", "--project", "r", "--kind", "ranking", str(tmp_path / "none.jsonl"), "--db", db]) == 2
    assert "nothing to export" in capsys.readouterr().err and not (tmp_path / "none.jsonl").exists()
    sessions = open_database(db)
    with sessions.begin() as session:
        user = P.get_user(session, "ann")
        project = P.get_project(session, "r")
        item = P.next_item(session, user, project)
        P.submit(session, user, project, item, {"rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "3"})
    out_file = tmp_path / "out.jsonl"
    assert main(["app", "export", "--project", "r", "--kind", "ranking", str(out_file), "--db", db]) == 0
    assert main(["data", "validate", str(out_file), "--kind", "ranking"]) == 0
    assert "1 valid ranking records" in capsys.readouterr().out
    assert main(["app", "export", "--project", "nope", "--kind", "ranking", str(out_file), "--db", db]) == 2
    assert "no project 'nope'" in capsys.readouterr().err


def element_text(page: str, tag: str, element_id: str) -> str:
    """What a browser reads from <tag id=...>: HTML drops one newline right after a <textarea> or <pre> start tag."""
    raw = re.search(rf'<{tag}[^>]*id="{element_id}"[^>]*>(.*?)</{tag}>', page, re.S).group(1)
    return html.unescape(raw.removeprefix("\n"))


def test_an_answer_that_starts_with_a_newline_keeps_it_in_the_form(sessions, tmp_path):
    answer = "\n  indented code\nand a line"
    pid = make_project(sessions, tmp_path, "nl", "critique", [{"id": "n1", "prompt": "Show code.", "response": answer}])
    _, page = open_task(client_for(sessions, "ann"), pid)
    # the revision box starts as the answer; the browser dropped its first newline, so an unchanged revision differed
    assert element_text(page.text, "textarea", "revision") == answer
    assert element_text(page.text, "pre", "answer-raw") == answer  # what "start from blank" puts back
    assert element_text(page.text, "textarea", "critique") == ""
