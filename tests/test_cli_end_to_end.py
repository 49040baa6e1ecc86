"""The README's main path: `pod ingest` + `pod run` + `pod status --json` on a fresh POD_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
POD = Path(sys.executable).parent / "pod"
SAMPLES = sorted((REPO / "samples").glob("*.*"))


def pod(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "DAGSTER_"))}
    env.update({"POD_HOME": str(home), "POD_WHISPER_THREADS": "2"})
    run = subprocess.run([str(POD), *args], env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert run.returncode == 0, f"pod {' '.join(args)}\n{run.stdout}\n{run.stderr}"
    return run


@pytest.mark.slow
def test_ingest_run_status_on_a_fresh_home(tmp_path):
    home = tmp_path / "pod-home"
    assert SAMPLES, "samples/ is empty"
    pod("ingest", *map(str, SAMPLES), home=home)
    run = pod("run", home=home)
    assert "FAILED" not in run.stdout

    rows = json.loads(pod("status", "--json", home=home).stdout)
    assert len(rows) == len(SAMPLES)
    for row in rows:
        assert row["status"] == "processed", row
        assert row["error"] is None
        assert set(row) >= {"episode_id", "status", "source_name", "error", "updated_at", "artifacts", "metrics"}
        assert set(row["artifacts"]) == {
            "raw_audio", "transcript", "cleaned_audio", "cut_list", "cleaned_transcript", "final_episode",
        }
        for stage, uri in row["artifacts"].items():
            assert uri and uri.startswith("file://"), stage
            assert Path(unquote(uri.removeprefix("file://"))).is_file(), stage
        metrics = row["metrics"]
        for name in ("duration_s", "cleaned_duration_s", "final_duration_s", "pauses_removed_s",
                     "fillers_removed", "loudness_lufs", "true_peak_dbtp"):
            assert isinstance(metrics[name], (int, float)), name
        assert metrics["duration_s"] > 1
        assert metrics["cleaned_duration_s"] <= metrics["duration_s"]
        assert abs(metrics["loudness_lufs"] - metrics["target_lufs"]) <= 0.5
        assert metrics["true_peak_dbtp"] <= -1.0

    # A second run finds nothing new and launches nothing.
    again = pod("run", home=home)
    assert "no new uploads" in again.stdout


@pytest.mark.slow
def test_bad_upload_makes_run_exit_nonzero_with_clear_error(tmp_path):
    home = tmp_path / "pod-home"
    bad = tmp_path / "notes.mp3"
    bad.write_text("these are show notes, not audio\n" * 20)
    pod("ingest", str(bad), home=home)
    run = pod("run", home=home, check=False)
    assert run.returncode != 0
    [row] = json.loads(pod("status", "--json", home=home).stdout)
    assert row["status"] == "error"
    assert "raw_audio" in row["error"] or "audio" in row["error"]
    assert row["artifacts"]["raw_audio"]  # the bytes are kept
