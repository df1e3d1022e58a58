"""The feedback app's web pages: FastAPI routes over ``projects.py``, rendered with Jinja2 templates.

Every page is rendered on the server; ``static/app.js`` adds the keyboard (rank with number keys,
pick A/B, submit with Ctrl+Enter, skip with S) and the diff of a revision against its answer. No
front-end build. fastapi, jinja2 and markdown-it are imported here only.

Routes (A: any logged-in user, admin: admins only; every POST checks the form's CSRF token):

====================================  =====  ==============================================
GET  /login, POST /login              -      log in (rate-limited; drops expired sessions), POST /logout
GET  /                                A      redirect to /tasks
GET  /tasks                           A      projects open for annotation, with progress
GET  /projects/{p}/next               A      assign the next item, redirect to it
GET  /projects/{p}/items/{i}          A      the task page (only an item assigned to you)
POST /projects/{p}/items/{i}          A      submit, skip or flag
GET  /mywork                          A      your own annotations
GET  /admin                           admin  projects, users; forms to add them
POST /admin/users, /admin/projects    admin  add a user, create a project
GET  /admin/projects/{p}              admin  progress and agreement; export, import
GET  /admin/projects/{p}/export       admin  download records (?kind=)
POST /admin/projects/{p}/import       admin  import records into the project
GET  /health                          -      liveness
====================================  =====  ==============================================

Security: sessions and CSRF as in ``security.py``; a POST's body is read only once its session is
known to be live, and an admin's for /admin/ (two bodies are read before anyone is known, each only if its
Content-Length is small: the login form's, at most ``LOGIN_FORM_MAX``, and a task form's, below), so no one
else can have an upload spooled to disk; pages are sent with a Content-Security-Policy
that allows only this site's own script and styles (no inline script), so model text that holds
``<script>`` is shown as text (Jinja2 escapes it; Markdown is rendered with raw HTML disabled).

Work is not lost to an ended session: a task form sent after its session ended (expired, or logged out in
another tab) gets the login page, which keeps the form's fields (a url-encoded form of at most ``CARRY_MAX``
bytes) and, once its annotator has logged in, gives them back in the task form to submit again; a form it
cannot keep is named as not saved. A task form sent with the CSRF token of an earlier session of the same
user (they logged in again in another tab) is shown back to them the same way. Nothing is submitted for
them: they check and submit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import delete, select
from starlette.routing import Match
from sqlalchemy.orm import sessionmaker

from redline import RedlineError
from redline.app import projects as P
from redline.app import security as S
from redline.app.db import EXPORT_KINDS, INTEGER_MAX, TASK_TYPES, Annotation, Assignment, Item, Project, User, now
from redline.app.db import Session as DBSessionRow
from redline.http_body import declared_length
from redline.records import RecordError

HERE = Path(__file__).parent
SESSION_COOKIE = "redline_session"
LOGIN_CSRF_COOKIE = "redline_login_csrf"
SESSION_TTL = timedelta(days=7)
CARRY_MAX = 128 * 1024  # bytes: a task form sent after its session ended, carried through the login
LOGIN_FORM_MAX = 16 * 1024 + CARRY_MAX  # a name, a password, two tokens and a carried task form; read before anyone is known
CARRIED = "carried:"  # the login form's fields that carry a task form's fields
ITEM_PAGE = re.compile(r"/projects/([0-9]{1,10})/items/([0-9]{1,10})")
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML disabled (shown as text) and unsafe link schemes refused."""
    return Markup(_markdown.render(text or ""))


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, message: str = "you may not see this page"):
        self.message = message


class NotFound(Exception):
    def __init__(self, message: str = "no such page"):
        self.message = message


class TooLarge(Exception):
    pass


async def carried_form(request: Request) -> dict | None:
    """The fields of a task form sent after its session ended, to give back once its annotator logs in; None if
    it is not a url-encoded form of at most ``CARRY_MAX`` bytes by its Content-Length (read only then: no one
    is known yet)."""
    size = declared_length(request.scope)
    if size is None or size > CARRY_MAX:
        return None
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    return page_values(await request.form(), "csrf")


