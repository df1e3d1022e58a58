"""The feedback app's tables, and opening a database at the schema this redline knows.

SQLAlchemy 2 models; Alembic owns the schema (``migrations/``), so ``open_database`` upgrades an
older database in place and refuses one whose schema is newer than this redline (its revision is
not among ours). Text that the records hold (prompts, answers, payloads) is stored as JSON text, so
a record round-trips exactly, on SQLite and PostgreSQL alike.

SQLite is the embedded default. It runs in WAL mode (readers never wait for the writer) with a
busy timeout, and every transaction begins ``IMMEDIATE``: it takes the write lock at its start,
so two concurrent requests queue instead of failing with "database is locked" when both try to
upgrade a read to a write halfway through.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from redline import RedlineError

TASK_TYPES = ("critique", "rank", "demonstration", "pair")
# The largest value an Integer column holds (PostgreSQL's is 32-bit): an id or a count past it fails to bind, a 500
INTEGER_MAX = 2**31 - 1
# The record kind each task type exports (a ranking project also exports its best-vs-worst pairs).
EXPORT_KINDS = {
    "critique": ("feedback",),
    "rank": ("ranking", "preference"),
    "demonstration": ("demonstration",),
    "pair": ("preference",),
}
ROLES = ("admin", "annotator")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # stored naive, always UTC


class JSONText(TypeDecorator):
    """Any JSON value, stored as text (portable; SQLite has no JSON column type)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(200))  # None: cannot log in (imported work, bots)
    api_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)  # sha256 of the export API token
    # meta.annotator as an import gave it ("Ann B" for the user Ann-B): a later import's "Ann-B" is someone else
    imported_as: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Session(Base):
    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    task_type: Mapped[str] = mapped_column(String(16))
    guidelines: Mapped[str] = mapped_column(Text, default="")
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="ready")  # ready | generating | failed
    status_detail: Mapped[str] = mapped_column(Text, default="")
    critic: Mapped[str | None] = mapped_column(String(500))  # the critic that wrote the drafts
    generator: Mapped[str | None] = mapped_column(String(500))  # the model that wrote the answers
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Item(Base):
    """One unit of work: a prompt and the answers to critique, rank or compare (none to demonstrate)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("project_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(200))
    prompt: Mapped[Any] = mapped_column(JSONText)  # a string or a list of chat messages
    meta: Mapped[Any] = mapped_column(JSONText, default=dict)
    answers: Mapped[Any] = mapped_column(JSONText, default=list)  # [{"text", "source"}]
    gold: Mapped[Any] = mapped_column(JSONText, nullable=True)  # the known answer: {"ranks": [...]} or {"choice": "a"}; None
    draft: Mapped[Any] = mapped_column(JSONText, nullable=True)  # {"critique", "revision", "model"} from a critic; None


class Assignment(Base):
    """An item handed to an annotator: when the task page was first served (time spent starts here)."""

    __tablename__ = "assignments"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Annotation(Base):
    """One annotator's answer to one item (submitted, skipped or flagged): at most one each."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # submitted | skipped | flagged
    payload: Mapped[Any] = mapped_column(JSONText, default=dict)  # the answer: critique/revision, ranks, ...
    info: Mapped[Any] = mapped_column(JSONText, default=dict)  # draft use, edit distances
    reason: Mapped[str] = mapped_column(Text, default="")  # why skipped or flagged
    seconds: Mapped[float | None] = mapped_column(Float)  # time spent; None: unknown (an import without meta.seconds)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


# ----------------------------------------------------------------------------- opening


def migrations_dir() -> Path:
    return Path(__file__).parent / "migrations"


def _alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def make_engine(url: str) -> Engine:
    """An SQLAlchemy engine for ``url``; SQLite gets WAL, a busy timeout and IMMEDIATE transactions."""
    try:
        is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError, ValueError) as e:
        raise RedlineError(f"database URL {url!r} is not usable: {e}") from None
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill in WAL mode
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def schema_heads() -> tuple[set[str], set[str]]:
    """(every revision this redline knows, the head revisions)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    return {rev.revision for rev in script.walk_revisions()}, set(script.get_heads())


def database_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        return row[0] if row else None


def open_database(url: str, upgrade: bool = True) -> sessionmaker:
    """Connect, refuse a newer schema, migrate an older one to ours; a sessionmaker for it.

    Every failure is one ``RedlineError`` line: an unreachable URL, a file that is not a database, a schema
    newer than this redline.
    """
    engine = make_engine(url)
    safe_url = engine.url.render_as_string(hide_password=True)
    try:
        current = database_revision(engine)
    except DBAPIError as e:  # unreachable (OperationalError), or a file that is no database (DatabaseError)
        reason = str(e.orig).strip().splitlines()[0] if getattr(e, "orig", None) else str(e).splitlines()[0]
        raise RedlineError(f"cannot open database {safe_url}: {reason}") from None
    known, heads = schema_heads()
    if current is not None and current not in known:
        raise RedlineError(
            f"database {safe_url} has schema revision {current}, newer than this redline knows "
            f"(up to {', '.join(sorted(heads))}); upgrade redline to open it"
        )
    if upgrade and current not in heads:
        from alembic import command

        command.upgrade(_alembic_config(engine), "head")
    return sessionmaker(engine, expire_on_commit=False)


def upgrade_to(url: str, revision: str) -> None:
    """Migrate a database to one revision (tests use it to make an older database)."""
    from alembic import command

    command.upgrade(_alembic_config(make_engine(url)), revision)
