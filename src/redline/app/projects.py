"""What the feedback app does, without HTTP: users, projects, assignment, submissions, export, import.

The web pages (``web.py``), the ``redline app`` commands and the simulated annotators all call
these functions with an SQLAlchemy session; none of them commits, so the caller decides what one
transaction holds (a project and all its items are one: nothing is half-imported).

Task types and what one annotation holds:

==============  =======================================  ====================================
task type       the annotator sees                       exported record (``--kind``)
==============  =======================================  ====================================
critique        a prompt and one answer                  feedback (critique + revision)
rank            a prompt and K >= 2 answers              ranking (ties allowed); preference
                                                         (best vs worst, when not tied)
demonstration   a prompt                                 demonstration
pair            a prompt and two answers                 preference (chosen, rejected)
==============  =======================================  ====================================

Items come from a prompts file (records of any kind with a ``prompt``). Their answers come from the
prompt records themselves (``response``, ``responses``, ``chosen``/``rejected``), from response
files (matched by ``id``, else by prompt; ``source`` kept), or from a model (``generate_answers``).
A critique project makes one item per answer; a pair project pairs a prompt's answers in order
(1st with 2nd, 3rd with 4th, an odd last one with the 1st), each pair shown in an order fixed by a
hash of its prompt (so a file that lists one model first reaches neither side of the screen); a rank
project ranks all of a prompt's answers at once, shown in an order fixed the same way (``shown_order``)
while the item, its form fields (``rank_i``), gold ranks, imports and exports keep the file's order.

Assignment (``next_item``) gives an annotator their open item if they have one, else the first
item they have not answered whose submitted answers plus open assignments to others are fewer than
the project's overlap. An annotator answers an item at most once (a unique key): a second,
repeated submission is recognised and stored nowhere, and another answer sent for it later (a page kept
open in a second tab, or the back button) is refused, not dropped unsaid. An assignment left open past
``ASSIGNMENT_TTL`` holds no place; if others fill the item meanwhile, its holder's submission is
refused and the item no longer offered to them, so no item gets more answers than the overlap.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DBSession

from redline import RedlineError
from redline.app.db import (
    EXPORT_KINDS,
    INTEGER_MAX,
    ROLES,
    TASK_TYPES,
    Annotation,
    Assignment,
    Item,
    Project,
    User,
    now,
)
from redline.records import (
    Demonstration,
    Feedback,
    FieldError,
    Preference,
    Ranking,
    Record,
    RecordError,
    Response,
    _parse_rows,
    dense_ranks,
    iter_records,
    meta_field,
    optional_id,
    prompt_field,
    prompt_key,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
ASSIGNMENT_TTL = timedelta(minutes=30)  # an open assignment older than this no longer holds a place
# PostgreSQL stores no NUL character in a text column, nor more than N characters in a String(N), and refused them
# at the insert, a traceback (a 500) naming no file; SQLite takes both. Refused on every database as they are read,
# so a project SQLite takes PostgreSQL takes too.
EXTERNAL_ID_MAX = Item.external_id.type.length
IMPORTED_AS_MAX = User.imported_as.type.length


def unstorable(value: str, limit: int | None = None) -> str | None:
    """Why no database column (of at most ``limit`` characters) can hold ``value``, or None when one can."""
    if "\x00" in value:
        return f"holds a NUL character (U+0000, character {value.index(chr(0)) + 1}), which the database cannot store"
    if limit is not None and len(value) > limit:
        return f"{len(value)} characters long, more than the {limit} the database stores"
    return None


class FormError(RedlineError):
    """A submitted form (or an uploaded file) is refused; ``field`` names what to fix."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        self.message = message
        super().__init__(f"{field_name}: {message}")