async def login_form(request: Request) -> dict:
    """The login form, read only if its Content-Length says it is small: no one is logged in yet to send more."""
    size = declared_length(request.scope)
    if size is None or size > LOGIN_FORM_MAX:
        raise TooLarge()
    return await form_data(request)


async def form_data(request: Request) -> dict:
    """The request's form as a dict (the last value of a repeated field; files as UploadFile lists)."""
    form = await request.form()
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if hasattr(value, "filename"):
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return out


def make_app(sessions: sessionmaker, *, engine_loader=None, secure_cookies: bool = False) -> FastAPI:
    """The app over an open database (``db.open_database``).

    ``engine_loader(model_name)`` returns a generation engine for answers generated in the app
    (default: ``redline.generation.load_engine``); tests pass one that returns a ScriptedEngine.
    """
    app = FastAPI(title="redline app", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sessions = sessions
    app.state.limiter = S.LoginLimiter()
    app.state.engine_loader = engine_loader
    app.state.engines = {}
    app.state.jobs = []
    engines_lock = threading.Lock()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["markdown"] = render_markdown
    templates.env.filters["prompt_text"] = prompt_display
    templates.env.globals["task_types"] = TASK_TYPES
    templates.env.globals["export_kinds"] = EXPORT_KINDS
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def database():
        db = sessions()
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()

    def session_of(request: Request, db) -> DBSessionRow | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        row = db.get(DBSessionRow, S.token_hash(token))
        if row is None or row.expires_at < now():
            return None
        return row

    def login_required(request: Request, db, role: str | None = None, form: dict | None = None) -> tuple[User, DBSessionRow]:
        row = session_of(request, db)
        if row is None:
            raise LoginRequired()
        user = db.get(User, row.user_id)
        if user is None:
            raise LoginRequired()
        # for an error page's header, as plain values: the session's objects expire on rollback
        request.state.user, request.state.csrf = SimpleNamespace(name=user.name, role=user.role), row.csrf
        if form is not None and not S.same(form.get("csrf"), row.csrf):
            raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        if role is not None and user.role != role:
            raise Forbidden(f"this page is for {role}s only")
        return user, row

    def may_post(request: Request) -> None:
        """``login_required`` as far as it goes without the body (whose CSRF token the route checks)."""
        with database() as db:
            login_required(request, db, role="admin" if request.url.path.startswith("/admin/") else None)

    async def user_form(request: Request) -> dict:
        """The form of a logged-in user's POST (an admin's, under /admin/); anyone else is sent to log in, or
        refused, before the body is read, so no one else can have an upload spooled to disk or a form read
        into memory."""
        await run_in_threadpool(may_post, request)
        return await form_data(request)

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.url.path != "/health" and not request.url.path.startswith("/static"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method == "POST" and ITEM_PAGE.fullmatch(request.url.path):  # (its cookie ended with the session)
            carried = await carried_form(request)  # a task form whose session ended: kept through the login, or named lost
            note = ("your session ended before your answer was saved: log in, and it is given back to you to submit again"
                    if carried is not None else "your session ended before your answer was saved, and it could not be kept "
                    f"through the login (only a url-encoded form of at most {CARRY_MAX} bytes is): go back in your browser "
                    "and copy it, then log in")
            return login_response(request, target, 401, notice=note, carried=carried or {})
        if request.method not in ("GET", "HEAD") and not has_page(request.url.path):  # a form's action (/logout,
            target = "/"  # /admin/users ...): after the login, a GET there would be a 405
        return redirect(f"/login?next={quote(target)}")

    def has_page(path: str) -> bool:
        scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
        return any(route.matches(scope)[0] == Match.FULL for route in app.routes)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden):
        return page(request, "error.html", 403, title="Forbidden", message=exc.message,
                    user=getattr(request.state, "user", None), csrf=getattr(request.state, "csrf", None))

    @app.exception_handler(TooLarge)
    async def _too_large(request: Request, exc: TooLarge):
        return PlainTextResponse(f"the login form is at most {LOGIN_FORM_MAX} bytes, sent with its Content-Length",
                                 status_code=413)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return page(request, "error.html", 404, title="Not found", message=exc.message,
                    user=getattr(request.state, "user", None), csrf=getattr(request.state, "csrf", None))

    def project_or_404(db, pid: int) -> Project:
        project = db.get(Project, pid) if 0 < pid <= INTEGER_MAX else None  # past it: no row, not a 500
        if project is None:
            raise NotFound(f"no project {pid}")
        return project

    # ------------------------------------------------------------------ login

    @app.get("/health")
    def health():
        return {"ok": True}

    def login_response(request: Request, next: str, status: int = 200, *, notice: str | None = None,
                       carried: dict | None = None) -> HTMLResponse:
        """The login page, with its double-submit CSRF cookie and the fields of a task form it carries."""
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or S.new_token()
        response = page(request, "login.html", status, user=None, csrf=token, next=safe_next(next), login_error=None,
                        notice=notice, carried=carried or {}, carried_prefix=CARRIED)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies, path="/login")
        return response

    @app.get("/login")
    def login_page(request: Request, next: str = "/"):
        return login_response(request, next)

    @app.post("/login")
    def login(request: Request, form: dict = Depends(login_form)):
        name, password = str(form.get("name") or "").strip(), str(form.get("password") or "")
        target = safe_next(str(form.get("next") or "/"))
        carried = {k[len(CARRIED):]: v for k, v in form.items() if k.startswith(CARRIED) and isinstance(v, str)}
        keep = {"carried": carried, "carried_prefix": CARRIED}  # a failed try keeps them too
        csrf = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not S.same(form.get("csrf"), csrf):
            raise Forbidden("the login form's CSRF token is missing or wrong; reload the page and try again")
        address = request.client.host if request.client else "?"
        limiter: S.LoginLimiter = app.state.limiter
        wait = limiter.attempt(address, name)  # counted now as a failure: tries sent at once meet the limit too
        if wait > 0:
            response = page(request, "login.html", 429, user=None, csrf=csrf, next=target,
                            login_error=f"too many failed logins; try again in {int(wait) + 1} s", **keep)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        with database() as db:  # read and let go: on SQLite a transaction holds the write lock, and argon2 is slow
            user = db.scalar(select(User).where(User.name == name))
            user_id, password_hash = (user.id, user.password_hash) if user else (None, None)
        if not S.verify_password(password_hash, password):
            return page(request, "login.html", 401, user=None, csrf=csrf, next=target, login_error="wrong name or password",
                        **keep)
        limiter.succeeded(address, name)
        token = S.new_token()
        with database() as db:
            db.execute(delete(DBSessionRow).where(DBSessionRow.expires_at < now()))  # else they were kept for ever
            session = DBSessionRow(token_hash=S.token_hash(token), user_id=user_id, csrf=S.new_token(), created_at=now(),
                                   expires_at=now() + SESSION_TTL)
            db.add(session)
            restored = restored_task(request, db, db.get(User, user_id), session, target, carried, notice=(
                "your session had ended before this was saved: here it is again; check it and submit")) if carried else None
        response = restored or redirect(target)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies,
                            max_age=int(SESSION_TTL.total_seconds()), path="/")
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    def logout(request: Request, form: dict = Depends(user_form)):
        with database() as db:
            _, row = login_required(request, db, form=form)
            db.delete(row)
        response = redirect("/login")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ annotating

    @app.get("/")
    def home(request: Request):
        with database() as db:
            login_required(request, db)
        return redirect("/tasks")

    @app.get("/tasks")
    def tasks(request: Request):
        with database() as db:
            user, row = login_required(request, db)
            projects = db.scalars(select(Project).where(Project.status == "ready").order_by(Project.id)).all()
            rows = [{"project": p, "progress": P.progress(db, p), "mine": P.user_progress(db, p, user)} for p in projects]
            return page(request, "tasks.html", user=user, csrf=row.csrf, rows=rows)

    @app.get("/projects/{pid}/next")
    def next_task(request: Request, pid: int):
        with database() as db:
            user, row = login_required(request, db)
            project = project_or_404(db, pid)
            item = P.next_item(db, user, project)
            if item is None:
                return page(request, "done.html", user=user, csrf=row.csrf, project=project,
                            progress=P.progress(db, project), mine=P.user_progress(db, project, user))
            target = f"/projects/{pid}/items/{item.id}"
        return redirect(target)

    def task_context(db, user: User, project: Project, item: Item) -> dict:
        context = {"user": user, "project": project, "item": item, "progress": P.progress(db, project),
                   "mine": P.user_progress(db, project, user), "values": {}, "error": None}
        if project.task_type == "rank":  # the file's answers in the order shown; each keeps its field rank_<file index>
            context["shown"] = P.shown_order(item.prompt, len(item.answers))
        if project.task_type == "critique" and item.draft:
            context.update(draft_critique=item.draft.get("critique") or "",
                           draft_revision=item.draft.get("revision") or item.answers[0]["text"])
        return context

    def assigned_item(db, user: User, project: Project, iid: int) -> Item:
        item = db.get(Item, iid) if 0 < iid <= INTEGER_MAX else None  # past it: no row, not a 500
        if item is None or item.project_id != project.id or db.get(Assignment, (user.id, item.id)) is None:
            raise NotFound("this item is not assigned to you")
        return item

    @app.get("/projects/{pid}/items/{iid}")
    def task_page(request: Request, pid: int, iid: int):
        with database() as db:
            user, row = login_required(request, db)
            project = project_or_404(db, pid)
            item = assigned_item(db, user, project, iid)
            if P.already_answered(db, user, item):
                return redirect(f"/projects/{pid}/next")
            return page(request, "task.html", csrf=row.csrf, **task_context(db, user, project, item))

    def restored_task(request: Request, db, user: User, row: DBSessionRow, target: str, values: dict,
                      status: int = 200, **message) -> HTMLResponse | None:
        """The task page of ``target`` with a form's ``values`` given back (not submitted), or None when it is not a
        task page of this user's, or when they sent this very answer already. Another answer to an item they have
        answered since (in another tab) comes back refused, as ``P.submit`` refuses it, where it was dropped unsaid."""
        match = ITEM_PAGE.fullmatch(target)
        if match is None:
            return None
        pid, iid = (int(g) for g in match.groups())
        project = db.get(Project, pid) if 0 < pid <= INTEGER_MAX else None
        item = db.get(Item, iid) if 0 < iid <= INTEGER_MAX else None
        if project is None or item is None or item.project_id != pid or db.get(Assignment, (user.id, iid)) is None:
            return None
        stored = P.answer_of(db, user, item)
        if stored is not None:
            if P.repeats(project, item, stored, values):
                return None  # stored: nothing of it is lost
            status, message = 422, {"error": P.answered_already(stored)}
        context = task_context(db, user, project, item)
        context.update(values=page_values(values, "action"), **message)
        return page(request, "task.html", status, csrf=row.csrf, **context)

    @app.post("/projects/{pid}/items/{iid}")
    def task_submit(request: Request, pid: int, iid: int, form: dict = Depends(user_form)):
        with database() as db:
            user, row = login_required(request, db)
            if not S.same(form.get("csrf"), row.csrf):  # a page of an earlier session (logged in again since): give it back
                values = str_values(form)  # as sent: P.repeats compares them with what was stored
                error = P.FormError("csrf", "this page's CSRF token is of an earlier session (you logged in again "
                                            "since), so nothing was saved: what you wrote is below; check it and submit again")
                restored = restored_task(request, db, user, row, request.url.path, values, 403, error=error)
                if restored is not None:
                    return restored
                login_required(request, db, form=form)  # the Forbidden page, as before
            project = project_or_404(db, pid)
            item = assigned_item(db, user, project, iid)
            try:
                P.submit(db, user, project, item, form)
            except P.FormError as e:
                context = task_context(db, user, project, item)
                context.update(values={k: v for k, v in form.items() if isinstance(v, str)}, error=e)
                return page(request, "task.html", 422, csrf=row.csrf, **context)
        return redirect(f"/projects/{pid}/next")

    @app.get("/mywork")
    def my_work(request: Request):
        with database() as db:
            user, row = login_required(request, db)
            rows = db.execute(
                select(Annotation, Item, Project).join(Item, Item.id == Annotation.item_id).join(Project, Project.id == Item.project_id)
                .where(Annotation.user_id == user.id).order_by(Annotation.created_at.desc()).limit(500)
            ).all()
            from redline.app.quality import seconds_spent

            return page(request, "mywork.html", user=user, csrf=row.csrf, rows=rows, seconds_spent=seconds_spent)

    # ------------------------------------------------------------------ admin

    def admin_context(db, user: User, row: DBSessionRow, **extra) -> dict:
        projects = db.scalars(select(Project).order_by(Project.id)).all()
        users = db.scalars(select(User).order_by(User.name)).all()
        context = {"user": user, "csrf": row.csrf, "projects": [(p, P.progress(db, p)) for p in projects], "users": users,
                   "error": None, "notice": None, "values": {}}
        context.update(extra)
        return context

    @app.get("/admin")
    def admin(request: Request):
        with database() as db:
            user, row = login_required(request, db, role="admin")
            return page(request, "admin.html", **admin_context(db, user, row))

    @app.post("/admin/users")
    def admin_add_user(request: Request, form: dict = Depends(user_form)):
        with database() as db:
            user, row = login_required(request, db, role="admin", form=form)
            password = str(form.get("password") or "") or None
            generated = password is None
            if generated:
                password = S.generate_password()
            try:
                with db.begin_nested():
                    new = P.add_user(db, str(form.get("name") or ""), str(form.get("role") or ""), password)
            except P.FormError as e:
                return page(request, "admin.html", 422, **admin_context(db, user, row, error=e, values=str_values(form)))
            notice = f"added {new.role} {new.name}" + (f"; password (shown once): {password}" if generated else "")
            return page(request, "admin.html", **admin_context(db, user, row, notice=notice))

    @app.post("/admin/projects")
    def admin_create_project(request: Request, form: dict = Depends(user_form)):
        with database() as db:
            user, row = login_required(request, db, role="admin", form=form)
            try:
                with db.begin_nested():
                    project, job = create_from_form(db, form)
            except (P.FormError, RecordError, RedlineError) as e:
                error = e if isinstance(e, P.FormError) else P.FormError("file", str(e))
                return page(request, "admin.html", 422, **admin_context(db, user, row, error=error, values=str_values(form)))
            pid = project.id
        if job is not None:
            job.start()  # now that the project is committed
        return redirect(f"/admin/projects/{pid}")

    def create_from_form(db, form: dict) -> tuple[Project, threading.Thread | None]:
        """The project, and the job that will write its answers (not started) when a model writes them."""
        task_type = str(form.get("task_type") or "")
        overlap_raw = str(form.get("overlap") or "1").strip()
        if not (overlap_raw.isascii() and overlap_raw.isdigit()):
            raise P.FormError("overlap", f"annotators per item must be a whole number >= 1, got {overlap_raw!r}")
        prompts = uploads(form, "prompts")
        if not prompts:
            raise P.FormError("prompts", "choose a file of prompts (JSONL)")
        model = str(form.get("generate") or "").strip()
        with tempfile.TemporaryDirectory(prefix="redline-upload-") as tmp:
            prompts_path = save_upload(prompts[0], tmp)
            rows = P.read_prompts(prompts_path, with_answers=not model)
            if model:
                settings = P.generation_settings(form, task_type)
                project = P.create_project(db, str(form.get("name") or ""), task_type, [], guidelines=str(form.get("guidelines") or ""),
                                           overlap=int(overlap_raw), status="generating",
                                           status_detail=f"{settings['k']} answer(s) per prompt from {model}")
                project.generator = model
                db.flush()
                return project, new_job(generate_job, project.id, rows, model, settings)
            response_paths = [save_upload(f, tmp) for f in uploads(form, "responses")]
            P.attach_responses(rows, response_paths, prompts_path.name)
            items = P.plan_items(task_type, rows, prompts_path.name)
        return P.create_project(db, str(form.get("name") or ""), task_type, items,
                                guidelines=str(form.get("guidelines") or ""), overlap=int(overlap_raw)), None

    def engine_for(model: str):
        with engines_lock:
            if model not in app.state.engines:
                loader = app.state.engine_loader
                if loader is None:
                    from redline.generation import load_engine as loader
                app.state.engines[model] = loader(model)
            return app.state.engines[model]

    def new_job(fn, *args) -> threading.Thread:
        """Work too long for a request (a model writing answers or drafts), in a thread that records
        its outcome in the project's status; the project page reloads itself until it is done. The
        caller starts it once its transaction has committed the project the job reads."""
        thread = threading.Thread(target=fn, args=args, daemon=True)
        app.state.jobs.append(thread)
        return thread

    def finish(pid: int, status: str, detail: str) -> None:
        with database() as db:
            project = db.get(Project, pid)
            project.status, project.status_detail = status, detail

    def generate_job(pid: int, rows, model: str, settings: dict) -> None:
        try:
            engine = engine_for(model)
            P.generate_answers(rows, engine, settings["k"], source=model, temperature=settings["temperature"],
                               max_new_tokens=settings["max_new_tokens"], seed=settings["seed"])
            with database() as db:
                project = db.get(Project, pid)
                kept, notes = P.drop_short(project.task_type, rows)
                items = P.plan_items(project.task_type, kept)
                P.add_items(db, project, items)
                project.status = "ready"
                project.status_detail = f"{len(items)} items from {len(kept)} prompts; answers by {model}" + (
                    f"; {len(notes)} prompt(s) left out: " + "; ".join(notes[:5]) if notes else "")
        except Exception as e:  # the page shows it; nothing was added
            finish(pid, "failed", f"generating answers with {model} failed: {e}")

    def drafts_job(pid: int, model: str, max_new_tokens: int) -> None:
        try:
            engine = engine_for(model)
            with database() as db:
                name = db.get(Project, pid).name
            result = P.make_drafts(database, name, engine, model, max_new_tokens=max_new_tokens)  # no lock held meanwhile
            finish(pid, "ready", f"drafts by {model}: {result['items']} items, {result['parsed']} with a revision")
        except Exception as e:
            finish(pid, "ready", f"drafts by {model} failed: {e}")

    def wait_jobs(timeout: float = 600) -> None:
        """Wait for every started job (tests; a server never needs to)."""
        for thread in list(app.state.jobs):
            if thread.ident is not None:
                thread.join(timeout)

    app.state.wait_jobs = wait_jobs

    @app.get("/admin/projects/{pid}")
    def admin_project(request: Request, pid: int):
        with database() as db:
            user, row = login_required(request, db, role="admin")
            project = project_or_404(db, pid)
            return page(request, "project.html", **project_context(db, user, row, project))

    def project_context(db, user, row, project, **extra) -> dict:
        from redline.app.quality import project_quality

        rows = db.execute(select(Annotation, Item, User.name).join(Item, Item.id == Annotation.item_id)
                          .join(User, User.id == Annotation.user_id).where(Item.project_id == project.id)).all()
        context = {"user": user, "csrf": row.csrf, "project": project, "progress": P.progress(db, project),
                   "quality": project_quality(rows, project.task_type), "error": None, "notice": None,
                   "n_gold": db.scalar(select(P.func.count()).select_from(Item).where(Item.project_id == project.id, Item.gold.is_not(None))),
                   "n_drafts": db.scalar(select(P.func.count()).select_from(Item).where(Item.project_id == project.id, Item.draft.is_not(None)))}
        context.update(extra)
        return context

    @app.get("/admin/projects/{pid}/export")
    def admin_export(request: Request, pid: int, kind: str = ""):
        with database() as db:
            login_required(request, db, role="admin")
            project = project_or_404(db, pid)
            return export_response(db, project, kind)

    @app.post("/admin/projects/{pid}/import")
    def admin_import(request: Request, pid: int, form: dict = Depends(user_form)):
        with database() as db:
            user, row = login_required(request, db, role="admin", form=form)
            project = project_or_404(db, pid)
            files = uploads(form, "records")
            try:
                if not files:
                    raise P.FormError("records", "choose a file of records (JSONL)")
                with db.begin_nested(), tempfile.TemporaryDirectory(prefix="redline-upload-") as tmp:
                    n = P.import_records(db, project, save_upload(files[0], tmp))
            except (P.FormError, RecordError, RedlineError) as e:
                error = e if isinstance(e, P.FormError) else P.FormError("records", str(e))
                return page(request, "project.html", 422, **project_context(db, user, row, project, error=error))
            return page(request, "project.html", **project_context(db, user, row, project, notice=f"imported {n} records"))

    @app.post("/admin/projects/{pid}/drafts")
    def admin_drafts(request: Request, pid: int, form: dict = Depends(user_form)):
        with database() as db:
            user, row = login_required(request, db, role="admin", form=form)
            project = project_or_404(db, pid)
            model = str(form.get("critic") or "").strip()
            raw_tokens = str(form.get("max_new_tokens") or "512").strip()
            if project.status != "ready":  # its job would mark it ready when done: a failed project, or one still generating
                error = P.FormError("critic", f"the project is {project.status}; drafts are written for a ready project")
                return page(request, "project.html", 409, **project_context(db, user, row, project, error=error))
            error = None
            if project.task_type != "critique":
                error = P.FormError("critic", "drafts are for critique projects")
            elif not model:
                error = P.FormError("critic", "name a critic run folder or model")
            elif not (raw_tokens.isascii() and raw_tokens.isdigit()) or int(raw_tokens) < 1:
                error = P.FormError("max_new_tokens", f"a whole number >= 1, got {raw_tokens!r}")
            if error:
                return page(request, "project.html", 422, **project_context(db, user, row, project, error=error))
            project.status, project.status_detail = "drafting", f"the critic {model} is writing drafts"
            job = new_job(drafts_job, pid, model, int(raw_tokens))
        job.start()
        return redirect(f"/admin/projects/{pid}")

    @app.post("/admin/token")
    def admin_token(request: Request, form: dict = Depends(user_form)):
        with database() as db:
            user, row = login_required(request, db, role="admin", form=form)
            token = P.new_api_token(db, user)
            return page(request, "admin.html", **admin_context(db, user, row, notice=f"API token for {user.name} (shown once): {token}"))

    @app.get("/api/projects/{name}/export")
    def api_export(request: Request, name: str, kind: str = ""):
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        with database() as db:
            user = P.user_for_token(db, token)
            if user is None:
                return PlainTextResponse("a valid API token is needed: Authorization: Bearer TOKEN", status_code=401,
                                         headers={"WWW-Authenticate": "Bearer"})
            if user.role != "admin":
                return PlainTextResponse("this token's user is not an admin", status_code=403)
            project = db.scalar(select(Project).where(Project.name == name))
            if project is None:
                return PlainTextResponse(f"no project {name!r}", status_code=404)
            return export_response(db, project, kind)

    def export_response(db, project: Project, kind: str) -> Response:
        try:
            records = P.export_records(db, project, kind)
        except RedlineError as e:
            return PlainTextResponse(str(e), status_code=400)
        if not records:  # an empty file is one no reader accepts, as the CLI says
            return PlainTextResponse(f"nothing to export: project {project.name!r} has no submitted {kind} annotations "
                                     "yet", status_code=409)
        body = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
        filename = f"{project.name}-{kind}.jsonl"
        return Response(body, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    app.state.export_response = export_response
    return app


def uploads(form: dict, name: str) -> list:
    """The files chosen in the form's field ``name``; none if it came as text (a hand-made request), not a file."""
    value = form.get(name)
    return [f for f in value if f.filename] if isinstance(value, list) else []


def str_values(form: dict) -> dict:
    return {k: v for k, v in form.items() if isinstance(v, str) and k not in ("csrf", "password")}


def page_values(form, without: str) -> dict:
    """A form's text fields but ``without``, as a page holds them: a browser sends each line end as "\\r\\n"."""
    return {k: v.replace("\r\n", "\n") for k, v in form.items() if isinstance(v, str) and k != without}


def safe_next(target: str) -> str:
    """Only a path on this site (no scheme, no host, no '//'): an open redirect is refused."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def save_upload(upload, folder: str) -> Path:
    """An uploaded file under its own (cleaned) name, so errors name the file the admin chose."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(upload.filename or "upload.jsonl")) or "upload.jsonl"
    path = Path(folder) / name
    n = 1
    while path.exists():
        path = Path(folder) / f"{n}-{name}"
        n += 1
    upload.file.seek(0)
    with open(path, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            out.write(chunk)
    return path


def prompt_display(prompt) -> str:
    """A prompt as text for the page: the string, or each chat message as 'role: content'."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"**{m['role']}**: {m['content']}" for m in prompt)
