"""One redline process at a time on an output: an advisory lock beside ``--out``.

Two processes on one output mix their work, and nothing else stops them: two ``generate`` runs into one file
each found it empty and appended every response (each record twice, interleaved, and the file then refused as
another run's), a second command with other settings took a folder whose first run had written only its
fingerprint, and a second run's ``--overwrite`` removed the folder the first was writing into. The CLI takes
this lock before it claims ``--out`` (``cli.configured``) and holds it until the command ends; a second
process is refused at once, before any model loads, naming the one that holds it.

The lock is ``flock`` on ``.NAME.lock`` beside OUT (beside, not inside: ``--overwrite`` removes the folder, and
what a folder holds decides whether it holds a run). The kernel drops a flock when its process ends, however
it ends, so the file a killed run (kill -9) leaves is a stale lock by construction: the next run takes it over
and resumes. A run that ends removes the file, one stopped by Ctrl-C or SIGTERM too (``cli.main``). Where OUT's
folder cannot hold the file (read-only), its file system cannot lock it (NFS without lockd: ENOLCK; some FUSE
mounts) or the platform has no ``flock`` (Windows), the run goes on unlocked, as before.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from redline import RedlineError


def lock_path(out: str | os.PathLike) -> Path:
    """``.NAME.lock`` beside ``out``, by its resolved path: ``runs/x``, ``./runs/x/`` and a link to it share one."""
    out = Path(out).resolve()
    return out.with_name(f".{out.name}.lock")


class OutputLock:
    """A held lock: ``release`` removes its file and drops it (once; ending the process drops it too)."""

    def __init__(self, path: Path, fd: int, made: list[Path]):
        self.path, self.fd, self.made = path, fd, made

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):  # removed while held, so a process waiting on it retries (acquire)
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        for folder in reversed(self.made):  # folders made only to hold the lock, left empty by a refused run
            try:
                folder.rmdir()
            except OSError:
                break


def acquire(out: str | os.PathLike, command: str) -> OutputLock | None:
    """Lock ``out`` for this process, or raise a RedlineError naming the process that holds it. None where no
    lock can be taken (the module docstring)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = lock_path(out)
    made = [p for p in reversed(path.parents) if not p.exists()]
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None  # a read-only folder: nothing to write a lock into, nor, if OUT is there, much to lose
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RedlineError(f"--out {out} is in use by another redline process ({_describe(holder)}; lock {path}): "
                               "two runs on one output would mix their records; wait for it to end, or choose another "
                               "--out") from None
        except OSError:  # a file system without flock (ENOLCK on NFS without lockd, EOPNOTSUPP, ENOSYS on some FUSE)
            _leave_unlocked(fd, path)
            return None
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder ended and removed it between our open and our lock: take the file there now
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": f"redline {command}",
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)  # a stale lock's holder, replaced
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return OutputLock(path, fd, made)


def _leave_unlocked(fd: int, path: Path) -> None:
    """Close a lock file that cannot be locked, and remove it where no holder is written in it (this process's
    new file, or another's that could not lock it either): the run goes on unlocked and leaves nothing behind."""
    try:
        if os.fstat(fd).st_size == 0 and _same_file(fd, path):
            path.unlink()
    except OSError:
        pass
    os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    """```redline train sft`, pid 1234, since ...``, from what the holder wrote; a lock not yet written is new."""
    if not holder.get("pid"):
        return "one that has just started"
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    ended = ""
    if not where and not _alive(holder["pid"]):
        ended = ", which has ended: a process it started holds the lock"
    return f"`{holder.get('command', 'redline')}`, pid {holder['pid']}{where}, since {holder.get('since', '?')}{ended}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, TypeError):
        return True
    return True
