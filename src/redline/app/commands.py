"""The ``redline app`` command group: serve the app, and manage users and projects from a shell.

    redline app --db sqlite:///feedback.db --port 8080          serve (127.0.0.1 unless --host)
    redline app user add NAME --role admin|annotator             password prompted, or generated and printed once
    redline app project create NAME --type rank --prompts P.jsonl [--responses R.jsonl ...] [--generate MODEL --k 4]
    redline app export --project P --kind ranking OUT.jsonl      records that the trainers read
    redline app import --project P FILE                           existing records into a project
    redline app drafts --project P --critic RUN                  a critic's drafts pre-fill the critique forms
    redline app simulate --project P                             simulated annotators fill a project, as bots
    redline app user token NAME                                  an API token for the export endpoint

This module stays light (argparse only); the handlers import the app's modules.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
from pathlib import Path

from redline import RedlineError

DEFAULT_DB = "sqlite:///feedback.db"
# project create's flags that only --generate reads: (flag, type, the default projects.generation_settings applies);
# None unless given, so that one given without --generate is refused rather than ignored. The defaults are written
# here for the help only: projects (which applies them) imports SQLAlchemy, and this module stays light.
GENERATE_FLAGS = [("--max-new-tokens", int, 256), ("--temperature", float, 0.7), ("--seed", int, 0)]


def number(kind, low: float, high: float | None = None):
    """An argparse type: a finite ``kind`` from ``low`` (to ``high``), refused as the flag is read, as the other
    commands' numbers are (``redline.config``): nan noise ranked at random, a port out of range was a traceback."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}" if high is None else
                                             f"must be from {low} to {high}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def proxy_addresses(text: str) -> list[str]:
    """An argparse type: comma-separated IP addresses or networks (or '*'), each checked, networks written as
    uvicorn reads them: uvicorn takes any entry it cannot parse for a name that no client ever has, silently."""
    import ipaddress

    out = []
    for entry in (e.strip() for e in text.split(",")):
        try:
            out.append(entry if entry == "*" else str(ipaddress.ip_network(entry, strict=False)) if "/" in entry
                       else str(ipaddress.ip_address(entry)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{entry!r} is not an IP address, a network (10.0.0.0/8) or '*'") from None
    return out


def database_url(value: str) -> str:
    """A URL as given, or a bare path taken as an SQLite file."""
    return value if "://" in value else f"sqlite:///{value}"


def add_app_commands(sub) -> None:
    from redline.config import SEED_MAX  # already loaded: the other commands' flags are built from it

    p = sub.add_parser(
        "app",
        help="the feedback web app: people critique and revise, rank, demonstrate, pick the better answer",
        description="Serve the feedback app (no COMMAND), or manage its users and projects. The database is any "
        "SQLAlchemy URL (SQLite by default, PostgreSQL tested); it is created or migrated on first use.",
    )
    db_help = "database URL or SQLite path (default: $REDLINE_APP_DB or %(default)s)"
    p.add_argument("--db", default=os.environ.get("REDLINE_APP_DB", DEFAULT_DB), help=db_help)
    p.add_argument("--host", default="127.0.0.1", help="(default: %(default)s; 0.0.0.0 to listen beyond this machine)")
    p.add_argument("--port", type=number(int, 0, 65535), default=8080, help="(default: %(default)s)")
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (behind an HTTPS proxy)")
    p.add_argument("--forwarded-allow-ips", type=proxy_addresses, metavar="ADDRESSES", help="the reverse proxies to "
                   "trust, as comma-separated IP addresses or networks (10.0.0.0/8; '*' trusts any): their "
                   "X-Forwarded-For names the client, whose address the login rate limit counts, and X-Forwarded-Proto "
                   "the scheme. Behind a proxy on another machine, untrusted, every client shares the proxy's address "
                   "(default: $FORWARDED_ALLOW_IPS, else a proxy on this machine: 127.0.0.1 and ::1, as uvicorn has it)")
    p.set_defaults(func=_serve)
    more = p.add_subparsers(dest="app_command", required=False, metavar="COMMAND")

    def with_db(q):
        q.add_argument("--db", default=argparse.SUPPRESS, help=db_help.replace("%(default)s", DEFAULT_DB))
        return q

    users = more.add_parser("user", help="add users, hand out API tokens").add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    q = with_db(users.add_parser("add", help="add an admin or an annotator"))
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=["admin", "annotator"])
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin (default: prompt on a "
                   "terminal, else generate one and print it once)")
    q.set_defaults(func=_user_add)
    q = with_db(users.add_parser("token", help="a new API token for an admin (for GET /api/projects/P/export); printed once"))
    q.add_argument("name")
    q.set_defaults(func=_user_token)

    projects = more.add_parser("project", help="create and list projects").add_subparsers(dest="project_command", required=True, metavar="COMMAND")
    q = with_db(projects.add_parser("create", help="a project from a prompts file, with imported or generated answers"))
    q.add_argument("name")
    q.add_argument("--type", dest="task_type", required=True, choices=["critique", "rank", "demonstration", "pair"])
    q.add_argument("--prompts", required=True, type=Path, help="JSONL of records with a prompt (their response(s) are answers)")
    q.add_argument("--responses", type=Path, nargs="*", default=[], help="response record files, matched by id or prompt")
    # db.INTEGER_MAX (db imports SQLAlchemy); checked as the flag is read, not once --generate has written the answers
    q.add_argument("--overlap", type=number(int, 1, 2**31 - 1), default=1, help="annotators per item (default: %(default)s)")
    q.add_argument("--guidelines", type=Path, help="a Markdown file shown beside every task")
    q.add_argument("--generate", metavar="MODEL", help="let MODEL write the answers ('embedded', 'tiny-random', a hub id "
                   "or run folder) instead of taking them from the files")
    q.add_argument("--k", type=int, help="answers per prompt with --generate (default: 4 to rank, 2 for a pair, 1 to critique)")
    for flag, kind, default in GENERATE_FLAGS:
        kind = number(int, 0, SEED_MAX) if flag == "--seed" else kind  # as every --seed
        q.add_argument(flag, type=kind, help=f"with --generate (default: {default})")
    q.set_defaults(func=_project_create)
    q = with_db(projects.add_parser("list", help="projects with their progress"))
    q.set_defaults(func=_project_list)

    q = with_db(more.add_parser("export", help="a project's annotations as redline records"))
    q.add_argument("--project", required=True)
    q.add_argument("--kind", required=True, choices=["feedback", "ranking", "demonstration", "preference"])
    q.add_argument("out", type=Path, help="output JSONL (or .parquet)")
    q.set_defaults(func=_export)

    q = with_db(more.add_parser("import", help="existing records (of the project's kind) into a project"))
    q.add_argument("--project", required=True)
    q.add_argument("file", help="feedback, ranking, demonstration or preference records")
    q.set_defaults(func=_import)

    q = with_db(more.add_parser("drafts", help="a critic writes a draft critique and revision for every item of a critique project"))
    q.add_argument("--project", required=True)
    q.add_argument("--critic", required=True, help="a `redline train critic` run folder, or any model that writes Critique:/Revision:")
    q.add_argument("--max-new-tokens", type=number(int, 1), default=512, help="(default: %(default)s)")
    q.set_defaults(func=_drafts)

    q = with_db(more.add_parser("simulate", help="simulated annotators fill a project as bots (items need meta.instructions)"))
    q.add_argument("--project", required=True)
    q.add_argument("--annotators", type=number(int, 1), default=5, help="bots, careful to careless (default: %(default)s)")
    q.add_argument("--noise-scale", type=number(float, 0), default=1.0, help="their noise times this; 0 = they always agree (default: %(default)s)")
    q.add_argument("--seed", type=number(int, 0, SEED_MAX), default=0, help="(default: %(default)s)")  # as every --seed
    q.add_argument("--max-submissions", type=number(int, 1), default=None, metavar="N", help="stop after N submissions")
    q.set_defaults(func=_simulate)


def _open(args):
    from redline.app.db import open_database

    return open_database(database_url(args.db))


def _serve(args) -> int:
    import uvicorn
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url

    from redline.app.db import User
    from redline.app.projects import recover_unfinished
    from redline.app.web import make_app

    networks = [a for a in args.forwarded_allow_ips or [] if "/" in a]
    if networks and tuple(int(x) for x in uvicorn.__version__.split(".")[:2]) < (0, 31):  # older: compared as text, matching no client
        raise RedlineError(f"--forwarded-allow-ips: networks ({networks[0]}) need uvicorn 0.31 or later (this is "
                           f"{uvicorn.__version__}): pip install -U uvicorn, or name each proxy's address")
    sessions = _open(args)
    with sessions.begin() as db:
        n_users = db.scalar(select(func.count()).select_from(User))
        recover_unfinished(db)
    app = make_app(sessions, secure_cookies=args.secure_cookies)
    shown = make_url(database_url(args.db)).render_as_string(hide_password=True)  # a password stays off screens and logs
    print(f"redline app: http://{args.host}:{args.port}/ (database {shown})", flush=True)
    if not n_users:
        print("redline app: no users yet; add one with: redline app user add NAME --role admin", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def read_password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated?): from stdin, a terminal prompt (twice), or generated."""
    from redline.app.security import generate_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise RedlineError("no password on stdin")
        return password, False
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            raise RedlineError("the two passwords differ")
        return password, False
    return generate_password(), True


def _user_add(args) -> int:
    from redline.app.projects import add_user

    password, generated = read_password(args.password_stdin)
    sessions = _open(args)
    with sessions.begin() as db:
        user = add_user(db, args.name, args.role, password)
        print(f"added {user.role} {user.name}")
    if generated:
        print(f"password (shown once): {password}")
    return 0


def _generate_flags(args) -> dict[str, object]:
    """Project create's flags that only --generate reads, by setting name: None where not given."""
    names = [flag[2:].replace("-", "_") for flag in ["--k", *(f for f, _, _ in GENERATE_FLAGS)]]  # argparse's dests
    return {name: getattr(args, name) for name in names}


def _project_create(args) -> int:
    from redline.app import projects as P

    given = _generate_flags(args)
    if not args.generate and (ignored := ["--" + name.replace("_", "-") for name, value in given.items() if value is not None]):
        raise RedlineError(f"{', '.join(ignored)} only set how --generate writes answers; without --generate the answers "
                           "come from --prompts and --responses")
    if args.generate and args.responses:
        raise RedlineError("--responses and --generate both give the answers: pass one")
    from redline.records import read_text_file

    guidelines = read_text_file(args.guidelines, "the guidelines file") if args.guidelines else ""
    if problem := P.unstorable(guidelines):  # before --generate's model writes the answers
        raise RedlineError(f"{args.guidelines}: the guidelines file {problem} (saved as UTF-16?): save it as UTF-8")
    sessions = _open(args)
    rows = P.read_prompts(args.prompts, with_answers=not args.generate)
    notes: list[str] = []
    if args.generate:
        from redline.generation import load_engine

        settings = P.generation_settings({name: "" if value is None else str(value) for name, value in given.items()}, args.task_type)
        P.generate_answers(rows, load_engine(args.generate), settings["k"], source=args.generate, temperature=settings["temperature"],
                           max_new_tokens=settings["max_new_tokens"], seed=settings["seed"])
        rows, notes = P.drop_short(args.task_type, rows)
    else:
        P.attach_responses(rows, args.responses, str(args.prompts))
    items = P.plan_items(args.task_type, rows, str(args.prompts))
    with sessions.begin() as db:
        project = P.create_project(db, args.name, args.task_type, items, guidelines=guidelines, overlap=args.overlap)
        project.generator = args.generate
        print(f"created project {project.name} ({project.task_type}): {len(items)} items, overlap {project.overlap}")
    for note in notes:
        print(f"left out: {note}", file=sys.stderr)
    return 0


def _project_list(args) -> int:
    from sqlalchemy import select

    from redline.app import projects as P
    from redline.app.db import Project

    sessions = _open(args)
    with sessions() as db:
        for project in db.scalars(select(Project).order_by(Project.id)):
            pr = P.progress(db, project)
            print(f"{project.name}\t{project.task_type}\t{project.status}\titems {pr['items']}\tsubmitted {pr['submitted']}"
                  f"\tcomplete {pr['complete']}")
    return 0


def _export(args) -> int:
    from redline.app import projects as P
    from redline.records import write_records

    sessions = _open(args)
    with sessions() as db:
        records = P.export_records(db, P.get_project(db, args.project), args.kind)
    if not records:  # an empty file is one no reader accepts
        raise RedlineError(f"nothing to export: project {args.project!r} has no submitted {args.kind} annotations yet")
    n = write_records(args.out, records)
    print(f"wrote {n} {args.kind} records to {args.out}")
    return 0


def _import(args) -> int:
    from redline.app import projects as P

    sessions = _open(args)
    with sessions.begin() as db:
        n = P.import_records(db, P.get_project(db, args.project), args.file)
    print(f"imported {n} records into {args.project}")
    return 0


def _user_token(args) -> int:
    from redline.app import projects as P

    sessions = _open(args)
    with sessions.begin() as db:
        token = P.new_api_token(db, P.get_user(db, args.name))
    print(f"API token for {args.name} (shown once): {token}")
    return 0


def _drafts(args) -> int:
    from redline.app import projects as P
    from redline.generation import load_engine

    sessions = _open(args)
    with sessions() as db:
        project = P.get_project(db, args.project)  # fail before loading a model: no such project, or not a critique one
        if project.task_type != "critique":
            raise RedlineError(f"project {project.name!r} is a {project.task_type} project; drafts are for critique projects")
    engine = load_engine(args.critic)
    result = P.make_drafts(sessions.begin, args.project, engine, args.critic, max_new_tokens=args.max_new_tokens)
    print(f"drafts for {result['items']} items of {args.project} ({result['parsed']} with a revision)")
    return 0


def _simulate(args) -> int:
    from redline.app.bots import simulate
    from redline.app.db import Annotation, Item, User
    from redline.app.projects import get_project
    from redline.app.quality import project_quality
    from sqlalchemy import select

    sessions = _open(args)
    counts = simulate(sessions, args.project, annotators=args.annotators, noise_scale=args.noise_scale, seed=args.seed,
                      limit=args.max_submissions)
    print(f"{args.project}: the bots submitted {counts['submitted']} and skipped {counts['skipped']}")
    with sessions() as db:
        project = get_project(db, args.project)
        rows = db.execute(select(Annotation, Item, User.name).join(Item, Item.id == Annotation.item_id)
                          .join(User, User.id == Annotation.user_id).where(Item.project_id == project.id)).all()
        quality = project_quality(rows, project.task_type)
    if "agreement" in quality:
        print(json.dumps(quality["agreement"], default=lambda x: None))
    return 0
