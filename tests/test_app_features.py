"""The feedback app's model features and the rest of slice 4: answers generated through redline's
engine, a critic's drafts, the quality page, gold items, the export API token, simulated bots,
migrating an older database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

pytest.importorskip("sqlalchemy")
pytest.importorskip("fastapi")

from app_helpers import (  # noqa: E402
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
from redline.app.db import Annotation, Item, open_database  # noqa: E402
from redline.app.web import make_app  # noqa: E402
from redline.generation import ScriptedEngine  # noqa: E402
from redline.records import read_records  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "simulated"


def head(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    cheap_hashing(monkeypatch)
    sessions = open_database(f"sqlite:///{tmp_path / 'app.db'}")
    make_users(sessions, root="admin", ann="annotator", bob="annotator")
    return sessions


def client_for(app, name):
    c = TestClient(app)
    assert login(c, name).status_code == 303
    return c


def scripted_loader(replies):
    loaded = []

    def load(model):
        loaded.append(model)
        if model == "broken":
            raise OSError("no such model folder: broken")
        return ScriptedEngine(replies)

    load.loaded = loaded
    return load


# ----------------------------------------------------------------------------- answers from a model


def test_admin_has_a_model_write_k_answers_per_prompt(sessions, jsonl):
    # the third reply of each prompt is empty: a rank project keeps the two others
    loader = scripted_loader(lambda prompt, seed: "" if seed % 1000 == 2 else f"answer with seed {seed}")
    app = make_app(sessions, engine_loader=loader)
    admin = client_for(app, "root")
    csrf = csrf_of(admin.get("/admin").text)
    prompts = jsonl([{"id": "a", "prompt": "First?", "response": "ignored"}, {"id": "b", "prompt": "Second?"}], "p.jsonl")
    r = admin.post("/admin/projects", data={"csrf": csrf, "name": "gen", "task_type": "rank", "generate": "my-model", "k": "3"},
                   files={"prompts": ("p.jsonl", prompts.read_bytes())}, follow_redirects=False)
    assert r.status_code == 303
    app.state.wait_jobs()
    page = admin.get(r.headers["location"]).text
    assert "status: ready" in page and "2 items from 2 prompts; answers by my-model" in page
    with sessions() as db:
        items = db.scalars(P.select(P.Item).order_by(P.Item.position)).all()
        assert [[a["text"] for a in it.answers] for it in items] == [["answer with seed 0", "answer with seed 1"],
                                                                     ["answer with seed 1000", "answer with seed 1001"]]
        assert {a["source"] for it in items for a in it.answers} == {"my-model"}
        assert P.get_project(db, "gen").generator == "my-model"
    assert loader.loaded == ["my-model"]


def test_generation_settings_are_checked_and_a_failed_model_is_reported(sessions, jsonl):
    app = make_app(sessions, engine_loader=scripted_loader(["x"]))
    admin = client_for(app, "root")
    csrf = csrf_of(admin.get("/admin").text)
    prompts = jsonl([{"prompt": "Q?"}], "p.jsonl")

    def create(**fields):
        return admin.post("/admin/projects", data={"csrf": csrf, **fields}, files={"prompts": ("p.jsonl", prompts.read_bytes())},
                          follow_redirects=False)

    r = create(name="a", task_type="pair", generate="m", k="1")
    assert r.status_code == 422 and "k: a pair project needs at least 2 answers" in r.text
    r = create(name="a", task_type="demonstration", generate="m")
    assert r.status_code == 422 and "generate: a demonstration project shows no answers" in r.text
    r = create(name="a", task_type="rank", generate="m", temperature="hot")
    assert r.status_code == 422 and "temperature: expected a number" in r.text
    for bad in ("nan", "inf"):  # nan failed once the model had loaded; inf was taken
        r = create(name="a", task_type="rank", generate="m", temperature=bad)
        assert r.status_code == 422 and f"temperature: must be a finite number &gt;= 0.0, got &#39;{bad}&#39;" in r.text
    r = create(name="b", task_type="critique", generate="broken")
    assert r.status_code == 303
    app.state.wait_jobs()
    page = admin.get(r.headers["location"]).text
    assert "status: failed" in page and "no such model folder: broken" in page
    with sessions() as db:
        assert P.progress(db, P.get_project(db, "b"))["items"] == 0


def test_cli_generates_answers_with_the_tiny_random_model(tmp_path, jsonl, capsys):
    from redline.cli import main

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    prompts = jsonl([{"prompt": "Write a haiku about rain."}, {"prompt": "Name a colour."}], "p.jsonl")
    assert main(["app", "project", "create", "gen", "--type", "pair", "--prompts", str(prompts), "--generate", "tiny-random",
                 "--max-new-tokens", "8", "--db", db]) == 0
    out = capsys.readouterr()
    sessions = open_database(db)
    with sessions() as session:
        items = session.scalars(P.select(P.Item)).all()
    n_notes = out.err.count("left out:")
    assert len(items) == 2 - n_notes and f"{len(items)} items" in out.out
    assert all(len(it.answers) == 2 and {a["source"] for a in it.answers} == {"tiny-random"} for it in items)


def test_cli_refuses_k_0_rather_than_reading_it_as_the_default(tmp_path, jsonl, capsys):
    from redline.cli import main

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    prompts = jsonl([{"prompt": "Name a colour."}], "p.jsonl")
    # refused before any model loads (0 was falsy, so it became the default 4 and the project was made)
    assert main(["app", "project", "create", "gen", "--type", "rank", "--prompts", str(prompts), "--generate", "no-such-model",
                 "--k", "0", "--db", db]) == 2
    assert "k: must be a finite number >= 1, got '0'" in capsys.readouterr().err


def test_project_create_takes_a_seed_in_every_commands_range(sessions, tmp_path, jsonl, capsys):
    """--seed (and the admin form's seed) took 0..2**64 - 1 and more, where every other command takes 0..2**32 - 1;
    past 2**64 - 1 it failed once the model had loaded."""
    from redline.cli import main
    from redline.config import SEED_MAX

    prompts = jsonl([{"prompt": "Name a colour."}], "p.jsonl")
    create = ["app", "project", "create", "gen", "--type", "rank", "--prompts", str(prompts), "--generate",
              "no-such-model", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "--seed"]
    with pytest.raises(SystemExit):
        main([*create, str(SEED_MAX + 1)])
    assert f"argument --seed: must be from 0 to {SEED_MAX}, got {SEED_MAX + 1}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["app", "simulate", "--project", "p", "--seed", str(SEED_MAX + 1)])  # the same words as the other --seed
    assert f"argument --seed: must be from 0 to {SEED_MAX}, got {SEED_MAX + 1}" in capsys.readouterr().err
    assert P.generation_settings({"seed": str(SEED_MAX)}, "rank")["seed"] == SEED_MAX
    with pytest.raises(P.FormError, match=f"must be from 0 to {SEED_MAX}, got '{2**64}'"):
        P.generation_settings({"seed": str(2**64)}, "rank")
    app = make_app(sessions, engine_loader=scripted_loader(["x"]))
    admin = client_for(app, "root")
    r = admin.post("/admin/projects", data={"csrf": csrf_of(admin.get("/admin").text), "name": "a", "task_type": "rank",
                                            "generate": "m", "seed": str(SEED_MAX + 1)},
                   files={"prompts": ("p.jsonl", prompts.read_bytes())}, follow_redirects=False)
    assert r.status_code == 422 and f"seed: must be from 0 to {SEED_MAX}" in r.text


def test_project_create_refuses_a_bad_overlap_before_a_model_writes_the_answers(tmp_path, jsonl, capsys):
    from redline.app.db import INTEGER_MAX
    from redline.cli import main

    prompts = jsonl([{"prompt": "Name a colour."}], "p.jsonl")
    for overlap in ("0", str(INTEGER_MAX + 1)):  # refused by create_project, once the model had written every answer
        with pytest.raises(SystemExit):
            main(["app", "project", "create", "gen", "--type", "rank", "--prompts", str(prompts), "--generate",
                  "no-such-model", "--overlap", overlap, "--db", f"sqlite:///{tmp_path / 'cli.db'}"])
        assert f"argument --overlap: must be from 1 to {INTEGER_MAX}, got {overlap}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- drafts from a critic


def test_a_critics_drafts_prefill_the_form_and_the_export_records_their_use(sessions, tmp_path):
    rows = [{"id": f"c{i}", "prompt": f"Describe {i}.", "response": f"It is thing {i}."} for i in range(2)]
    make_project(sessions, tmp_path, "crit", "critique", rows)
    reply = "Critique: The answer is too short.\n\nRevision:\nIt is thing, and a fine one."
    seen = []

    def critic(prompt, seed):  # while the critic writes, the app's database is open to everyone else
        with sessions.begin() as db:  # (every SQLite transaction takes the write lock: it would wait 30 s, then fail)
            seen.append(db.scalar(select(func.count()).select_from(Item).where(Item.draft.is_not(None))))
        return reply

    app = make_app(sessions, engine_loader=scripted_loader(critic))
    admin = client_for(app, "root")
    csrf = csrf_of(admin.get("/admin/projects/1").text)
    r = admin.post("/admin/projects/1/drafts", data={"csrf": csrf, "critic": "runs/critic"}, follow_redirects=False)
    assert r.status_code == 303
    app.state.wait_jobs()
    page = admin.get("/admin/projects/1").text
    assert "2 of 2 items have a draft by <code>runs/critic</code>" in page and "2 with a revision" in page
    assert seen == [0, 0]  # the drafts are written together once the critic is done
    assert admin.post("/admin/projects/1/drafts", data={"csrf": csrf, "critic": ""}).status_code == 422

    ann = client_for(app, "ann")
    url = ann.get("/projects/1/next", follow_redirects=False).headers["location"]
    task = ann.get(url).text
    assert "The answer is too short.</textarea>" in task and "It is thing, and a fine one.</textarea>" in task
    assert 'id="draft_used" value="1"' in task
    csrf = csrf_of(task)
    ann.post(url, data={"csrf": csrf, "critique": "The answer is far too short.", "revision": "It is thing, and a fine one.",
                        "draft_used": "1"})
    url = ann.get("/projects/1/next", follow_redirects=False).headers["location"]
    ann.post(url, data={"csrf": csrf, "critique": "Vague.", "revision": "It is thing 1, round and red.", "draft_used": "0"})
    with sessions() as db:
        records = P.export_records(db, P.get_project(db, "crit"), "feedback")
    first, second = (r.meta for r in records)
    assert first["draft_used"] is True and first["draft_model"] == "runs/critic"
    assert first["draft_edit_distance"] == {"critique": 1, "revision": 0}
    assert second["draft_used"] is False and second["draft_edit_distance"]["revision"] == 5
    page = admin.get("/admin/projects/1").text
    assert "Drafts offered 2, kept 1" in page


def test_drafts_are_refused_for_a_project_that_is_not_ready(sessions, tmp_path):
    """The drafts job ends by marking its project ready: a failed project, one still generating its answers, or one
    whose drafts are being written must not be marked ready by it (a failed one then showed as ready, with no items)."""
    make_project(sessions, tmp_path, "crit", "critique", [{"prompt": "Describe it.", "response": "It is red."}])
    app = make_app(sessions, engine_loader=scripted_loader(["Critique: short.\n\nRevision:\nIt is red and round."]))
    admin = client_for(app, "root")
    csrf = csrf_of(admin.get("/admin/projects/1").text)
    for status in ("failed", "generating", "drafting"):
        with sessions.begin() as db:
            P.get_project(db, "crit").status = status
        r = admin.post("/admin/projects/1/drafts", data={"csrf": csrf, "critic": "runs/critic"}, follow_redirects=False)
        assert r.status_code == 409 and f"the project is {status}" in r.text
        app.state.wait_jobs()
        with sessions() as db:
            assert P.get_project(db, "crit").status == status
            assert db.scalar(select(func.count()).select_from(Item).where(Item.draft.is_not(None))) == 0


# ----------------------------------------------------------------------------- the export API


def test_the_export_endpoint_needs_an_admins_api_token(sessions, tmp_path):
    make_project(sessions, tmp_path, "r", "rank", RANK_ROWS[:1])
    with sessions.begin() as db:
        user, project = P.get_user(db, "ann"), P.get_project(db, "r")
        P.submit(db, user, project, P.next_item(db, user, project), {"rank_0": "1", "rank_1": "2", "rank_2": "3", "rank_3": "4"})
        with pytest.raises(RedlineError, match="not an admin"):
            P.new_api_token(db, user)
    app = make_app(sessions)
    admin = client_for(app, "root")
    r = admin.post("/admin/token", data={"csrf": csrf_of(admin.get("/admin").text)})
    token = r.text.split("(shown once): ")[1].split("<")[0].strip()
    anon = TestClient(app)
    assert anon.get("/api/projects/r/export?kind=ranking").status_code == 401
    assert anon.get("/api/projects/r/export?kind=ranking", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = anon.get("/api/projects/r/export?kind=ranking", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    [row] = [json.loads(line) for line in r.text.splitlines()]
    assert row["ranks"] == [0, 1, 2, 3] and row["meta"]["annotator"] == "ann"
    assert anon.get("/api/projects/nope/export?kind=ranking", headers={"Authorization": f"Bearer {token}"}).status_code == 404
    assert anon.get("/api/projects/r/export?kind=feedback", headers={"Authorization": f"Bearer {token}"}).status_code == 400
    admin.post("/admin/token", data={"csrf": csrf_of(admin.get("/admin").text)})  # a new token replaces the old
    assert anon.get("/api/projects/r/export?kind=ranking", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# ----------------------------------------------------------------------------- gold items and quality


def test_gold_items_go_to_everyone_and_score_each_annotator(sessions, tmp_path, jsonl):
    rows = [{"prompt": "Gold?", "responses": ["best", "middle", "worst"], "ranks": [0, 1, 2], "meta": {"gold": True}},
            {"prompt": "Open?", "responses": ["x", "y"]}]
    pid = make_project(sessions, tmp_path, "g", "rank", rows, overlap=1)
    app = make_app(sessions)
    for name, ranks in (("ann", {"rank_0": "1", "rank_1": "2", "rank_2": "3"}), ("bob", {"rank_0": "2", "rank_1": "1", "rank_2": "3"})):
        c = client_for(app, name)
        url = c.get(f"/projects/{pid}/next", follow_redirects=False).headers["location"]
        assert url.endswith("/items/1")  # the gold item, for both despite overlap 1
        c.post(url, data={"csrf": csrf_of(c.get(url).text), **ranks})
    admin = client_for(app, "root")
    page = admin.get(f"/admin/projects/{pid}").text
    assert "1 gold item(s)" in page and "100.0%" in page and "66.7%" in page
    assert "Pairwise agreement: 66.7%\nover 3 answer pairs" in page
    with sessions() as db:
        assert all(r.meta["gold"] for r in P.export_records(db, P.get_project(db, "g"), "ranking"))
    bad = jsonl([{"prompt": "Q", "response": "a", "meta": {"gold": True}}], "bad.jsonl")
    with pytest.raises(P.RecordError, match="bad.jsonl:1: meta.gold: a gold item needs its answer"):
        P.read_prompts(bad)
    pairs = jsonl([{"prompt": "Q", "chosen": "good", "rejected": "bad", "meta": {"gold": True}}], "gold.jsonl")
    [item] = P.plan_items("pair", P.read_prompts(pairs))
    chosen_letter = item["gold"]["choice"]
    assert item["answers"]["ab".index(chosen_letter)]["text"] == "good"
    with pytest.raises(P.RecordError, match="meta.gold: a critique project takes no gold items"):
        P.plan_items("critique", P.read_prompts(pairs))
    # a responses file that adds an answer to a gold item: its known answer would no longer cover what it shows
    for kind, path in (("rank", jsonl(rows[:1], "gold_rank.jsonl")), ("pair", pairs)):
        gold_rows = P.read_prompts(path)
        P.attach_responses(gold_rows, [jsonl([{"prompt": gold_rows[0].prompt, "response": "another"}], "more.jsonl")])
        with pytest.raises(P.RecordError, match=r":1: meta.gold: .* covers its own \d answers, and it has \d"):
            P.plan_items(kind, gold_rows)


def test_an_import_without_a_time_is_stored_and_read_as_untimed(sessions, tmp_path, jsonl):
    """An imported record without meta.seconds has no known time: stored as None (0.0 would read as instant),
    exported without meta.seconds as it came in, and a dash on the quality page and the annotator's own page."""
    pid = make_project(sessions, tmp_path, "p", "pair", [{"prompt": "Q?", "responses": ["x", "y"]}])
    records = jsonl([{"prompt": "Old?", "chosen": "good", "rejected": "bad", "meta": {"annotator": "ann"}},
                     {"prompt": "Timed?", "chosen": "good", "rejected": "bad", "meta": {"annotator": "bob", "seconds": 7}}],
                    "old.jsonl")
    with sessions.begin() as db:
        assert P.import_records(db, P.get_project(db, "p"), records) == 2
    with sessions() as db:
        assert [a.seconds for a in db.scalars(select(Annotation).order_by(Annotation.id))] == [None, 7.0]
        untimed, timed = P.export_records(db, P.get_project(db, "p"), "preference")
    assert "seconds" not in untimed.meta and timed.meta["seconds"] == 7
    app = make_app(sessions)
    page = client_for(app, "root").get(f"/admin/projects/{pid}").text
    assert "<td>ann</td><td>1</td><td>0</td><td>0</td><td>–</td>\n<td>–</td>" in page
    assert "<td>bob</td><td>1</td><td>0</td><td>0</td><td>7.0</td>\n<td>7.0</td>" in page
    assert "<td>submitted</td><td>–</td>" in client_for(app, "ann").get("/mywork").text


@pytest.mark.parametrize("meta, field, reason", [
    ({"seconds": True}, "meta.seconds", "got True"),  # was stored as 1 s
    ({"seconds": "12"}, "meta.seconds", "got '12'"),  # was stored as untimed
    ({"seconds": -3}, "meta.seconds", "got -3"),  # was a time of the quality page
    ({"seconds": 10**400}, "meta.seconds", "got 1000"),  # no float holds it: float() raised OverflowError, a traceback
    ({"annotator": True}, "meta.annotator", "got bool"),  # was the user 'True'
    ({"annotator": ["ann"]}, "meta.annotator", "got list"),  # was add_user's refusal of '--ann--', naming no line
    ({"annotator": "!!!"}, "meta.annotator", "which must start with a letter or digit"),  # add_user's, naming no line
])
def test_an_imported_records_annotator_and_time_are_checked_by_line(meta, field, reason, sessions, tmp_path, jsonl):
    make_project(sessions, tmp_path, "p", "pair", [{"prompt": "Q?", "responses": ["x", "y"]}])
    records = jsonl([{"prompt": "A?", "chosen": "good", "rejected": "bad", "meta": {"annotator": 17, "seconds": 0}},
                     {"prompt": "B?", "chosen": "good", "rejected": "bad", "meta": meta}], "old.jsonl")
    with sessions.begin() as db, pytest.raises(P.RecordError) as e:
        P.import_records(db, P.get_project(db, "p"), records)
    assert str(e.value).startswith(f"{records}:2: {field}: ") and reason in str(e.value)
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Annotation)) == 0
    records.write_text(records.read_text().splitlines()[0] + "\n")  # an id given as a number is a name
    with sessions.begin() as db:
        assert P.import_records(db, P.get_project(db, "p"), records) == 1
    with sessions() as db:
        assert db.execute(select(P.User.name, Annotation.seconds).join(P.User, P.User.id == Annotation.user_id)).all() == \
            [("17", 0.0)]


