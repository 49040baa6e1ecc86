"""Scale benchmark: the catalog-wide operations at 1,000 / 10,000 / 100,000 episodes.

    python bench/scale.py [--sizes 1000,10000,100000] [--backends sqlite,postgres]
                          [--code DIR] [--label after] [--out bench/results/scale.json]

Builds, per size and backend, two catalogs by bulk SQL inserts (no pipeline runs):

* ``uploads``: N tiny files waiting in ``uploads/``, each registered in the catalog as an
  episode whose run has started (the steady state of a big drop: nothing new);
* ``history``: N episodes, 95 % finished long ago (eligible for the purge), the rest
  within the retention, failed or still processing; raw files for the 1,000 oldest.

Each measurement runs in a fresh child process (``measure``) and reports its wall time
and the child's peak RSS (``imports MB``: a child that only imports the project, the floor
under every other column): the upload sensor's tick (cursor of the previous tick, and
without a cursor as ``pod run`` evaluates it) and cursor size, the purge plan
(``max_deletions`` 1,000), the purge sensor's tick, and ``pod status --json``.
``--code DIR`` measures another checkout of the project (``git worktree add``) with the
same fixtures: that is how the "before" column was taken.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_CHUNK = 5_000
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(hours=24)
RAW_FILES = 1_000


# -- fixtures ---------------------------------------------------------------------------


def _database(backend: str, name: str, scratch: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{scratch / (name + '.db')}"
    import sqlalchemy as sa

    admin = sa.create_engine(_PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    import sqlalchemy as sa

    from pod_resources.catalog import dispose_engines

    dispose_engines()
    name = url.rsplit("/", 1)[-1]
    admin = sa.create_engine(_PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _insert(url: str, table, rows: list[dict]) -> None:
    from pod_resources.catalog import Catalog

    engine = Catalog(url).engine
    with engine.begin() as conn:
        for start in range(0, len(rows), _CHUNK):
            conn.execute(table.insert(), rows[start : start + _CHUNK])


def _episode(index: int, *, status: str, changed_at: datetime, name: str, generation: int) -> dict:
    return {
        "episode_id": f"ep-{index:06d}",
        "source_name": name,
        "source_generation": generation,
        "content_hash": hashlib.md5(name.encode(), usedforsecurity=False).hexdigest(),
        "title": f"Episode {index}",
        "status": status,
        "created_at": changed_at - timedelta(hours=1),
        "updated_at": changed_at,
        "status_changed_at": changed_at,
        "last_error": "raw_audio: not an audio file: " + "x" * 120 if status == "error" else None,
        "error_step": "raw_audio" if status == "error" else None,
        "metrics": {"duration_s": 1800.0, "fillers_removed": 12},
        "artifacts": {"raw_audio": f"file:///store/episodes/ep-{index:06d}/raw.wav"},
        "version": 1,
    }


def build_uploads(url: str, store_root: Path, count: int) -> None:
    """``count`` files in ``uploads/``, all registered, their runs started."""
    from pod_resources.catalog.models import EpisodeRow, UploadRow

    uploads = store_root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    sidecars = store_root / ".pod-meta" / "uploads"
    sidecars.mkdir(parents=True, exist_ok=True)
    empty_md5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()
    episodes, records = [], []
    for index in range(count):
        name = f"upload-{index:06d}.wav"
        path = uploads / name
        path.write_bytes(b"")
        generation = path.stat().st_mtime_ns
        (sidecars / f"{name}.json").write_text(json.dumps({
            "generation": generation, "md5": empty_md5, "content_type": "audio/wav",
            "metadata": {"title": f"Episode {index}"}}))
        seen_at = NOW - timedelta(seconds=count - index)
        episodes.append(
            _episode(index, status="processing", changed_at=seen_at + timedelta(seconds=1),
                     name=name, generation=generation)
        )
        episodes[-1]["created_at"] = seen_at
        records.append({
            "object_name": name, "generation": generation,
            "content_hash": episodes[-1]["content_hash"], "episode_id": episodes[-1]["episode_id"],
            "duplicate_of": None, "seen_at": seen_at,
        })
    _insert(url, EpisodeRow.__table__, episodes)
    _insert(url, UploadRow.__table__, records)


def _history_status(index: int) -> tuple[str, datetime]:
    kind = index % 20
    if kind == 0:
        return "processed", NOW - timedelta(hours=2)
    if kind == 1:
        return "error", NOW - timedelta(days=3)
    if kind == 2:
        return "processing", NOW - timedelta(minutes=5)
    status = "published" if kind % 2 else "processed"
    return status, NOW - timedelta(days=400) + timedelta(seconds=index)


def build_history(url: str, store_root: Path, count: int) -> None:
    """``count`` episodes of a long history; raw files for the oldest eligible ones."""
    from pod_resources.catalog.models import EpisodeRow

    rows = []
    raw_left = RAW_FILES
    for index in range(count):
        status, changed_at = _history_status(index)
        rows.append(_episode(index, status=status, changed_at=changed_at,
                             name=f"show-{index:06d}.wav", generation=1_000 + index))
        if raw_left and changed_at < NOW - RETENTION and status != "error":
            folder = store_root / "episodes" / f"ep-{index:06d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "raw.wav").write_bytes(b"RIFF")
            raw_left -= 1
    _insert(url, EpisodeRow.__table__, rows)


# -- measurements (in a child process) ------------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak RSS since it started (``VmHWM``; ``ru_maxrss`` would carry the
    parent's peak over the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resources(url: str, store_root: Path):
    from pod_resources.catalog import CatalogResource
    from pod_resources.storage import LocalObjectStore

    store = LocalObjectStore(root=str(store_root))
    return store, CatalogResource(database_url=url)


def _upload_tick(url: str, store_root: Path, cursor: str | None) -> dict:
    import dagster as dg

    from pod_sensors.uploads import build_upload_sensor

    store, catalog = _resources(url, store_root)
    if cursor == "full":  # the old code's steady cursor: every handled name still listed
        cursor = json.dumps({i.key.removeprefix("uploads/"): i.generation
                             for i in store.list("uploads/")}, sort_keys=True)
    sensor = build_upload_sensor()
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"store": store, "catalog": catalog}
        ) as context:
            result = sensor(context)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "cursor_bytes": len((result.cursor or "").encode()),
            "cursor": result.cursor, "runs": len(result.run_requests or [])}


def _purge_plan(url: str, store_root: Path) -> dict:
    from pod_assets.purge import plan_purge

    store, catalog = _resources(url, store_root)
    started = time.perf_counter()
    plan = plan_purge(catalog.get_catalog(), store, now=NOW, retention=RETENTION,
                      max_deletions=1000)
    return {"seconds": time.perf_counter() - started, "planned": len(plan.eligible)}


def _purge_tick(url: str, store_root: Path) -> dict:
    import dagster as dg

    from pod_sensors.purge import build_purge_sensor

    store, catalog = _resources(url, store_root)
    sensor = build_purge_sensor()
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        with dg.build_sensor_context(instance=instance, resources={"catalog": catalog}) as context:
            result = sensor(context)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "runs": len(result.run_requests or [])}


def measure(args: argparse.Namespace) -> None:
    store_root = Path(args.store)
    if args.op == "upload_tick":
        out = _upload_tick(args.db, store_root, args.cursor)
    elif args.op == "purge_plan":
        out = _purge_plan(args.db, store_root)
    elif args.op == "purge_tick":
        out = _purge_tick(args.db, store_root)
    elif args.op == "status_json":
        out = _status_json(args.db, store_root)
    elif args.op == "baseline":  # the imports every measurement pays before any work
        import pod_assets.purge, pod_pipeline.cli, pod_pipeline.definitions  # noqa: E401, F401
        import pod_sensors.uploads  # noqa: F401

        out = {"seconds": 0.0}
    else:
        raise SystemExit(f"unknown op {args.op}")
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(out))


def _child(code: Path, *argv: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        env=env, cwd=code, capture_output=True, text=True, check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{argv}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class _CountingSink:
    """Stands in for stdout: counts what ``pod status --json`` writes, keeps nothing."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, text: str) -> int:
        self.size += len(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


def _status_json(url: str, store_root: Path) -> dict:
    """``pod status --json`` as a user runs it (its ``main``): time and bytes out."""
    from pod_pipeline.cli import main as pod

    os.environ.update({"POD_HOME": str(store_root.parent / "home"), "POD_DATABASE_URL": url,
                       "POD_STORAGE_URL": store_root.as_uri()})
    sink, stdout = _CountingSink(), sys.stdout
    started = time.perf_counter()
    sys.stdout = sink
    try:
        code = pod(["status", "--json"])
    finally:
        sys.stdout = stdout
    if code:
        raise RuntimeError(f"pod status --json exited with {code}")
    return {"seconds": time.perf_counter() - started, "bytes_out": sink.size}


# -- the run ---------------------------------------------------------------------------------


def run_size(code: Path, backend: str, count: int, scratch: Path) -> dict:
    row: dict = {"backend": backend, "episodes": count}
    row["baseline"] = _child(code, "measure", "baseline", "--db", "-", "--store", str(scratch))
    store = scratch / f"uploads-{backend}-{count}"
    url = _database(backend, f"pod_scale_uploads_{count}", scratch)
    try:
        build_uploads(url, store, count)
        first = _child(code, "measure", "upload_tick", "--db", url, "--store", str(store))
        steady_cursor = first.pop("cursor")
        if _is_old(code):
            steady_cursor = "full"
        steady = _child(code, "measure", "upload_tick", "--db", url, "--store", str(store),
                        "--cursor", steady_cursor or "")
        steady.pop("cursor")
        row["upload_tick_no_cursor"] = first
        row["upload_tick"] = steady
    finally:
        _drop(url)
    store = scratch / f"history-{backend}-{count}"
    url = _database(backend, f"pod_scale_history_{count}", scratch)
    try:
        build_history(url, store, count)
        row["purge_plan"] = _child(code, "measure", "purge_plan", "--db", url, "--store", str(store))
        row["purge_tick"] = _child(code, "measure", "purge_tick", "--db", url, "--store", str(store))
        row["status_json"] = _child(code, "measure", "status_json", "--db", url, "--store", str(store))
    finally:
        _drop(url)
    return row


def _is_old(code: Path) -> bool:
    return "catalog, not the cursor" not in (code / "pod_sensors" / "uploads.py").read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/scale.py")
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("measure")
    one.add_argument("op")
    one.add_argument("--db", required=True)
    one.add_argument("--store", required=True)
    one.add_argument("--cursor", default=None)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--code", default=str(_ROOT), help="checkout to measure")
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", default=str(_ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args(argv)
    if args.command == "measure":
        if args.cursor == "":
            args.cursor = None
        measure(args)
        return 0
    code = Path(args.code).resolve()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="pod-scale-") as scratch:
        for backend in args.backends.split(","):
            for count in (int(s) for s in args.sizes.split(",")):
                started = time.perf_counter()
                rows.append(run_size(code, backend, count, Path(scratch)))
                print(json.dumps(rows[-1]), f"({time.perf_counter() - started:.0f} s)", flush=True)
    results[args.label] = {"code": _commit(code), "measured_at": datetime.now(UTC).isoformat(),
                           "load_1m": os.getloadavg()[0], "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out.with_suffix(".md"))
    return 0


_COLUMNS = (
    ("baseline", "imports MB"),
    ("upload_tick", "upload tick s"), ("upload_tick", "tick MB"), ("upload_tick", "cursor B"),
    ("upload_tick_no_cursor", "pod run tick s"), ("purge_plan", "purge plan s"),
    ("purge_plan", "plan MB"), ("purge_tick", "purge tick s"), ("status_json", "status --json s"),
    ("status_json", "status MB"), ("status_json", "status out B"),
)
_FIELDS = {"s": "seconds", "MB": "peak_rss_mb", "B": "cursor_bytes", "out B": "bytes_out"}


def _cell(row: dict, op: str, header: str) -> str:
    unit = "out B" if header.endswith("out B") else header.rsplit(" ", 1)[-1]
    if op == "baseline" and unit != "MB":
        return "-"
    value = row.get(op, {}).get(_FIELDS[unit])
    if value is None:
        return "-"
    return f"{value:.2f}" if unit == "s" else f"{value:,.0f}"


def write_markdown(results: dict, path: Path) -> None:
    """One table per label (before, after), one row per backend and size."""
    lines = ["# Scale benchmark (bench/scale.py)", ""]
    for label, run in results.items():
        lines += [f"## {label} (code {run['code']}, {run['measured_at'][:16]} UTC, "
                  f"load {run['load_1m']:.1f})", ""]
        headers = ["backend", "episodes", *(h for _, h in _COLUMNS)]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in run["rows"]:
            cells = [row["backend"], f"{row['episodes']:,}",
                     *(_cell(row, op, h) for op, h in _COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def _commit(code: Path) -> str:
    done = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
