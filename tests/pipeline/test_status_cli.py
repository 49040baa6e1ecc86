"""``pod status``: filters, limit and total, streamed JSON, whole failure reasons; the end of
``pod run`` shows what it ran. On a SQLite catalog built by bulk inserts (bench/scale.py)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest

from bench.scale import NOW, build_history
from pod_pipeline.cli import build_parser
from pod_pipeline.status import DEFAULT_LIMIT, cmd_status, print_run_summary
from pod_resources.catalog import Catalog

N = 240  # 1 in 20 error, 1 in 20 processing, 1 in 20 recent (bench.scale)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    root = tmp_path_factory.mktemp("status")
    url = f"sqlite:///{root / 'catalog.db'}"
    build_history(url, root / "store", N)
    return Catalog(url)


def status(catalog: Catalog, *argv: str, capsys=None) -> tuple[int, str]:
    args = build_parser().parse_args(["status", *argv])
    out = io.StringIO()
    code = cmd_status(args, catalog, out=out)
    return code, out.getvalue()


def test_default_limit_and_the_total(catalog):
    code, out = status(catalog)
    lines = out.splitlines()
    assert code == 0
    assert lines[-1] == f"{DEFAULT_LIMIT} of {N} episodes (--limit {DEFAULT_LIMIT}; 0 for all)"
    assert sum(1 for line in lines if line.startswith("ep-")) == DEFAULT_LIMIT
    _, everything = status(catalog, "--limit", "0")
    assert everything.splitlines()[-1] == f"{N} of {N} episodes"


def test_filters_by_status_since_and_ids(catalog):
    _, out = status(catalog, "--status", "error", "--json", "--limit", "0")
    rows = json.loads(out)
    assert len(rows) == N // 20 and {r["status"] for r in rows} == {"error"}
    _, out = status(catalog, "--status", "processing,error", "--jsonl", "--limit", "0")
    assert len(out.splitlines()) == 2 * N // 20
    _, out = status(catalog, "--since", (NOW - timedelta(hours=3)).isoformat(), "--json")
    assert {r["status"] for r in json.loads(out)} == {"processed", "processing"}
    _, out = status(catalog, "ep-000003", "ep-000007", "--json")
    assert [r["episode_id"] for r in json.loads(out)] == ["ep-000003", "ep-000007"]


def test_bad_filters_are_one_line_errors(catalog, capsys):
    code, _ = status(catalog, "--status", "finished")
    assert code == 2
    err = capsys.readouterr().err
    assert "valid statuses: uploaded, processing" in err and len(err.splitlines()) == 1
    assert status(catalog, "--since", "yesterday")[0] == 2


def test_json_is_one_array_bounded_by_the_limit(catalog, capsys):
    _, out = status(catalog, "--json", "--limit", "7")
    rows = json.loads(out)
    oldest = [e.episode_id for e in catalog.list_episodes()[:7]]
    assert [r["episode_id"] for r in rows] == oldest  # oldest first
    assert "7 of 240 episodes" in capsys.readouterr().err
    _, lines = status(catalog, "--jsonl", "--limit", "3")
    assert [json.loads(line)["episode_id"] for line in lines.splitlines()] == oldest[:3]


def test_failure_reasons_are_whole_wrapped_or_wide(catalog):
    reason = catalog.get_episode("ep-000001").last_error
    assert len(reason) > 100
    _, wrapped = status(catalog, "ep-000001")
    _, wide = status(catalog, "ep-000001", "--wide")
    assert reason in wide
    assert "".join(part.strip() for part in wrapped.splitlines()[1:-1]).endswith(
        reason.replace(" ", "")[-60:]
    )
    assert reason.replace(" ", "") in "".join(wrapped.replace(" ", "").splitlines())


def test_pod_run_summary_shows_what_it_ran(catalog):
    out = io.StringIO()
    print_run_summary(catalog, ["ep-000004", "ep-000005", "ep-000004"], out=out)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["ep-000004", "ep-000005"]
    assert lines[-1] == f"{N - 2} other episodes in the catalog: `pod status` lists them"