def test_a_critique_only_record_given_to_import_is_named_by_line(sessions, tmp_path, jsonl):
    make_project(sessions, tmp_path, "c", "critique", [{"prompt": "Q?", "response": "x"}])
    records = jsonl([{"prompt": "A?", "response": "r", "critique": "c", "revision": "v"},
                     {"prompt": "B?", "response": "r", "critique": "c", "revision": None}], "fb.jsonl")
    with sessions.begin() as db, pytest.raises(P.RecordError) as e:  # it said "id None" for a record without one
        P.import_records(db, P.get_project(db, "c"), records)
    assert str(e.value) == f"{records}:2: revision: a critique-only record has no revision to import"


LONG = "x" * (P.EXTERNAL_ID_MAX + 1)


@pytest.mark.parametrize("row, field, reason", [
    ({"id": LONG}, "id", f"{P.EXTERNAL_ID_MAX + 1} characters long, more than the {P.EXTERNAL_ID_MAX}"),
    ({"id": "a\x00b"}, "id", "holds a NUL character (U+0000, character 2)"),
    ({"meta": {"annotator": "A" * (P.IMPORTED_AS_MAX + 1)}}, "meta.annotator", "characters long, more than the 200"),
    ({"meta": {"annotator": "Ann\x00"}}, "meta.annotator", "holds a NUL character"),
])
def test_what_postgresql_cannot_store_is_refused_by_line_on_every_database(row, field, reason, sessions, tmp_path, jsonl):
    # PostgreSQL refused these at the insert (a String(200) column, a text with U+0000): a DataError traceback, a 500
    make_project(sessions, tmp_path, "c", "critique", [{"prompt": "Q?", "response": "x"}])
    records = jsonl([{"prompt": "A?", "response": "r", "critique": "c", "revision": "v"},
                     {"prompt": "B?", "response": "r", "critique": "c", "revision": "v", **row}], "fb.jsonl")
    with sessions.begin() as db, pytest.raises(P.RecordError) as e:
        P.import_records(db, P.get_project(db, "c"), records)
    assert str(e.value).startswith(f"{records}:2: {field}: ") and reason in str(e.value)
    if field == "id":  # a project's prompts file too
        with pytest.raises(P.RecordError, match=rf"fb.jsonl:2: id: .*{re.escape(reason)}"):
            P.read_prompts(records)
    with sessions.begin() as db, pytest.raises(P.FormError, match=r"guidelines: the guidelines holds a NUL character"):
        P.create_project(db, "g", "critique", [], guidelines="U\x00s\x00e\x00")  # UTF-16 read as UTF-8
    with sessions.begin() as db:
        user, project = P.get_user(db, "ann"), P.get_project(db, "c")
        with pytest.raises(P.FormError, match="reason: the reason holds a NUL character"):
            P.submit(db, user, project, P.next_item(db, user, project), {"action": "skip", "reason": "odd\x00"})


