"""`redline app simulate`: redline's simulated annotators fill a project, as bots.

Each bot is a user (``sim-annotator-1`` ..., no password: it cannot log in) behind one of
``simulate.annotators.make_pool``'s annotators, with that annotator's noise. Bots take items
through the same assignment and submit through the same validation as people (``projects.next_item``,
``projects.submit``), in turns, until no bot is given an item. What they answer comes from the
oracle of the simulated environment, so an item must carry its writing instructions in ``meta``
(``meta.instructions``, ``meta.topic``), as every prompt of ``redline simulate build`` does.

Uses: to demonstrate the app without people, and to calibrate its quality page: with
``noise_scale`` 0 every bot agrees with every other (α = 1, κ = 1); the default pool agrees more
often than InstructGPT's labelers did (85.2% on the shipped rankings against their 72.6%, data/README.md).
"""

from __future__ import annotations

import random

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from redline import RedlineError
from redline.app import projects as P
from redline.app.db import User


def task_of(item):
    """The simulated environment's Task behind an item, from its meta."""
    from redline.simulate.instructions import InstructionError, parse_instructions
    from redline.simulate.tasks import Task

    meta = item.meta or {}
    if "instructions" not in meta or not meta.get("topic"):
        raise RedlineError(f"item {item.external_id or item.position} carries no meta.instructions and meta.topic: "
                           "the simulated annotators judge by the writing instructions of `redline simulate build` prompts")
    try:
        instructions = parse_instructions(meta["instructions"])
    except InstructionError as e:
        raise RedlineError(f"item {item.external_id or item.position}: meta.instructions: {e}") from None
    prompt = item.prompt if isinstance(item.prompt, str) else item.prompt[-1]["content"]
    return Task(str(item.external_id or item.position), meta["topic"], meta.get("form") or "piece of writing", instructions, prompt)


def answer_form(task_type: str, annotator, task, answers: list[str], rng: random.Random) -> dict:
    """The form a bot submits: its ranks, choice, critique and revision, or demonstration."""
    from redline.simulate.tasks import template_response

    if task_type == "rank":
        ranks = annotator.rank(task, answers, rng)
        if len(set(ranks)) < 2:
            return {"action": "skip", "reason": "every answer is as good as the others"}
        return {f"rank_{i}": str(r + 1) for i, r in enumerate(ranks)}
    if task_type == "pair":
        winner = annotator.prefer(task, answers[0], answers[1], rng)
        return {"choice": winner} if winner in ("a", "b") else {"action": "skip", "reason": "a tie"}
    if task_type == "critique":
        critique = annotator.critique(task, answers[0], rng)
        revision = annotator.revise(task, answers[0], critique)
        if not critique.text.strip() or not revision.strip():
            return {"action": "skip", "reason": "nothing to say"}
        return {"critique": critique.text, "revision": revision}
    return {"response": annotator.demonstrate(task, template_response(task, rng))}


def simulate(sessions: sessionmaker, project_name: str, annotators: int = 5, noise_scale: float = 1.0,
             seed: int = 0, limit: int | None = None) -> dict:
    """Bots answer the project's items until none is left for them (or ``limit`` submissions)."""
    from redline.simulate.annotators import make_pool

    pool = make_pool(annotators, noise_scale=noise_scale)
    counts = {"submitted": 0, "skipped": 0}
    with sessions.begin() as db:
        project = P.get_project(db, project_name)
        if project.status != "ready":
            raise RedlineError(f"project {project_name!r} is {project.status}, not ready")
        for annotator in pool:
            name = f"sim-{annotator.name}"
            if db.scalar(select(User).where(User.name == name)) is None:
                P.add_user(db, name, "annotator", None)
    active = list(pool)
    while active and (limit is None or counts["submitted"] < limit):
        for annotator in list(active):
            with sessions.begin() as db:
                project = P.get_project(db, project_name)
                user = P.get_user(db, f"sim-{annotator.name}")
                item = P.next_item(db, user, project)
                if item is None:
                    active.remove(annotator)
                    continue
                rng = random.Random(f"redline-app-simulate:{seed}:{item.id}:{annotator.name}")
                form = answer_form(project.task_type, annotator, task_of(item), [a["text"] for a in item.answers], rng)
                if P.submit(db, user, project, item, form) is not None:
                    counts["submitted" if form.get("action") != "skip" else "skipped"] += 1
            if limit is not None and counts["submitted"] >= limit:
                break
    return counts
