"""Signals, crashes and races around ``pod run``, with the real command in subprocesses.

* SIGTERM in the middle of transcription and SIGINT in the middle of mastering stop
  ``pod run`` within 10 s: no process left, no scratch left, the episode ``error`` saying
  where it stopped, the stored raw media untouched; a plain ``pod run`` resumes it to
  ``processed``. A second signal stops at once.
* Two ``pod run`` started at the same moment launch an upload's run key once (SQLite and
  Postgres); the other exits 0 by itself. A second signal stops at once. SIGKILL: the run's
  processes die with ``pod run``; the next ``pod run`` removes the dead run's scratch and
  resumes the episode by itself.
* Automatic resumes stop after three in a row.
* ``pod`` beside a running ``make serve`` uses its catalog.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from pod_assets import layout
from pod_audio.io import iter_blocks, probe
from pod_pipeline import runner
from pod_resources.catalog import EpisodeStatus
from tests import audio_factory as af
from tests.pipeline.test_fresh_processes import Deployment, embedded, gcs_postgres  # noqa: F401
from tests.waiting import wait_for

STOP_LIMIT_S = 10.0
SCRATCH_ENV = "POD_RUN_SCRATCH"


@pytest.fixture(scope="module")
def looped_speech(tmp_path_factory: pytest.TempPathFactory, jfk_path: Path) -> Path:
    """JFK thirty-two times (352 s): each step, mastering included, lasts long enough to be
    interrupted while it runs, also beside another test file (with four, eight and sixteen
    times, clean-clone runs saw the whole run end before the stop during mastering landed;
    each faster transcription left less of the run after mastering began)."""
    info = probe(jfk_path)
    speech = np.concatenate(list(iter_blocks(jfk_path)))
    path = tmp_path_factory.mktemp("looped") / "looped-take.flac"
    return af.write_audio(path, af.concat(*[speech] * 32), sample_rate=info.sample_rate)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _run_processes(scratch: Path) -> list[str]:
    """Processes still marked with a run scratch root under ``scratch``."""
    marker = f"{SCRATCH_ENV}={scratch}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(var.startswith(marker) for var in environ.split(b"\0")):
            found.append(f"{entry.name}: {cmdline[:200].decode(errors='replace')}")
    return found


_wait_for = functools.partial(wait_for, interval_s=0.02)


def _in_step(scratch: Path, prefix: str) -> bool:
    return any(scratch.glob(f"pod-run-*/{prefix}*"))


class Background:
    """One ``pod run`` in the background, in its own process group like a shell job."""

    def __init__(self, deployment: Deployment, scratch: Path, *args: str) -> None:
        argv, env = deployment.command("run", *args, scratch=scratch)
        self.scratch = scratch
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )

    def wait_in_step(self, prefix: str, *, timeout_s: float = 240) -> None:
        _wait_for(
            lambda: _in_step(self.scratch, prefix) or self.process.poll() is not None,
            timeout_s=timeout_s,
            what=f"a {prefix} scratch dir",
        )
        assert self.process.poll() is None, f"pod run ended first:\n{self.process.stdout.read()}"

    def stop(self, sig: int, *, again: bool = False) -> tuple[float, str]:
        """Send ``sig`` (twice with ``again``); seconds until exit, and the output."""
        started = time.monotonic()
        self.process.send_signal(sig)
        if again:
            time.sleep(0.3)
            self.process.send_signal(sig)
        try:
            output, _ = self.process.communicate(timeout=30)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
        return time.monotonic() - started, output


def _assert_clean(scratch: Path) -> None:
    _wait_for(lambda: not _run_processes(scratch), timeout_s=3, what="run processes to end")
    assert _run_processes(scratch) == []
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_sigterm_in_transcription_and_sigint_in_mastering_then_pod_run_resumes(
    embedded: Deployment, looped_speech: Path, tmp_path: Path
) -> None:
    deployment = embedded
    source_md5 = _md5(looped_speech)
    deployment.pod("ingest", str(looped_speech))

    first = Background(deployment, tmp_path / "s1")
    first.wait_in_step("pod-transcript-")
    took_s, output = first.stop(signal.SIGTERM)
    assert took_s < STOP_LIMIT_S, output
    assert first.process.returncode == 128 + signal.SIGTERM, output
    _assert_clean(first.scratch)
    [episode] = deployment.catalog.list_episodes()
    assert episode.status == EpisodeStatus.ERROR
    assert episode.last_error == "stopped by SIGTERM during transcript; run `pod run` to resume"
    assert "Traceback" not in output and "Stack Trace" not in output, output
    assert "stopped by SIGTERM during transcript; run `pod run` to resume" in output, output
    history = [(c.from_status, c.to_status) for c in deployment.catalog.history(episode.episode_id)]
    assert history.count((EpisodeStatus.ERROR, EpisodeStatus.PROCESSING)) == 0, "retried"
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        retries = instance.get_records_for_run(
            episode.processing_run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
        ).records
        assert retries == [], "the interrupted step was retried"
        assert instance.get_run_by_id(episode.processing_run_id).tags[runner.RESUME_TAG] == "pending"
    raw = tmp_path / "raw.flac"
    deployment.store.read_to_path(layout.episode_key(episode.episode_id, "raw.flac"), raw)
    assert _md5(raw) == source_md5

    # A plain `pod run` resumes it; stopped again while mastering, with Ctrl-C's signal.
    second = Background(deployment, tmp_path / "s2")
    second.wait_in_step("pod-master-", timeout_s=300)
    took_s, output = second.stop(signal.SIGINT)
    assert "resuming run" in output, output
    assert took_s < STOP_LIMIT_S, output
    assert second.process.returncode == 128 + signal.SIGINT, output
    _assert_clean(second.scratch)
    stopped = deployment.catalog.get_episode(episode.episode_id)
    assert stopped.last_error == "stopped by SIGINT during final_episode; run `pod run` to resume"
    assert not deployment.store.exists(layout.episode_key(episode.episode_id, layout.FINAL_EPISODE))

    done = deployment.pod("run", scratch=tmp_path / "s3")
    assert "automatic resume 2 of 3" in done.stdout, done.stdout
    finished = deployment.catalog.get_episode(episode.episode_id)
    assert finished.status == EpisodeStatus.PROCESSED, finished.last_error
    assert finished.last_error is None
    deployment.store.read_to_path(layout.episode_key(episode.episode_id, "raw.flac"), raw)
    assert _md5(raw) == source_md5
    assert sorted(p.name for p in (tmp_path / "s3").iterdir()) == []

    # A run that loses its episode to a newer run never writes it again.
    older = Background(
        deployment, tmp_path / "s4", "--episode", episode.episode_id,
        "--step", "cleaned_audio", "--step", "final_episode",
    )
    older.wait_in_step("pod-clean-")
    assert deployment.catalog.set_status(
        episode.episode_id, expected=EpisodeStatus.PROCESSING, new=EpisodeStatus.PROCESSING,
        run_id="a-newer-run",
    )
    output, _ = older.process.communicate(timeout=120)
    taken = deployment.catalog.get_episode(episode.episode_id)
    assert (taken.status, taken.processing_run_id) == (EpisodeStatus.PROCESSING, "a-newer-run"), output
    assert deployment.catalog.history(episode.episode_id)[-1].run_id == "a-newer-run"


def _start_two_at_once(deployment: Deployment, tmp_path: Path) -> tuple[Background, Background]:
    """Two ``pod run`` started at the same moment on the same upload."""
    return Background(deployment, tmp_path / "a"), Background(deployment, tmp_path / "b")


def _winner_and_loser(jobs: tuple[Background, Background]) -> tuple[Background, Background]:
    """The one whose run reaches transcription, and the other, which must end by itself
    with exit status 0 having launched nothing."""
    _wait_for(
        lambda: any(_in_step(job.scratch, "pod-transcript-") for job in jobs),
        timeout_s=240,
        what="one run to reach transcription",
    )
    winner = next(job for job in jobs if _in_step(job.scratch, "pod-transcript-"))
    loser = next(job for job in jobs if job is not winner)
    output, _ = loser.process.communicate(timeout=120)
    assert loser.process.returncode == 0, output
    assert ": success" not in output and "Traceback" not in output, output
    assert "skipped" in output or "no new uploads" in output, output
    assert winner.process.poll() is None, "the winner ended before it could be stopped"
    return winner, loser


def _ingest_then_two_pod_runs_at_once(
    deployment: Deployment, speech: Path, tmp_path: Path
) -> Background:
    """``pod ingest`` of ``speech``, then two ``pod run`` at once: the winner, still running
    (the loser has ended, having launched nothing)."""
    deployment.pod("ingest", str(speech))
    winner, _ = _winner_and_loser(_start_two_at_once(deployment, tmp_path))
    return winner


def _launched_runs(deployment: Deployment) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name=runner.EPISODE_JOB))
    return [record.dagster_run for record in records]


def test_two_pod_runs_at_once_launch_once_and_a_second_signal_stops_at_once(
    embedded: Deployment, short_speech: Path, tmp_path: Path
) -> None:
    deployment = embedded
    winner = _ingest_then_two_pod_runs_at_once(deployment, short_speech, tmp_path)
    [run] = _launched_runs(deployment)
    assert run.tags["dagster/run_key"].startswith(deployment.catalog.list_episodes()[0].episode_id)

    took_s, output = winner.stop(signal.SIGINT, again=True)
    assert took_s < 3.0, output
    assert winner.process.returncode == 128 + signal.SIGINT, output
    _assert_clean(winner.scratch)


def test_a_second_ctrl_c_after_pod_caught_the_first_exits_with_130(tmp_path: Path) -> None:
    """The first Ctrl-C may land outside a supervised run (the run had just ended): ``pod``
    catches it and winds down, and a second one then must still end it with 130."""
    script = (
        "import os, signal, sys, time\n"
        "from pod_pipeline import cli\n"
        "def interrupted(args, settings):\n"
        "    raise KeyboardInterrupt\n"
        "cli.cmd_status = interrupted\n"
        "code = cli.main(['status'])\n"
        "assert code == 130, code\n"
        "os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while winding down\n"
        "time.sleep(5)\n"
        "sys.exit(0)\n"
    )
    env = {**os.environ, "POD_HOME": str(tmp_path / "home")}
    env = {k: v for k, v in env.items() if k not in ("POD_STORAGE_URL", "POD_CATALOG_URL")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert "pod status: interrupted" in done.stderr, done.stderr


def test_a_signal_while_pod_run_winds_down_after_a_stop_exits_with_the_stops_code() -> None:
    """The second Ctrl-C may come after the run has already ended (the child stopped within
    the 0.3 s between the two): it must still end ``pod run`` with 130, not kill it by SIGINT."""
    script = (
        "import os, signal, sys, time\n"
        "from pod_pipeline import worker\n"
        "with worker.Stopper().installed() as stopper:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "assert stopper.requested\n"
        "os.kill(os.getpid(), signal.SIGINT)  # after the stop, while winding down\n"
        "time.sleep(5)\n"
        "sys.exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert "KeyboardInterrupt" not in done.stderr, done.stderr


def test_two_pod_runs_at_once_then_sigkill_leaves_no_process_and_the_next_pod_run_resumes(
    gcs_postgres: Deployment, short_speech: Path, tmp_path: Path
) -> None:
    deployment = gcs_postgres
    winner = _ingest_then_two_pod_runs_at_once(deployment, short_speech, tmp_path)
    assert len(_launched_runs(deployment)) == 1

    os.kill(winner.process.pid, signal.SIGKILL)  # pod run only: its run must follow it
    winner.process.communicate(timeout=30)
    _wait_for(lambda: not _run_processes(winner.scratch), timeout_s=5, what="run processes to die")
    leftover = [p.name for p in winner.scratch.iterdir()]
    assert len(leftover) == 1 and leftover[0].startswith("pod-run-"), leftover

    # The next `pod run` (same TMPDIR) cleans up and resumes without being told to.
    done = deployment.pod("run", scratch=winner.scratch)
    assert f"removed scratch {leftover[0]}" in done.stdout, done.stdout
    assert "its process" in done.stdout and "resuming run" in done.stdout, done.stdout
    [episode] = deployment.catalog.list_episodes()
    assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
    assert sorted(p.name for p in winner.scratch.iterdir()) == []
    assert len(_launched_runs(deployment)) == 2  # the killed run and its resume


def test_a_claim_has_exactly_one_winner_among_concurrent_claimants(catalog) -> None:
    """The catalog claim behind "one launch per run key", on SQLite and Postgres."""
    claimants = 8
    barrier = threading.Barrier(claimants)

    def claim(n: int) -> str:
        barrier.wait()
        return catalog.claim("run_key:episode@1", owner=f"claimant-{n}")

    with ThreadPoolExecutor(claimants) as pool:
        holders = list(pool.map(claim, range(claimants)))
    assert len(set(holders)) == 1 and holders[0].startswith("claimant-"), holders
    # Taken over only from the exact owner named.
    assert catalog.claim("run_key:episode@1", owner="x", replace="someone-else") == holders[0]
    assert catalog.claim("run_key:episode@1", owner="x", replace=holders[0]) == "x"


def test_automatic_resumes_stop_after_three(embedded: Deployment, short_speech: Path) -> None:
    deployment = embedded
    episode_id = deployment.register("take.wav", short_speech)
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        job = runner.episode_job()
        dead = instance.create_run_for_job(
            job,
            tags={
                runner.PARTITION_TAG: episode_id,
                runner.RESUME_TAG: "pending",
                runner.RESUMES_TAG: str(runner.MAX_AUTO_RESUMES),
            },
        )
        deployment.catalog.set_status(
            episode_id, expected=None, new=EpisodeStatus.PROCESSING, run_id=dead.run_id
        )
        instance.report_run_failed(dead, "died")
        resumes, messages = runner.pending_resumes(instance, deployment.catalog, owner="test")
        assert resumes == []
        assert instance.get_run_by_id(dead.run_id).tags[runner.RESUME_TAG] == "given-up"
    episode = deployment.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert "4 times in a row" in episode.last_error and "pod run --episode" in episode.last_error
    assert messages and episode_id in messages[0]


def test_pod_beside_make_serve_uses_its_catalog(
    gcs_postgres: Deployment, embedded: Deployment, short_speech: Path
) -> None:
    """``make serve`` writes its settings to ``$POD_HOME/serve.env``; ``pod`` with no POD_*
    settings of its own reads them while the writer lives, and ignores them after."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
    import serve

    served = gcs_postgres
    served.register("served.wav", short_speech)
    home = embedded.home  # a project folder whose own catalog is empty
    env = {k: v for k, v in served.env.items() if k not in ("DAGSTER_HOME",) and not k.startswith("POD_")}
    env.update(POD_HOME=str(home))
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; sys.path.insert(0, sys.argv[1]); import serve, pathlib; "
            "serve.write_serve_env(pathlib.Path(sys.argv[2]), eval(sys.argv[3])); "
            "print('ready', flush=True); time.sleep(600)"
        ), str(Path(serve.__file__).parent), str(home / "serve.env"), repr(served.env)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        assert oct((home / "serve.env").stat().st_mode & 0o777) == "0o600"
        status = subprocess.run([str(Path(sys.executable).parent / "pod"), "status", "--json"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr[-2000:]
        assert [row["source_name"] for row in json.loads(status.stdout)] == ["served.wav"]
        assert "make serve" in status.stderr
    finally:
        writer.kill()
        writer.wait()
    alone = subprocess.run([str(Path(sys.executable).parent / "pod"), "status", "--json"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert json.loads(alone.stdout) == []


def test_a_run_whose_run_key_another_launcher_claimed_does_nothing(pipeline, short_speech: Path) -> None:
    """What a daemon-launched duplicate meets: its first step finds the upload's run key
    claimed by another launcher (a ``pod run``) and stops, without touching the episode."""
    from pod_assets.episodes.raw_audio import raw_audio
    from pod_assets.status import run_key_claim

    episode_id = pipeline.register("take.wav", short_speech)
    run_key = f"{episode_id}@1"
    pipeline.catalog.claim(run_key_claim(run_key), owner="pod-run:elsewhere:1:abcd")
    result = dg.materialize(
        [raw_audio],
        partition_key=episode_id,
        resources=pipeline.resources,
        instance=pipeline.instance,
        tags={"dagster/run_key": run_key},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "this duplicate run does nothing" in failure.step_failure_data.error.to_string()
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.UPLOADED
    assert len(pipeline.catalog.history(episode_id)) == 1