def test_guidelines_saved_as_utf16_are_refused_naming_the_file(tmp_path, jsonl, capsys):
    from redline.cli import main

    guidelines = tmp_path / "g.md"
    guidelines.write_bytes("Rank well".encode("utf-16-le"))  # no BOM: UTF-8 reads it, a NUL after each letter
    prompts = jsonl([{"prompt": "Q?", "response": "x"}], "p.jsonl")
    assert main(["app", "project", "create", "c", "--type", "critique", "--prompts", str(prompts), "--guidelines",
                 str(guidelines), "--db", f"sqlite:///{tmp_path / 'cli.db'}"]) == 2
    assert f"{guidelines}: the guidelines file holds a NUL character (U+0000, character 2)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- simulated annotators as bots


def test_noise_free_bots_agree_perfectly_and_noisy_ones_do_not(sessions, tmp_path):
    from redline.app.bots import simulate
    from redline.app.quality import project_quality

    rows = head(DATA / "rankings.jsonl", 8)
    make_project(sessions, tmp_path, "calm", "rank", rows, overlap=3)
    make_project(sessions, tmp_path, "noisy", "rank", rows, overlap=3)
    assert simulate(sessions, "calm", annotators=3, noise_scale=0)["submitted"] <= 24
    simulate(sessions, "noisy", annotators=3, noise_scale=3.0, seed=1)

    def quality(name):
        with sessions() as db:
            project = P.get_project(db, name)
            rows = db.execute(P.select(P.Annotation, P.Item, P.User.name).join(P.Item, P.Item.id == P.Annotation.item_id)
                              .join(P.User, P.User.id == P.Annotation.user_id).where(P.Item.project_id == project.id)).all()
            return project_quality(rows, "rank"), P.progress(db, project)

    calm, progress = quality("calm")
    assert calm["agreement"]["pairwise_agreement"] == 1.0 and calm["agreement"]["krippendorff_alpha"] == 1.0
    assert progress["submitted"] + progress["skipped"] == 24 and set(calm["annotators"]) == {f"sim-annotator-{i}" for i in (1, 2, 3)}
    noisy, _ = quality("noisy")
    assert noisy["agreement"]["pairwise_agreement"] < 1.0 and noisy["agreement"]["krippendorff_alpha"] < 1.0