def check_name(value: str, what: str) -> str:
    value = (value or "").strip()
    if not NAME.match(value):
        raise FormError("name", f"{what} name {value!r} must be 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


# ----------------------------------------------------------------------------- users


def add_user(db: DBSession, name: str, role: str, password: str | None) -> User:
    from redline.app.security import hash_password

    name = check_name(name, "user")
    if role not in ROLES:
        raise FormError("role", f"{role!r} is not one of {', '.join(ROLES)}")
    if password is not None and len(password) < 8:
        raise FormError("password", "at least 8 characters")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise FormError("name", f"a user named {name!r} exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password is not None else None, created_at=now())
    db.add(user)
    db.flush()
    return user


def get_user(db: DBSession, name: str) -> User:
    user = db.scalar(select(User).where(User.name == name))
    if user is None:
        raise RedlineError(f"no user named {name!r}")
    return user


# ----------------------------------------------------------------------------- reading prompts and answers


@dataclass
class PromptRow:
    line: int
    prompt: Any
    id: str | None
    meta: dict
    answers: list[dict] = field(default_factory=list)  # [{"text", "source"}]
    gold: dict | None = None  # {"ranks": [...]} or {"chosen": 0}: the known answer of a gold item
    empty: list[str] = field(default_factory=list)  # the fields of its empty answers, refused where answers are shown


EMPTY_ANSWER = "empty string where text is needed (an answer for annotators to judge; leave it out of the record)"
# a response record's empty response is legal (a model that wrote nothing; `generate` writes it and the judges read
# it), but annotators have nothing in it to rank or critique: the record is what to leave out, not its field
EMPTY_RESPONSE = "empty string where text is needed (an answer for annotators to judge): remove this line from the file"


def _own_answers(obj: dict) -> tuple[list[dict], list[str]]:
    """Answers a prompt record carries itself (response, responses, or chosen and rejected), and the fields of the
    empty ones: ``plan_items`` refuses those where answers are shown (every record reader refuses them too), where
    they were left out unsaid, which shifted a ranking's places."""
    source = obj.get("source") if isinstance(obj.get("source"), str) else None
    fields: list[tuple[str, Any]] = []
    if isinstance(obj.get("responses"), list):
        fields += [(f"responses[{i}]", text) for i, text in enumerate(obj["responses"])]
    fields += [(name, obj[name]) for name in ("response", "chosen", "rejected") if name in obj]
    for name, text in fields:
        if not isinstance(text, str):
            raise FieldError(name, f"expected a string, got {type(text).__name__}")
    return [{"text": text, "source": source} for _, text in fields if text.strip()], [name for name, text in fields
                                                                                         if not text.strip()]


def _gold(obj: dict, meta: dict) -> dict | None:
    """A record marked ``meta.gold`` carries its known answer: a ranking's ranks, a preference's choice."""
    if not meta.get("gold"):
        return None
    if "ranks" in obj:
        return {"ranks": dense_ranks(Ranking.from_dict(obj).ranks)}
    if "chosen" in obj:
        Preference.from_dict(obj)
        return {"chosen": 0}  # answers are [chosen, rejected]; plan_items shuffles them
    raise FieldError("meta.gold", "a gold item needs its answer: ranks (a ranking record) or chosen and rejected (a preference)")


def read_prompts(path: str | Path, with_answers: bool = True) -> list[PromptRow]:
    """Every prompt record of ``path``; one ``RecordError`` listing every bad line (FILE:LINE: FIELD)."""

    def parse(obj: Any, number: int) -> PromptRow:
        if not isinstance(obj, dict):
            raise FieldError("<record>", f"expected a JSON object, got {type(obj).__name__}")
        meta = meta_field(obj)
        answers, empty = _own_answers(obj) if with_answers else ([], [])
        given = optional_id(obj)
        if given is not None and (problem := unstorable(given, EXTERNAL_ID_MAX)):
            raise FieldError("id", problem)
        return PromptRow(number, prompt_field(obj), given, meta, answers, _gold(obj, meta) if with_answers else None,
                         empty=empty)

    rows = _parse_rows(path, parse, skip_invalid=False, limit=None, report=None)
    if not rows:
        raise RecordError([f"{path}:0: <file>: no prompt records"])
    return rows


def attach_responses(rows: list[PromptRow], paths: Iterable[str | Path], prompts_name: str = "the prompts file") -> None:
    """Add the answers of response files to the prompts they answer (by id, else by prompt text)."""
    by_id = {row.id: row for row in rows if row.id is not None}
    by_prompt = {prompt_key(row.prompt): row for row in rows}
    for path in paths:
        unmatched: list[str] = []

        def parse(obj: Any, number: int):
            record = Response.from_dict(obj)
            return number, record

        for number, record in _parse_rows(path, parse, skip_invalid=False, limit=None, report=None):
            row = by_id.get(record.id) if record.id is not None else None
            row = row or by_prompt.get(prompt_key(record.prompt))
            if row is None:
                unmatched.append(f"{path}:{number}: prompt: matches no prompt (by id or text) in {prompts_name}")
            elif not record.response.strip():  # was left out unsaid
                unmatched.append(f"{path}:{number}: response: {EMPTY_RESPONSE}")
            else:
                row.answers.append({"text": record.response, "source": record.source})
        if unmatched:
            raise RecordError(unmatched[:20], len(unmatched))


def _flipped(prompt, salt: str = "") -> bool:
    """Whether a pair's two answers are shown the other way round: fixed by a hash of the prompt (and ``salt``),
    so the same item is shown the same way to everyone, and a file's order reaches no side."""
    return int(hashlib.sha256((prompt_key(prompt) + salt).encode()).hexdigest(), 16) % 2 == 1


def shown_order(prompt, k: int) -> list[int]:
    """The order a rank item's ``k`` answers are shown in, as places in the file's order (``shown[0]`` on top).

    A permutation fixed by a hash of the prompt, like a pair's order: over a project each place in the file lands
    in every position on the page, so a file that lists one model first meets no leaning to the top (or bottom).
    The same for every annotator rather than drawn per annotator, so "answer 2" in a flag's reason or on the
    admin's screen names one answer for everyone.
    """
    key = prompt_key(prompt)
    return sorted(range(k), key=lambda i: hashlib.sha256(f"{key}#{i}".encode()).hexdigest())


def plan_items(task_type: str, rows: list[PromptRow], prompts_name: str = "the prompts file") -> list[dict]:
    """The items a project of ``task_type`` makes from these prompts.

    A prompt with too few answers is an error naming its line (``drop_short`` first sets aside,
    and names, the prompts a model left short).
    """
    if task_type not in TASK_TYPES:
        raise FormError("task_type", f"{task_type!r} is not one of {', '.join(TASK_TYPES)}")
    items: list[dict] = []
    errors: list[str] = []
    for row in rows:
        base = {"prompt": row.prompt, "meta": row.meta, "external_id": row.id}
        answers = row.answers
        if row.empty and task_type != "demonstration":  # a demonstration project shows no answers
            errors += [f"{prompts_name}:{row.line}: {name}: {EMPTY_ANSWER}" for name in row.empty]
            continue
        if row.gold is not None and not ((task_type == "rank" and "ranks" in row.gold) or (task_type == "pair" and "chosen" in row.gold)):
            errors.append(f"{prompts_name}:{row.line}: meta.gold: a {task_type} project takes no gold items of this record "
                          "(gold: a ranking record in a rank project, a preference record in a pair project)")
            continue
        expected = len(row.gold["ranks"]) if row.gold is not None and "ranks" in row.gold else 2
        if row.gold is not None and len(answers) != expected:  # its known answer ranks its own answers only
            errors.append(f"{prompts_name}:{row.line}: meta.gold: a gold item's known answer covers its own {expected} "
                          f"answers, and it has {len(answers)} (a responses file adds answers to it)")
            continue
        if task_type == "rank" and row.gold is not None:
            items.append({**base, "answers": answers, "gold": row.gold})
        elif task_type == "pair" and row.gold is not None:
            flip = _flipped(row.prompt)  # chosen not always A
            pair = [answers[1], answers[0]] if flip else answers
            items.append({**base, "answers": pair, "gold": {"choice": "b" if flip else "a"}})
        elif task_type == "demonstration":
            items.append({**base, "answers": []})
        elif task_type == "critique":
            if not answers:
                errors.append(f"{prompts_name}:{row.line}: response: no answer to critique")
            for j, answer in enumerate(answers):
                items.append({**base, "external_id": f"{row.id}-{j}" if row.id and len(answers) > 1 else row.id, "answers": [answer]})
        elif task_type == "rank":
            if len(answers) < 2:
                errors.append(f"{prompts_name}:{row.line}: responses: {len(answers)} answer(s); ranking needs at least 2")
            else:
                items.append({**base, "answers": answers})
        else:  # pair
            if len(answers) < 2:
                errors.append(f"{prompts_name}:{row.line}: responses: {len(answers)} answer(s); a pair needs 2")
                continue
            pairs = [(i, i + 1) for i in range(0, len(answers) - 1, 2)]
            if len(answers) % 2:
                pairs.append((len(answers) - 1, 0))
            for n, (i, j) in enumerate(pairs):
                external = f"{row.id}-{n}" if row.id and len(pairs) > 1 else row.id
                # which is shown first is fixed by a hash, not by the file: a file listing one model's answer first
                # everywhere would meet every annotator's leaning to the first (or second) answer on one side
                shown = [answers[j], answers[i]] if _flipped(row.prompt, f"#{n}") else [answers[i], answers[j]]
                items.append({**base, "external_id": external, "answers": shown})
    if errors:
        raise RecordError(errors[:20], len(errors))
    return items


def generate_answers(rows: list[PromptRow], engine, k: int, *, source: str, temperature: float = 0.7,
                     max_new_tokens: int = 256, seed: int = 0) -> None:
    """K answers per prompt from ``engine`` (redline's generation interface), appended to each row."""
    from redline.generation import SamplingParams, as_chat

    if k < 1:
        raise FormError("k", "at least 1 answer per prompt")
    prompts = [as_chat(row.prompt) for row in rows for _ in range(k)]
    seeds = [seed + 1000 * r + j for r in range(len(rows)) for j in range(k)]
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    completions = engine.generate(prompts, params, seeds=seeds, progress=False)
    for n, completion in enumerate(completions):
        if completion.text.strip():
            rows[n // k].answers.append({"text": completion.text, "source": source})


DEFAULT_K = {"rank": 4, "pair": 2, "critique": 1}


def generation_settings(form: dict, task_type: str) -> dict:
    """K, max_new_tokens, temperature and seed of answers generated in the app, checked."""
    if task_type not in DEFAULT_K:
        raise FormError("generate", f"a {task_type} project shows no answers; leave the model empty")
    from redline.config import SEED_MAX

    out: dict[str, Any] = {}
    for name, default, cast, low in (("k", DEFAULT_K[task_type], int, 1), ("max_new_tokens", 256, int, 1),
                                     ("temperature", 0.7, float, 0.0), ("seed", 0, int, 0)):
        raw = str(form.get(name) or "").strip()
        try:
            value = cast(raw) if raw else default
        except ValueError:
            raise FormError(name, f"expected a number, got {raw!r}") from None
        if not math.isfinite(value) or value < low:  # nan passed `< low` and failed once the model had loaded; inf ran
            raise FormError(name, f"must be a finite number >= {low}, got {raw!r}")
        if name == "seed" and value > SEED_MAX:  # every command's range; past 2**64 - 1 it failed once the model had loaded
            raise FormError(name, f"must be from 0 to {SEED_MAX}, got {raw!r}")
        out[name] = value
    if task_type in ("rank", "pair") and out["k"] < 2:
        raise FormError("k", f"a {task_type} project needs at least 2 answers per prompt")
    return out


def drop_short(task_type: str, rows: list[PromptRow]) -> tuple[list[PromptRow], list[str]]:
    """Prompts a model left with too few non-empty answers for the task, set aside and named."""
    need = {"critique": 1, "rank": 2, "pair": 2, "demonstration": 0}[task_type]
    kept = [row for row in rows if len(row.answers) >= need]
    notes = [f"line {row.line}: the model wrote {len(row.answers)} non-empty answer(s), the task needs {need}"
             for row in rows if len(row.answers) < need]
    return kept, notes


# ----------------------------------------------------------------------------- projects


def create_project(db: DBSession, name: str, task_type: str, items: list[dict], *, guidelines: str = "",
                   overlap: int = 1, status: str = "ready", status_detail: str = "") -> Project:
    name = check_name(name, "project")
    if problem := unstorable(guidelines or ""):
        raise FormError("guidelines", f"the guidelines {problem} (text saved as UTF-16?)")
    if task_type not in TASK_TYPES:
        raise FormError("task_type", f"{task_type!r} is not one of {', '.join(TASK_TYPES)}")
    if not isinstance(overlap, int) or not 1 <= overlap <= INTEGER_MAX:
        raise FormError("overlap", f"annotators per item must be a whole number from 1 to {INTEGER_MAX}, got {overlap!r}")
    if db.scalar(select(Project).where(Project.name == name)) is not None:
        raise FormError("name", f"a project named {name!r} exists")
    project = Project(name=name, task_type=task_type, guidelines=guidelines or "", overlap=overlap, status=status,
                      status_detail=status_detail, created_at=now())
    db.add(project)
    db.flush()
    add_items(db, project, items)
    return project


def add_items(db: DBSession, project: Project, items: list[dict]) -> list[Item]:
    start = db.scalar(select(func.coalesce(func.max(Item.position), -1)).where(Item.project_id == project.id)) + 1
    made = [Item(project_id=project.id, position=start + n, external_id=it.get("external_id"), prompt=it["prompt"],
                 meta=it.get("meta") or {}, answers=it.get("answers") or [], gold=it.get("gold")) for n, it in enumerate(items)]
    db.add_all(made)
    db.flush()
    return made


def recover_unfinished(db: DBSession) -> int:
    """Projects a stopped server left generating or drafting: that job will not finish, so say so
    (generating: failed, create it again; drafting: ready, the drafts written so far stay)."""
    stuck = db.scalars(select(Project).where(Project.status.in_(("generating", "drafting")))).all()
    for project in stuck:
        was = project.status
        project.status = "failed" if was == "generating" else "ready"
        project.status_detail = f"the server stopped while {was}; " + ("create the project again" if was == "generating"
                                                                        else "write the drafts again")
    return len(stuck)


def get_project(db: DBSession, name_or_id: str | int) -> Project:
    if isinstance(name_or_id, int):
        project = db.get(Project, name_or_id)
    else:
        project = db.scalar(select(Project).where(Project.name == name_or_id))
    if project is None:
        raise RedlineError(f"no project {name_or_id!r}")
    return project


def progress(db: DBSession, project: Project) -> dict:
    """Items, submitted/skipped/flagged annotations, and items that have all the answers they need."""
    n_items = db.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id))
    counts = dict(db.execute(
        select(Annotation.status, func.count()).join(Item, Item.id == Annotation.item_id)
        .where(Item.project_id == project.id).group_by(Annotation.status)
    ).all())
    per_item = (select(Annotation.item_id, func.count().label("n")).join(Item, Item.id == Annotation.item_id)
                .where(Item.project_id == project.id, Annotation.status == "submitted").group_by(Annotation.item_id).subquery())
    complete = db.scalar(select(func.count()).select_from(per_item).where(per_item.c.n >= project.overlap))
    return {"items": n_items, "submitted": counts.get("submitted", 0), "skipped": counts.get("skipped", 0),
            "flagged": counts.get("flagged", 0), "complete": complete, "needed": n_items * project.overlap}


def user_progress(db: DBSession, project: Project, user: User) -> int:
    return db.scalar(select(func.count()).select_from(Annotation).join(Item, Item.id == Annotation.item_id)
                     .where(Item.project_id == project.id, Annotation.user_id == user.id))


# ----------------------------------------------------------------------------- assignment


def next_item(db: DBSession, user: User, project: Project) -> Item | None:
    """The item this annotator should do next in ``project`` (an open one first), or None."""
    if project.status != "ready":
        return None
    lock_assignments(db, project)
    done = select(Annotation.item_id).where(Annotation.user_id == user.id)
    while True:
        mine = db.scalar(
            select(Item).join(Assignment, Assignment.item_id == Item.id)
            .where(Item.project_id == project.id, Assignment.user_id == user.id, Item.id.not_in(done))
            .order_by(Assignment.started_at, Item.position).limit(1)
        )
        if mine is None:
            break
        if not is_full(db, project, mine):
            return mine
        release(db, user, mine)  # left open past ASSIGNMENT_TTL, its place went to others, who filled it
    fresh = now() - ASSIGNMENT_TTL
    submitted = _submitted(Item.id).scalar_subquery()
    held = (select(func.count()).select_from(Assignment)
            .where(Assignment.item_id == Item.id, Assignment.user_id != user.id, Assignment.started_at > fresh,
                   Assignment.item_id.not_in(select(Annotation.item_id).where(Annotation.user_id == Assignment.user_id)))
            .scalar_subquery())
    item = db.scalar(
        select(Item).where(Item.project_id == project.id, Item.id.not_in(done),
                           or_(submitted + held < project.overlap, Item.gold.is_not(None)))  # gold items go to everyone
        .order_by(Item.position).limit(1)
    )
    if item is None:
        return None
    assign(db, user, item)
    return item


def lock_assignments(db: DBSession, project: Project) -> None:
    """One assignment or submission at a time per project: on PostgreSQL the project row is locked until
    commit (so two annotators cannot both take, or both fill, an item's last place); SQLite's IMMEDIATE
    transactions serialise writers already and ignore FOR UPDATE."""
    db.execute(select(Project.id).where(Project.id == project.id).with_for_update())


def _submitted(item_id):
    """How many submitted answers the item ``item_id`` (a value, or a column for a correlated subquery) holds."""
    return select(func.count()).select_from(Annotation).where(Annotation.item_id == item_id,
                                                             Annotation.status == "submitted")


def is_full(db: DBSession, project: Project, item: Item) -> bool:
    """Whether the item holds the project's ``overlap`` submitted answers (a gold item never is)."""
    return item.gold is None and db.scalar(_submitted(item.id)) >= project.overlap


def release(db: DBSession, user: User, item: Item) -> None:
    """Drop the user's assignment to the item, if they hold one."""
    assignment = db.get(Assignment, (user.id, item.id))
    if assignment is not None:
        db.delete(assignment)
        db.flush()


def assign(db: DBSession, user: User, item: Item) -> Assignment:
    assignment = db.get(Assignment, (user.id, item.id))
    if assignment is None:
        assignment = Assignment(user_id=user.id, item_id=item.id, started_at=now())
        db.add(assignment)
        db.flush()
    return assignment


# ----------------------------------------------------------------------------- submitting


def edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance: how many words were inserted, deleted or replaced.

    Words, not characters: a revision of a 300-word answer costs 300 x 300 steps, not 2000 x 2000.
    """
    x, y = a.split(), b.split()
    if len(x) < len(y):
        x, y = y, x
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, start=1):
        current = [i]
        for j, wy in enumerate(y, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


def _text(form: dict, name: str, label: str) -> str:
    value = form.get(name)
    if value is None or not str(value).strip():
        raise FormError(name, f"{label} is empty")
    return str(value).replace("\r\n", "\n")


def parse_answer(project: Project, item: Item, form: dict) -> tuple[dict, dict]:
    """(payload, info) of a submitted form, or ``FormError`` naming the field to fix."""
    info: dict[str, Any] = {}
    if project.task_type == "critique":
        critique = _text(form, "critique", "critique")
        revision = _text(form, "revision", "revision")
        answer = item.answers[0]["text"]
        info["revision_edit_distance"] = edit_distance(answer, revision)
        if item.draft:
            draft_revision = item.draft.get("revision") or answer
            info.update(draft_used=str(form.get("draft_used") or "") == "1", draft_model=item.draft.get("model"),
                        draft_edit_distance={"critique": edit_distance(item.draft.get("critique") or "", critique),
                                             "revision": edit_distance(draft_revision, revision)})
        else:
            info["draft_used"] = False
        return {"critique": critique, "revision": revision}, info
    if project.task_type == "demonstration":
        return {"response": _text(form, "response", "response")}, info
    if project.task_type == "pair":
        choice = str(form.get("choice") or "").strip().lower()
        if choice not in ("a", "b"):
            raise FormError("choice", "missing: pick answer A or answer B")
        return {"choice": choice}, info
    k = len(item.answers)
    ranks = [0] * k
    for n, i in enumerate(shown_order(item.prompt, k), start=1):  # rank_i is the file's answer i, the page's "answer n"
        raw = str(form.get(f"rank_{i}") or "").strip()
        if not raw:
            raise FormError(f"rank_{i}", f"rank of answer {n} is missing")
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= k:  # "²" is a digit int() refuses
            raise FormError(f"rank_{i}", f"rank of answer {n} must be a whole number from 1 to {k}, got {raw!r}")
        ranks[i] = int(raw)
    if len(set(ranks)) < 2:
        raise FormError("ranks", "every answer has the same rank: rank at least one above another, or skip")
    return {"ranks": dense_ranks(ranks)}, info


def record_annotation(db: DBSession, user: User, item: Item, status: str, payload: dict | None = None,
                      info: dict | None = None, reason: str = "") -> Annotation | None:
    """Store one annotation, in a savepoint; None if this annotator already answered this item.

    Time spent runs from the assignment (the task page first served) to now.
    """
    assignment = db.get(Assignment, (user.id, item.id))
    if assignment is None:
        raise FormError("item", "this item was not assigned to you")
    seconds = max(0.0, (now() - assignment.started_at).total_seconds())
    annotation = Annotation(item_id=item.id, user_id=user.id, status=status, payload=payload or {}, info=info or {},
                            reason=reason, seconds=round(seconds, 3), imported=False, created_at=now())
    try:
        with db.begin_nested():
            db.add(annotation)
    except IntegrityError:
        return None
    return annotation


def answer_of(db: DBSession, user: User, item: Item) -> Annotation | None:
    """The answer (submitted, skipped or flagged) this annotator gave this item, if any."""
    return db.scalar(select(Annotation).where(Annotation.user_id == user.id, Annotation.item_id == item.id))


def already_answered(db: DBSession, user: User, item: Item) -> bool:
    return answer_of(db, user, item) is not None


def answered_already(stored: Annotation) -> FormError:
    """The refusal of another answer to an item answered by ``stored``: it stands."""
    return FormError("item", f"you {stored.status} this item already ({stored.created_at:%Y-%m-%d %H:%M} UTC): that "
                             "answer stands, and this one was not saved (a sent answer is not changed)")


def repeats(project: Project, item: Item, stored: Annotation, form: dict) -> bool:
    """Whether ``form`` sends again what ``stored`` holds (a double click, a retry), not another answer."""
    action = str(form.get("action") or "submit")
    if {"submit": "submitted", "skip": "skipped", "flag": "flagged"}.get(action) != stored.status:
        return False
    if action != "submit":
        return str(form.get("reason") or "").strip() == stored.reason
    try:
        return parse_answer(project, item, form)[0] == stored.payload
    except FormError:
        return False


def submit(db: DBSession, user: User, project: Project, item: Item, form: dict) -> Annotation | None:
    """Validate and store a submission (action submit | skip | flag); None if this very one was already stored.

    Another answer to an item this annotator answered already is a ``FormError``: the first one stands.
    """
    if item.project_id != project.id:
        raise FormError("item", "not an item of this project")
    action = str(form.get("action") or "submit")
    stored = answer_of(db, user, item)
    if stored is not None:
        if repeats(project, item, stored, form):
            return None
        raise answered_already(stored)
    reason = str(form.get("reason") or "").strip()
    if action in ("skip", "flag") and (problem := unstorable(reason)):
        raise FormError("reason", f"the reason {problem}")
    if action == "skip":
        return record_annotation(db, user, item, "skipped", reason=reason)
    if action == "flag":
        if not reason:
            raise FormError("reason", "say why you flag this item")
        return record_annotation(db, user, item, "flagged", reason=reason)
    if action != "submit":
        raise FormError("action", f"unknown action {action!r}")
    payload, info = parse_answer(project, item, form)
    lock_assignments(db, project)  # else two holders of the last place both read it free and both submit
    if is_full(db, project, item):  # held past ASSIGNMENT_TTL while others answered it: no label past the overlap
        release(db, user, item)
        raise FormError("item", f"this item has its {project.overlap} answer(s) already: it was given to others while "
                                "yours stood open; take the next one")
    return record_annotation(db, user, item, "submitted", payload, info)


# ----------------------------------------------------------------------------- export


def _sources(item: Item) -> list[str | None]:
    return [a.get("source") for a in item.answers]


def export_records(db: DBSession, project: Project, kind: str) -> list[Record]:
    """The project's submitted annotations as redline records of ``kind``, each validated.

    ``meta`` holds the item's own meta (instructions, topic ...) and then: annotator, seconds
    (time spent; left out where unknown, as an import without it), project, item, source(s) of the
    answers, and for critiques draft_used and edit distances (in words).
    """
    from redline.app.quality import seconds_spent

    if kind not in EXPORT_KINDS[project.task_type]:
        raise RedlineError(f"project {project.name!r} ({project.task_type}) exports {' or '.join(EXPORT_KINDS[project.task_type])}, not {kind!r}")
    rows = db.execute(
        select(Annotation, Item, User).join(Item, Item.id == Annotation.item_id).join(User, User.id == Annotation.user_id)
        .where(Item.project_id == project.id, Annotation.status == "submitted").order_by(Item.position, Annotation.id)
    ).all()
    records: list[Record] = []
    for annotation, item, user in rows:
        seconds = seconds_spent(annotation)
        meta = {**(item.meta or {}), "annotator": user.name, "seconds": seconds, "project": project.name,
                "item": item.external_id or str(item.position), **(annotation.info or {})}
        if seconds is None:  # not timed: no meta.seconds, as the imported record had none
            del meta["seconds"]
        if annotation.imported:
            meta["imported"] = True
        if item.gold is not None:
            meta["gold"] = True
        rid = f"{project.name}-{item.position}-{user.name}"
        payload = annotation.payload
        if project.task_type == "critique":
            record: Record = Feedback(prompt=item.prompt, response=item.answers[0]["text"], critique=payload["critique"],
                                      revision=payload["revision"], id=rid, meta={**meta, "source": _sources(item)[0]})
        elif project.task_type == "demonstration":
            record = Demonstration(prompt=item.prompt, response=payload["response"], id=rid, meta=meta)
        elif project.task_type == "pair":
            w, l = (0, 1) if payload["choice"] == "a" else (1, 0)
            record = Preference(prompt=item.prompt, chosen=item.answers[w]["text"], rejected=item.answers[l]["text"], id=rid,
                                meta={**meta, "sources": [_sources(item)[w], _sources(item)[l]], "shown": ["chosen", "rejected"] if w == 0 else ["rejected", "chosen"]})
        elif kind == "ranking":
            record = Ranking(prompt=item.prompt, responses=[a["text"] for a in item.answers], ranks=payload["ranks"], id=rid,
                             meta={**meta, "sources": _sources(item)})
        else:  # a ranking project's best-vs-worst pair
            ranks = payload["ranks"]
            if len(set(ranks)) < 2:  # an imported ranking all tied: no pair to prefer (the form refuses one)
                continue
            best = min(range(len(ranks)), key=lambda i: (ranks[i], i))
            worst = max(range(len(ranks)), key=lambda i: (ranks[i], -i))
            record = Preference(prompt=item.prompt, chosen=item.answers[best]["text"], rejected=item.answers[worst]["text"],
                                id=rid, meta={**meta, "pair": [best, worst], "sources": [_sources(item)[best], _sources(item)[worst]]})
        records.append(type(record).from_dict(record.to_dict()))  # what a reader of the file will accept
    return records


# ----------------------------------------------------------------------------- import


IMPORT_KINDS = {"critique": "feedback", "rank": "ranking", "demonstration": "demonstration", "pair": "preference"}
IMPORT_BATCH = 1000  # records added per add_items call: one query and flush each, not one per record


def _check_import_meta(meta: dict, where: str) -> None:
    """An imported record's ``meta.annotator`` is a name and its ``meta.seconds`` a time: a bool was the user 'True'
    or 1 s, "12" was taken as untimed, a list became a user name of dashes, -3 or nan a time of the quality page."""
    annotator = meta.get("annotator")
    if annotator is not None and (isinstance(annotator, bool) or not isinstance(annotator, (str, int))):
        raise RecordError([f"{where}: meta.annotator: expected a name (a string), got {type(annotator).__name__}"])
    if isinstance(annotator, str) and (problem := unstorable(annotator, IMPORTED_AS_MAX)):  # kept as the user's imported_as
        raise RecordError([f"{where}: meta.annotator: {problem}"])
    seconds = meta.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 <= seconds <= sys.float_info.max):  # 10**400: float() overflows
        raise RecordError([f"{where}: meta.seconds: expected the seconds spent (a number, 0 or more), got {seconds!r}"])


def _annotator(meta: dict, default: str) -> str:
    """The annotator name an imported record gives (an id such as 17 read as "17"), else ``default``."""
    given = meta.get("annotator")
    return default if given is None or given == "" else str(given)


def import_records(db: DBSession, project: Project, path: str | Path, default_annotator: str = "imported") -> int:
    """Existing records of the project's kind become items with one submitted annotation each.

    The annotator is ``meta.annotator``, else ``default_annotator``: the user of that name, or the one an
    earlier import made from that very annotator name ("Ann B" became the user Ann-B); a new name gets a
    user without a password. Two annotator names that would become one user name, in this file or
    across imports, are refused before anything is added: two people's labels are never merged. A
    preference's two answers are shown in an order fixed by a hash of the prompt, so the chosen one is
    not always A. Returns how many records were imported.

    The file is read a record at a time, twice, so that a large one is never held whole: the first pass
    checks every record (nothing is added unless all pass), the second adds them IMPORT_BATCH at a time.
    Both run under a savepoint, so that an error in the second (a file changed since it was checked) adds
    nothing either, not even a user, whatever the caller does with its transaction then.
    """
    kind = IMPORT_KINDS[project.task_type]
    n = 0
    with db.begin_nested():
        user_of = _import_annotators(db, path, kind, default_annotator)
        for batch in _batches(iter_records(path, kind), IMPORT_BATCH):
            users = [_checked_annotator(record, f"{path}:{line}", default_annotator, user_of) for line, record in batch]
            planned = [_imported_item(record) for _, record in batch]
            made = add_items(db, project, [item for item, _ in planned])  # one max(position) query and two flushes a batch
            db.add_all([Annotation(item_id=item.id, user_id=user.id, status="submitted", payload=payload, info={},
                                   reason="", seconds=_seconds(record.meta), imported=True, created_at=now())
                        for item, user, (_, record), (_, payload) in zip(made, users, batch, planned)])
            db.flush()
            n += len(batch)
    return n


def _batches(rows: Iterable, size: int) -> Iterable[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _import_annotators(db: DBSession, path: str | Path, kind: str, default: str) -> dict[str, User]:
    """Every record of ``path`` checked, one at a time: the user of each annotator name given (a new name's made).

    A row that is no record is said before a record's import check fails, wherever the two are in the file (as when
    the whole file was read first), so the first failed check is kept while the rest of the file is read."""
    given: dict[str, str] = {}  # a user's name: the annotator name in the file it comes from
    users: dict[str, User | None] = {}
    problem = None
    for line, record in iter_records(path, kind):
        if problem is None:
            try:
                _check_imported(db, record, f"{path}:{line}", default, given, users)
            except RecordError as e:
                problem = e
    if problem is not None:
        raise problem
    for name, raw in given.items():
        if users[name] is None:
            users[name] = add_user(db, name, "annotator", None)
            users[name].imported_as = raw
    return {raw: users[name] for name, raw in given.items()}


def _check_record(record: Record, where: str) -> None:
    """What an imported record holds that the database cannot store or the project cannot show."""
    _check_import_meta(record.meta, where)
    if record.id is not None and (problem := unstorable(record.id, EXTERNAL_ID_MAX)):  # the item's external_id
        raise RecordError([f"{where}: id: {problem}"])
    if isinstance(record, Feedback) and record.revision is None:  # was named by id only ("id None" without one)
        raise RecordError([f"{where}: revision: a critique-only record has no revision to import"])


def _check_imported(db: DBSession, record: Record, where: str, default: str, given: dict[str, str],
                    users: dict[str, User | None]) -> None:
    """``record`` checked, its annotator's user name added to ``given`` (name: annotator name) and its user, if one
    exists, to ``users``."""
    _check_record(record, where)
    raw = _annotator(record.meta, default)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:80] or default
    rule = f"user name {name!r} (letters, digits, '.', '_' and '-', at most 80)"
    if not NAME.match(name):  # add_user's refusal below named neither the file nor the line
        raise RecordError([f"{where}: meta.annotator: {raw!r} becomes the {rule}, which must start with a "
                           "letter or digit: rename it"])
    if given.setdefault(name, raw) != raw:  # two people's labels would become one annotator's
        raise RecordError([f"{where}: meta.annotator: {raw!r} and {given[name]!r} both become the {rule}: rename one"])
    if name not in users:
        users[name] = user = db.scalar(select(User).where(User.name == name))
        if user is not None and raw != (user.imported_as if user.imported_as is not None else user.name):
            made = f"an earlier import made from {user.imported_as!r}" if user.imported_as else "which exists"
            raise RecordError([f"{where}: meta.annotator: {raw!r} becomes the {rule}, {made}: rename it, or "
                               f"give {name!r} to add to that user's work"])


def _checked_annotator(record: Record, where: str, default: str, user_of: dict[str, User]) -> User:
    """The user an imported record's annotator became in the checking pass; the record checked again, as the
    file may have changed since that pass (an error here rolls the import's savepoint back)."""
    _check_record(record, where)
    user = user_of.get(_annotator(record.meta, default))
    if user is None:
        raise RecordError([f"{where}: meta.annotator: {_annotator(record.meta, default)!r} was not in the file when it "
                           "was checked: it changed while it was imported; import it again"])
    return user


def _seconds(meta: dict) -> float | None:
    """An imported record's time spent; None: not timed, not 0 s."""
    given = meta.get("seconds")
    return float(given) if isinstance(given, (int, float)) else None


def _imported_item(record: Record) -> tuple[dict, dict]:
    """The item (for ``add_items``) and the annotation's payload that an imported record becomes."""
    meta = {k: v for k, v in record.meta.items() if k not in ("annotator", "seconds")}
    if isinstance(record, Feedback):
        answers, payload = [{"text": record.response, "source": meta.get("source")}], {"critique": record.critique, "revision": record.revision}
    elif isinstance(record, Ranking):
        answers, payload = [{"text": t, "source": None} for t in record.responses], {"ranks": dense_ranks(record.ranks)}
    elif isinstance(record, Demonstration):
        answers, payload = [], {"response": record.response}
    else:
        assert isinstance(record, Preference)
        flip = _flipped(record.prompt)
        pair = [record.rejected, record.chosen] if flip else [record.chosen, record.rejected]
        answers, payload = [{"text": t, "source": None} for t in pair], {"choice": "b" if flip else "a"}
    return {"prompt": record.prompt, "meta": meta, "external_id": record.id, "answers": answers}, payload


# ----------------------------------------------------------------------------- model-assisted drafts


def make_drafts(transaction, project_name: str, engine, model: str, *, max_new_tokens: int = 512, seed: int = 0) -> dict:
    """A critic's critique and revision for every critique item that has none: the form's pre-fill.

    ``transaction()`` opens one (a context manager yielding a session that commits on leaving). The
    items are read in one and the drafts written in another; the critic writes them in between, in
    no transaction, so annotators keep working while it runs (on SQLite every transaction holds the
    write lock). An item given a draft meanwhile keeps it. The critic reads the same prompt it was
    trained on (``prompts.critic_messages``), greedily. An output without a revision part keeps its
    critique and leaves the revision to start from the answer. Returns {"items", "parsed"}.
    """
    from redline.generation import SamplingParams
    from redline.prompts import critic_messages, parse_critic_output

    with transaction() as db:
        project = get_project(db, project_name)
        if project.task_type != "critique":
            raise RedlineError(f"project {project.name!r} is a {project.task_type} project; drafts are for critique projects")
        items = db.scalars(select(Item).where(Item.project_id == project.id, Item.draft.is_(None))
                           .order_by(Item.position)).all()
        todo = [(item.id, critic_messages(item.prompt, item.answers[0]["text"])) for item in items]
    completions = engine.generate([prompt for _, prompt in todo], SamplingParams(
        temperature=0.0, max_new_tokens=max_new_tokens, seed=seed), progress=False) if todo else []
    parsed = written = 0
    with transaction() as db:
        for (item_id, _), completion in zip(todo, completions):
            item = db.get(Item, item_id)
            if item is None or item.draft is not None:
                continue
            out = parse_critic_output(completion.text)
            parsed += out.parsed
            written += 1
            item.draft = {"critique": out.critique, "revision": out.revision, "model": model}
        get_project(db, project_name).critic = model
    return {"items": written, "parsed": parsed}


# ----------------------------------------------------------------------------- API tokens


def new_api_token(db: DBSession, user: User) -> str:
    """A fresh export token for an admin (the old one stops working); shown once, stored hashed."""
    from redline.app.security import new_token, token_hash

    if user.role != "admin":
        raise RedlineError(f"{user.name} is not an admin; only admins hold export tokens")
    token = new_token()
    user.api_token_hash = token_hash(token)
    db.flush()
    return token


def user_for_token(db: DBSession, token: str | None) -> User | None:
    from redline.app.security import token_hash

    if not token:
        return None
    return db.scalar(select(User).where(User.api_token_hash == token_hash(token)))
