"""What ``pod`` prints: its own lines, one line per failure with its reason, no Dagster noise.

The real ``pod`` command in a subprocess on a throwaway home; the formatting functions on
real Dagster error records."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from pod_pipeline import console
from pod_pipeline.console import PodError
from pod_pipeline.definitions import build_definitions
from pod_pipeline.run_settings import build_run_config
from pod_resources.storage import LocalObjectStore
from tests import audio_factory as af
from tests.pod_env import pod_env, run_pod

NOISE = ("Traceback", "Stack Trace", "BetaWarning", "Telemetry", "Welcome to Dagster",
         "No dagster instance configuration")


def _assert_quiet(text: str) -> None:
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in:\n{text}"


def _runs(home: Path) -> list[dg.DagsterRun]:
    if not (home / "dagster").is_dir():
        return []
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
        return list(instance.get_runs())


@pytest.fixture(scope="module")
def episode_job() -> dg.JobDefinition:
    return build_definitions().resolve_job_def("process_episode_job")


# --- the formatting, on real values -------------------------------------------------------


def test_step_lines_say_time_and_speed():
    assert console.step_done_line("ep-1", "transcript", elapsed_s=2.0, audio_s=30.0) == (
        "ep-1: transcript done in 2.0 s (15.0x realtime)"
    )
    assert console.step_done_line("ep-1", "raw_audio", elapsed_s=0.5, audio_s=None) == (
        "ep-1: raw_audio done in 0.5 s"
    )
    assert console.format_elapsed(125.4) == "2 min 05 s"
    assert console.progress_line("ep-1", "transcript", "transcript ep-1: 12 of 32 s recognised") == (
        "ep-1: transcript: 12 of 32 s recognised"
    )


def _step_failure(error: Exception) -> dg.DagsterEvent:
    """The ``STEP_FAILURE`` event of a real one-op run whose op raises ``error``."""

    @dg.op(name="cleaned_audio")
    def failing() -> None:
        raise error

    @dg.job(logger_defs={})
    def one_op() -> None:
        failing()

    result = one_op.execute_in_process(raise_on_error=False)
    [event] = [e for e in result.all_events if e.is_step_failure]
    return event


def test_failure_reason_of_an_unexpected_error_is_its_first_line_without_class():
    event = _step_failure(ValueError("cut list overlaps at 12.3 s\nsecond line"))
    assert console.failure_reason(event) == "cut list overlaps at 12.3 s"
    assert not console.is_expected(event)


def test_failure_reason_of_an_input_error_drops_the_step_prefix():
    from pod_assets.status import EpisodeInputError

    event = _step_failure(EpisodeInputError("cleaned_audio: raw audio for ep-1 was purged"))
    assert console.failure_reason(event) == "raw audio for ep-1 was purged"
    assert console.is_expected(event)


def test_a_silent_step_gets_a_still_running_line():
    lines: list[str] = []
    printer = console.RunPrinter("ep-1", audio_s=1800.0, write=lines.append)
    printer.started["final_episode"] = 0.0
    printer.last_said["final_episode"] = 100.0
    printer.heartbeat(100.0 + console.HEARTBEAT_S - 1)
    assert lines == []
    printer.heartbeat(100.0 + console.HEARTBEAT_S)
    assert len(lines) == 1 and lines[0].startswith("ep-1: final_episode still running")
    assert "audio 1800 s" in lines[0]


def test_instance_config_is_written_once_and_never_over_the_operators(tmp_path):
    home = tmp_path / "dagster"
    assert console.own_instance_config(home)
    assert "enabled: false" in (home / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text("run_coordinator: {}\n")
    assert not console.own_instance_config(home)
    assert (home / "dagster.yaml").read_text() == "run_coordinator: {}\n"


def test_plainly_not_audio_names_the_reason(tmp_path, short_speech):
    assert console.plainly_not_audio(short_speech) is None
    reason = console.plainly_not_audio(af.write_text_as_audio(tmp_path / "notes.mp3"))
    assert reason and "not an audio" in reason
    assert "empty" in (console.plainly_not_audio(af.write_zero_byte(tmp_path / "e.mp3")) or "")


# --- per-run settings ----------------------------------------------------------------------


def test_settings_become_launchpad_run_config(episode_job, tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("ops:\n  cleaned_audio:\n    config:\n      margin_ms: 80\n")
    config = build_run_config(
        episode_job,
        assignments=["cleaned_audio.max_pause_ms=500", "final_episode.target_lufs=-18.5",
                     "cleaned_audio.remove_fillers=false"],
        config_file=config_file,
    )
    assert config == {"ops": {
        "cleaned_audio": {"config": {"margin_ms": 80, "max_pause_ms": 500, "remove_fillers": False}},
        "final_episode": {"config": {"target_lufs": -18.5}},
    }}
    dg.validate_run_config(episode_job, config)


@pytest.mark.parametrize(
    ("assignment", "steps", "expected"),
    [
        ("cleaned_audio.max_pase_ms=500", None, "unknown setting cleaned_audio.max_pase_ms; "
         "cleaned_audio takes crossfade_ms, margin_ms, max_pause_ms"),
        ("cleaning.max_pause_ms=500", None, "unknown step 'cleaning'"),
        ("cleaned_audio.max_pause_ms=long", None, 'setting cleaned_audio.max_pause_ms: Value "long"'),
        ("max_pause_ms=500", None, "expected STEP.KEY=VALUE"),
        ("cleaned_audio.max_pause_ms=500", ["final_episode"], "the run executes only final_episode"),
    ],
)
def test_bad_settings_are_one_clear_line(episode_job, assignment, steps, expected):
    with pytest.raises(PodError) as raised:
        build_run_config(episode_job, assignments=[assignment], steps=steps)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


# --- the real command ------------------------------------------------------------------------


def test_ingest_refuses_a_text_file_named_mp3_and_stores_nothing(tmp_path, short_speech):
    home = tmp_path / "home"
    env = pod_env(home)
    notes = af.write_text_as_audio(tmp_path / "notes.mp3")
    run = run_pod(env, "ingest", str(notes), str(short_speech), check=False)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "pod ingest: notes.mp3: not ingested, not audio: not an audio or video file we can "
        "read (invalid data found when processing input)"
    )
    _assert_quiet(run.stdout + run.stderr)
    store = LocalObjectStore(root=str(home / "store"))
    assert [info.key for info in store.list("uploads/")] == [f"uploads/{short_speech.name}"]


def test_publish_of_an_unknown_episode_is_one_line_and_no_run(tmp_path):
    home = tmp_path / "home"
    run = run_pod(pod_env(home), "publish", "nope-123", check=False)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "pod publish: no such episode: nope-123 (`pod status` lists them)"
    ]
    assert _runs(home) == []


@pytest.mark.slow
def test_a_bad_upload_fails_in_one_line_with_its_reason_and_verbose_shows_the_trace(tmp_path):
    home = tmp_path / "home"
    env = pod_env(home)
    notes = af.write_text_as_audio(tmp_path / "notes.mp3")
    # Not through `pod ingest` (which refuses it): straight into the store, as a bucket upload.
    LocalObjectStore(root=str(home / "store")).write_file("uploads/notes.mp3", notes)

    run = run_pod(env, "run", check=False)
    assert run.returncode == 1
    _assert_quiet(run.stdout + run.stderr)
    reason = "not an audio or video file we can read"
    lines = run.stdout.splitlines()
    [episode_id] = {line.split(":")[0] for line in lines if line.endswith("raw_audio started")}
    failed = [line for line in lines if line.startswith(f"{episode_id}: raw_audio FAILED after ")]
    assert len(failed) == 1 and reason in failed[0], run.stdout
    summary = [line for line in lines if line.startswith("run ") and "FAILED" in line]
    assert len(summary) == 1 and f"step raw_audio failed: {reason}" in summary[0]
    assert not [line for line in lines if " - dagster - " in line], run.stdout
    assert "enabled: false" in (home / "dagster" / "dagster.yaml").read_text()

    again = run_pod(env, "run", "--episode", episode_id, "--verbose", check=False)
    assert again.returncode == 1
    assert "Stack Trace" in again.stdout + again.stderr
    assert "UnsupportedFormatError" in again.stdout + again.stderr

    runs_before = len(_runs(home))
    bad_key = run_pod(env, "run", "--episode", episode_id, "--set", "raw_audio.max_hours=1",
                      check=False)
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip() == (
        "pod run: unknown setting raw_audio.max_hours; raw_audio takes max_duration_s"
    )
    assert len(_runs(home)) == runs_before  # the refused settings started no run


def test_a_run_process_output_file_is_kept_only_when_written(tmp_path):
    empty, written = tmp_path / "a.log", tmp_path / "b.log"
    empty.touch()
    written.write_text("STEP_WORKER_STARTED\n")
    assert console.kept_output(empty) is None and not empty.exists()
    assert console.kept_output(written) == written
    assert console.kept_output(None) is None