def test_bots_critique_and_compare_through_the_cli_and_the_export_validates(sessions, tmp_path, capsys):
    from redline.cli import main

    db = str(sessions.kw["bind"].url)
    make_project(sessions, tmp_path, "crit", "critique", head(DATA / "test.jsonl", 3))
    make_project(sessions, tmp_path, "pairs", "pair", head(DATA / "preferences.jsonl", 4), overlap=2)
    assert main(["app", "simulate", "--project", "crit", "--annotators", "2", "--db", db]) == 0
    assert "the bots submitted 3" in capsys.readouterr().out
    assert main(["app", "simulate", "--project", "pairs", "--annotators", "2", "--noise-scale", "0", "--db", db]) == 0
    out = capsys.readouterr().out
    submitted, skipped = map(int, re.search(r"submitted (\d+) and skipped (\d+)", out).groups())
    assert submitted + skipped == 8  # noise-free bots skip only true ties
    agreement = json.loads(out.splitlines()[1])
    assert agreement["agreement"] in (None, 1.0) and agreement["kappa"] in (None, 1.0)
    out_file = tmp_path / "feedback.jsonl"
    assert main(["app", "export", "--project", "crit", "--kind", "feedback", str(out_file), "--db", db]) == 0
    records = read_records(out_file, "feedback")
    assert len(records) == 3 and {r.meta["annotator"] for r in records} == {"sim-annotator-1", "sim-annotator-2"}
    make_project(sessions, tmp_path, "plain", "rank", RANK_ROWS)
    assert main(["app", "simulate", "--project", "plain", "--db", db]) == 2
    assert "carries no meta.instructions" in capsys.readouterr().err


