"""One redline process at a time on an output (redline.outlock): a second is refused in one line naming the first,
before anything is written or removed; a lock a killed run left is taken over and the run resumes."""

import json
import os
import signal
import subprocess
import sys

import pytest

from redline import RedlineError
from redline.cli import main
from redline.outlock import acquire, lock_path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock: runs go unlocked")

PROMPTS = [{"id": f"t{i}", "prompt": f"Write about topic {i}."} for i in range(2)]
HOLD = "import sys, time; from redline.outlock import acquire; acquire(sys.argv[1], 'train sft'); print('held', flush=True); time.sleep(60)"


@pytest.fixture
def holder():
    """Start a process that locks an output as `redline train sft` would; yields a function taking OUT."""
    started = []

    def hold(out):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
        started.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield hold
    for p in started:
        p.kill()
        p.wait()


def generate(prompts, out, *extra):
    return main(["generate", "--model", "tiny-random", "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "2", "--device", "cpu", *extra])


def test_a_second_process_on_one_output_is_refused_in_one_line_naming_the_first(jsonl, tmp_path, holder, capsys):
    """Two `generate` runs into one file each found it empty and appended every response: each record twice."""
    out = tmp_path / "out.jsonl"
    first = holder(out)
    assert generate(jsonl(PROMPTS), out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"redline: error: --out {out} is in use by another redline process")
    assert f"`redline train sft`, pid {first.pid}," in err and str(lock_path(out)) in err
    assert not out.exists() and not list(tmp_path.glob("out.jsonl.*"))  # no fingerprint written, nothing appended


def test_a_second_process_s_overwrite_does_not_remove_the_folder_the_first_writes(jsonl, tmp_path, holder, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "redline.json").write_text("{}")
    holder(run)
    data = jsonl([{"prompt": "p", "response": "r"}])
    assert main(["train", "sft", "--model", "tiny-random", "--data", str(data), "--out", str(run), "--overwrite"]) == 2
    assert "is in use by another redline process" in capsys.readouterr().err
    assert [p.name for p in run.iterdir()] == ["redline.json"]


def test_a_lock_left_by_a_killed_run_is_taken_over_and_removed_at_the_end(jsonl, tmp_path, holder):
    out = tmp_path / "out.jsonl"
    first = holder(out)
    os.kill(first.pid, signal.SIGKILL)  # kill -9: the file stays, the kernel drops the lock
    first.wait()
    assert json.loads(lock_path(out).read_text())["pid"] == first.pid
    assert generate(jsonl(PROMPTS), out) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["t0", "t1"]
    assert not lock_path(out).exists()
    assert generate(jsonl(PROMPTS), out) == 0  # and the next run in this process takes it again


def test_a_run_sent_sigterm_ends_as_an_interrupted_one_its_lock_removed(jsonl, tmp_path, monkeypatch, capsys):
    """`kill PID` (a scheduler's stop, torchrun ending a failed launch's other processes) killed the command at once:
    its `.NAME.lock` stayed (held on by any process it had started, which refused the next run) and so did the
    fingerprint of a run that wrote nothing. It ends as Ctrl-C does, with 143, and the handler is put back after."""
    from redline import cli
    from redline.respond import GenerateConfig

    out = tmp_path / "out.jsonl"

    def terminated(args):
        cli.configured(GenerateConfig, args, "generate", file=True)
        assert lock_path(out).exists()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), "SIGTERM would kill the process where it stands"
        handler(signal.SIGTERM, None)  # what the signal does in the main thread, without killing pytest
        raise AssertionError("SIGTERM did not end the command")

    monkeypatch.setattr(cli, "_generate", terminated)
    assert generate(jsonl(PROMPTS), out) == 143
    assert capsys.readouterr().err.splitlines()[-1] == "redline: terminated (SIGTERM)"
    assert not lock_path(out).exists() and not list(tmp_path.glob("out.jsonl*"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.setenv("RANK", "1")  # a launched process other than the main one holds no lock: the default stays
    with cli.sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_lock_is_refused_to_another_open_in_one_process_until_released(tmp_path):
    out = tmp_path / "a" / "run"
    lock = acquire(out, "revise")
    with pytest.raises(RedlineError, match=r"`redline revise`, pid \d+, since"):
        acquire(tmp_path / "a" / "." / "run", "revise")  # the same output, spelt another way
    lock.release()
    assert not (tmp_path / "a").exists()  # the folder made only to hold the lock, left empty, is removed
    acquire(out, "revise").release()


def test_a_run_refused_after_the_lock_leaves_no_folder_it_made(tmp_path, capsys):
    out = tmp_path / "new" / "deep" / "out.jsonl"
    assert generate(tmp_path / "missing.jsonl", out) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_file_system_that_cannot_lock_runs_unlocked_and_leaves_no_lock_file(tmp_path, monkeypatch):
    """NFS without lockd answers flock with ENOLCK (some FUSE mounts EOPNOTSUPP): every command was refused with
    '[Errno 37] No locks available' and left an empty .NAME.lock; it goes on unlocked, as the docstring says."""
    import errno
    import fcntl

    def unsupported(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    assert acquire(tmp_path / "run", "train sft") is None
    assert list(tmp_path.iterdir()) == []
