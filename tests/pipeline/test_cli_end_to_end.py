"""The README's main path: `pod ingest` + `pod run` + `pod status --json` on a fresh POD_HOME."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

REPO = Path(__file__).resolve().parents[2]
POD = Path(sys.executable).parent / "pod"
SAMPLES = sorted([*(REPO / "samples").glob("*.flac"), *(REPO / "samples").glob("*.mp3")])
"""What `make run` ingests (samples/ also holds the sample show's settings and artwork)."""


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
    _assert_step_lines(run.stdout + run.stderr)

    rows = json.loads(pod("status", "--json", home=home).stdout)
    assert len(rows) == len(SAMPLES)
    for row in rows:
        assert row["status"] == "processed", row
        assert row["error"] is None
        assert set(row) >= {"episode_id", "status", "source_name", "error", "updated_at", "artifacts", "metrics"}
        core = ("raw_audio", "transcript", "cleaned_audio", "cut_list", "cleaned_transcript",
                "final_episode")
        assert set(row["artifacts"]) >= set(core)
        for stage in core:
            uri = row["artifacts"][stage]
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

    # One step again with another setting, as from the launchpad.
    episode_id = rows[0]["episode_id"]
    rerun = pod("run", "--episode", episode_id, "--step", "cleaned_audio",
                "--set", "cleaned_audio.max_pause_ms=300", home=home)
    assert f"{episode_id}: cleaned_audio done in " in rerun.stdout
    assert f"{episode_id}: transcript" not in rerun.stdout
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
        [last] = instance.get_runs(dg.RunsFilter(job_name="process_episode_job"), limit=1)
    assert last.run_config["ops"] == {"cleaned_audio": {"config": {"max_pause_ms": 300}}}


def _assert_step_lines(output: str) -> None:
    """Only pod's own lines: every step of every episode starts and ends with its speed, the
    transcript says how far it got; nothing of Dagster's warnings or banners."""
    for noise in ("Warning", "Telemetry", "Welcome to Dagster", "dagster.yaml", "Traceback"):
        assert noise not in output, output
    lines = output.splitlines()
    episodes = {line.split(":")[0] for line in lines if line.endswith(": raw_audio started")}
    assert len(episodes) == len(SAMPLES), output
    for episode in episodes:
        for step in ("raw_audio", "transcript", "cleaned_audio", "final_episode"):
            assert f"{episode}: {step} started" in lines, (episode, step, output)
            assert re.search(
                rf"^{episode}: {step} done in [0-9.]+ s \([0-9.]+x realtime\)$", output, re.M
            ), (episode, step, output)
        assert re.search(rf"^{episode}: transcript: \d+ of \d+ s recognised$", output, re.M)


# A text file named .mp3 is refused by `pod ingest`, and a bad upload that reaches the store
# another way fails in one line: tests/pipeline/test_cli_output.py.