# ----------------------------------------------------------------------------- migrations


def test_an_older_database_is_migrated_and_keeps_its_data(tmp_path):
    from sqlalchemy import text

    from redline.app.db import database_revision, make_engine, schema_heads, upgrade_to

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_to(url, "0001")
    engine = make_engine(url)
    assert database_revision(engine) == "0001"
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, role, password_hash, created_at) VALUES ('old', 'admin', NULL, '2025-01-01')"))
    sessions = open_database(url)
    assert database_revision(make_engine(url)) in schema_heads()[1]
    with sessions.begin() as db:
        user = P.get_user(db, "old")
        assert user.api_token_hash is None and user.imported_as is None
        assert P.new_api_token(db, user)


def test_imports_that_stored_an_unknown_time_as_0_are_migrated_to_untimed(tmp_path):
    from sqlalchemy.orm import sessionmaker

    from redline.app.db import make_engine, upgrade_to

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_to(url, "0003")
    with sessionmaker(make_engine(url)).begin() as db:  # as revision 0003 left them: an import without a time held 0.0
        project = P.create_project(db, "p", "pair", [{"prompt": f"Q{i}?", "answers": [{"text": "x"}, {"text": "y"}]}
                                                     for i in range(3)])
        user = P.add_user(db, "carol", "annotator", None)
        items = db.scalars(select(Item).where(Item.project_id == project.id).order_by(Item.position)).all()
        for item, seconds, imported in zip(items, (0.0, 12.0, 0.0), (True, True, False)):
            db.add(Annotation(item_id=item.id, user_id=user.id, status="submitted", payload={"choice": "a"}, info={},
                              reason="", seconds=seconds, imported=imported, created_at=P.now()))
    sessions = open_database(url)
    with sessions() as db:  # a person's time is measured, whatever it is; an import's 0.0 was "unknown"
        assert [a.seconds for a in db.scalars(select(Annotation).order_by(Annotation.id))] == [None, 12.0, 0.0]


