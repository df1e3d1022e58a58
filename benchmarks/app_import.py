"""`redline app import` of N preference records into a fresh SQLite project, three ways side by side:

- ``naive``: the whole file read into records first, then one ``add_items`` per record (a max(position)
  query and a flush each, and an autoflush for its annotation): the import before 2ee2c84;
- ``batched, whole file``: the whole file read into records first, then added IMPORT_BATCH (1000) at a
  time: the import from 2ee2c84 until it streamed;
- ``redline``: ``projects.import_records`` as it is: the file read a record at a time, checked in one pass
  and added IMPORT_BATCH at a time in a second, so no more than a batch of records is held.

The first two are written here from the same checks (``projects._check_imported``), so the reading and the
adding are all that differ. Each case runs in a fresh Python process on its own database. CPU is the
import and its commit in ``time.process_time`` (the machine is shared: wall time is noisy); memory is the
process's resident set as Linux reports it, its peak (VmHWM) over the import less what it held before
(VmRSS). The rows each case stored are hashed: a case whose rows differ from the others' at the same N
fails the run.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/app_import.py --out benchmarks/results/app_import.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("naive", "batched, whole file", "redline")


def write_pairs(path: Path, n: int) -> None:
    """N preference records of a realistic size (a ~100-character prompt, ~400-character answers), 7 annotators."""
    with path.open("w") as f:
        for i in range(n):
            answer = " ".join(f"word{(i * 7 + j) % 1000}" for j in range(50))
            f.write(json.dumps({"id": f"r{i}", "prompt": f"Question {i}: explain topic {i % 97} in plain words, with an "
                                "example and a short summary at the end.", "chosen": f"Good. {answer}",
                                "rejected": f"Bad. {answer}", "meta": {"annotator": f"ann{i % 7}", "seconds": i % 60}}) + "\n")


def rss(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024  # MiB
    raise RuntimeError(f"no {field} in /proc/self/status")


def whole_file_import(db, project, path: str, batch: int, default: str = "imported") -> int:
    """The import that held the whole file: every record read, then checked, then added ``batch`` at a time
    (1: one add_items, and one max(position) query and flush, per record)."""
    from redline.app import projects as P
    from redline.app.db import Annotation
    from redline.records import iter_raw, read_records

    kind = P.IMPORT_KINDS[project.task_type]
    records = read_records(path, kind)
    lines = [number for number, _ in iter_raw(path)]
    given: dict = {}
    users: dict = {}
    for record, line in zip(records, lines):
        P._check_imported(db, record, f"{path}:{line}", default, given, users)
    for name, raw in given.items():
        if users[name] is None:
            users[name] = P.add_user(db, name, "annotator", None)
            users[name].imported_as = raw
    user_of = {raw: users[name] for name, raw in given.items()}
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        planned = [P._imported_item(record) for record in chunk]
        made = P.add_items(db, project, [item for item, _ in planned])
        db.add_all([Annotation(item_id=item.id, user_id=user_of[P._annotator(record.meta, default)].id, status="submitted",
                               payload=payload, info={}, reason="", seconds=P._seconds(record.meta), imported=True,
                               created_at=P.now()) for item, record, (_, payload) in zip(made, chunk, planned)])
        db.flush()
    return len(records)


def stored_digest(sessions) -> str:
    """A hash of every item and annotation the measured import stored, in position order (ids left out: each database
    counts its own)."""
    from sqlalchemy import select

    from redline.app.db import Annotation, Item, Project, User

    digest = hashlib.sha256()
    with sessions() as db:
        rows = db.execute(select(Item.position, Item.external_id, Item.prompt, Item.meta, Item.answers, User.name,
                                 Annotation.status, Annotation.payload, Annotation.seconds, Annotation.imported)
                          .join(Annotation, Annotation.item_id == Item.id).join(User, User.id == Annotation.user_id)
                          .join(Project, Project.id == Item.project_id).where(Project.name == "bench")
                          .order_by(Item.position))
        for row in rows:
            digest.update(json.dumps(list(row), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def child(case: str, path: str, db_url: str) -> dict:
    """One import into a fresh database, measured; its row of the table."""
    from redline.app import projects as P
    from redline.app.db import open_database

    def run(name: str, source: str) -> int:
        with sessions.begin() as db:
            project = P.create_project(db, name, "pair", [])
            if case == "redline":
                return P.import_records(db, project, source)
            return whole_file_import(db, project, source, 1 if case == "naive" else P.IMPORT_BATCH)

    sessions = open_database(db_url)
    warm = Path(path).with_name("warm.jsonl")
    with open(path) as f:
        warm.write_text(f.readline() + f.readline())
    run("warm-up", str(warm))  # the modules and statements an import first meets, loaded before it is measured
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    before = rss("VmRSS")
    cpu = time.process_time()
    n = run("bench", path)
    cpu = time.process_time() - cpu
    peak = rss("VmHWM") - before
    return {"records": n, "cpu_s": round(cpu, 2), "ms_per_record": round(1000 * cpu / n, 3),
            "peak_growth_mib": round(peak, 1), "rows": stored_digest(sessions)}


def measure(case: str, path: Path, work: Path) -> dict:
    db = work / f"{case.replace(' ', '_').replace(',', '')}-{path.stem}.db"
    done = subprocess.run([sys.executable, __file__, "--child", case, str(path), f"sqlite:///{db}"],
                          capture_output=True, text=True)
    if done.returncode:  # say why, not a CalledProcessError naming no reason
        sys.exit(f"{case} on {path.name} failed:\n{done.stderr[-3000:]}")
    db.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 40000], help="records per file")
    parser.add_argument("--naive-max", type=int, default=5000, help="the naive case runs on files up to this size only")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/app_import.json"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    if min(args.sizes) < 1:
        parser.error("--sizes: a file needs at least one record")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.sizes:
            path = work / f"pairs{n}.jsonl"
            write_pairs(path, n)
            for case in CASES:
                if case == "naive" and n > args.naive_max:
                    continue
                row = {"case": case, "n": n, "file_mib": round(path.stat().st_size / 2**20, 1), **measure(case, path, work)}
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
    for n in args.sizes:
        digests = {r["rows"] for r in rows if r["n"] == n}
        if len(digests) != 1:
            sys.exit(f"the cases stored different rows for {n} records: {digests}")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "database": "sqlite (file, WAL)", "rows": rows}, indent=2) + "\n")
    print("| records | file MiB | case | CPU s | ms/record | peak resident growth MiB | rows (hash) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']} | {r['file_mib']} | {r['case']} | {r['cpu_s']} | {r['ms_per_record']} | {r['peak_growth_mib']} | "
              f"{r['rows']} |")


if __name__ == "__main__":
    main()