def test_the_migrations_make_the_schema_the_models_describe(tmp_path):
    """A column added to a model without its migration (or the other way round) is caught here, not by a user."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from redline.app.db import Base, make_engine, upgrade_to

    url = f"sqlite:///{tmp_path / 'head.db'}"
    upgrade_to(url, "head")
    with make_engine(url).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_job_left_unfinished_by_a_stopped_server_is_marked(sessions, tmp_path):
    make_project(sessions, tmp_path, "r", "rank", RANK_ROWS)
    with sessions.begin() as db:
        P.create_project(db, "gen", "rank", [], status="generating")
        P.get_project(db, "r").status = "drafting"
    with sessions.begin() as db:
        assert P.recover_unfinished(db) == 2
    with sessions() as db:
        gen, r = P.get_project(db, "gen"), P.get_project(db, "r")
        assert (gen.status, r.status) == ("failed", "ready") and "create the project again" in gen.status_detail
        assert P.recover_unfinished(db) == 0


@pytest.mark.slow
def test_the_embedded_model_writes_a_projects_answers(tmp_path, jsonl, capsys):
    from redline.cli import main

    db = f"sqlite:///{tmp_path / 'embedded.db'}"
    prompts = jsonl(head(DATA / "test.jsonl", 2), "p.jsonl")
    assert main(["app", "project", "create", "emb", "--type", "rank", "--prompts", str(prompts), "--generate", "embedded",
                 "--k", "2", "--max-new-tokens", "24", "--db", db]) == 0
    with open_database(db)() as session:
        items = session.scalars(P.select(P.Item)).all()
    assert len(items) == 2 and all(len(it.answers) == 2 and it.answers[0]["text"] != it.answers[1]["text"] for it in items)


def test_cli_imports_lists_tokens_and_drafts_with_a_model(sessions, tmp_path, jsonl, capsys, monkeypatch):
    from redline.cli import main

    db = str(sessions.kw["bind"].url)
    make_project(sessions, tmp_path, "crit", "critique", [{"prompt": "Describe rain.", "response": "Rain is wet."}])
    old = jsonl([{"prompt": "Q?", "response": "A.", "critique": "Too short.", "revision": "A, at length.",
                  "meta": {"annotator": "carol"}}], "old.jsonl")
    assert main(["app", "import", "--project", "crit", str(old), "--db", db]) == 0
    assert "imported 1 records into crit" in capsys.readouterr().out
    assert main(["app", "project", "list", "--db", db]) == 0
    assert "crit\tcritique\tready\titems 2\tsubmitted 1" in capsys.readouterr().out
    assert main(["app", "user", "token", "root", "--db", db]) == 0
    token = capsys.readouterr().out.split("(shown once): ")[1].strip()
    with sessions() as session:
        assert P.user_for_token(session, token).name == "root"
    assert main(["app", "user", "token", "ann", "--db", db]) == 2
    assert "not an admin" in capsys.readouterr().err
    # a random model writes no "Revision:" part: its drafts keep a critique and no revision
    assert main(["app", "drafts", "--project", "crit", "--critic", "tiny-random", "--max-new-tokens", "8", "--db", db]) == 0
    assert "drafts for 2 items of crit" in capsys.readouterr().out
    with sessions() as session:
        drafts = [item.draft for item in session.scalars(P.select(P.Item).order_by(P.Item.position))]
        assert all(d["model"] == "tiny-random" and "critique" in d for d in drafts)
        assert P.get_project(session, "crit").critic == "tiny-random"
    assert main(["app", "drafts", "--project", "nope", "--critic", "tiny-random", "--db", db]) == 2
    make_project(sessions, tmp_path, "ranked", "rank", RANK_ROWS)
    loaded = []
    monkeypatch.setattr("redline.generation.load_engine", lambda *a, **k: loaded.append(a) or 1 / 0)
    assert main(["app", "drafts", "--project", "ranked", "--critic", "runs/critic", "--db", db]) == 2
    assert "drafts are for critique projects" in capsys.readouterr().err and loaded == []  # said before a model loads


def test_a_pair_is_shown_in_an_order_the_file_does_not_set(jsonl):
    """Two models' answers listed model-A-first everywhere: each side of the screen gets both models, and each item
    the same way every time (the choice is stored against the answers as shown, so the export names the one picked)."""
    rows = jsonl([{"id": f"q{i}", "prompt": f"Question {i}?", "responses": [f"A says {i}", f"B says {i}"]}
                  for i in range(40)], "two_models.jsonl")
    items = P.plan_items("pair", P.read_prompts(rows))
    a_first = sum(item["answers"][0]["text"].startswith("A") for item in items)
    assert 10 <= a_first <= 30, a_first  # a fair coin per prompt: 40 draws
    assert all(sorted(a["text"][0] for a in item["answers"]) == ["A", "B"] for item in items)
    assert P.plan_items("pair", P.read_prompts(rows)) == items  # fixed, not drawn anew


@pytest.mark.parametrize("flags, message", [
    (["--k", "3"], "--k only set how --generate writes answers"),
    (["--temperature", "0.2", "--seed", "4"], "--temperature, --seed only set how --generate writes answers"),
    (["--generate", "no-such-model", "--responses", "r.jsonl"], "--responses and --generate both give the answers"),
])
def test_cli_refuses_generation_flags_it_would_ignore(tmp_path, jsonl, capsys, flags, message):
    from redline.cli import main

    db = tmp_path / "cli.db"
    prompts = jsonl([{"prompt": "Name a colour.", "responses": ["Red.", "Blue."]}], "p.jsonl")
    # they were ignored: the project was made from the file's answers, or --generate's, and nothing said so
    assert main(["app", "project", "create", "p", "--type", "rank", "--prompts", str(prompts), *flags,
                 "--db", f"sqlite:///{db}"]) == 2
    assert message in capsys.readouterr().err
    assert not db.exists()


def test_project_create_help_states_the_defaults_generation_settings_applies():
    """The CLI's help writes the --generate defaults out itself (the command module stays light, without SQLAlchemy):
    each must be the one ``generation_settings`` applies when the flag is left out."""
    from redline.app.commands import GENERATE_FLAGS

    applied = P.generation_settings({}, "rank")
    assert {flag[2:].replace("-", "_"): default for flag, _, default in GENERATE_FLAGS} == \
        {name: value for name, value in applied.items() if name != "k"}
