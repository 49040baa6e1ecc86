"""``make bench``: our audio steps against pydub and the ffmpeg binary, side by side.

For each episode length (``--sizes``, minutes; default 15 and 60) on generated speech-like
audio (44.1 kHz stereo FLAC, see :mod:`bench.workloads`) it measures:

========================  =======================================  ==============================
measurement               ours                                     baseline
========================  =======================================  ==============================
silence_vs_pydub          ``detect_silences_in_file``              pydub ``detect_nonsilent``
silence_vs_ffmpeg         ``detect_silences_in_file``              ``ffmpeg -af silencedetect``
cleaned_audio_vs_flac     the ``cleaned_audio`` library path       ``ffmpeg -i in.flac out.flac``
final_episode_vs_mp3      ``render_final`` + ``measure``           ``ffmpeg -i in.flac -b:a 128k out.mp3``
========================  =======================================  ==============================

and on real speech (the JFK sample looped with pauses, :func:`bench.workloads.ensure_speech_sample`)
of the same lengths, the ``transcript`` step alone: ``transcribe(path)`` (Whisper tiny.en with
forced alignment and the filler search, model load included) at every size, and the
pocketsphinx baseline (``recogniser=PocketsphinxRecogniser()``) at the smallest size only
(``--asr-baseline-sizes``); x realtime, CPU seconds per audio second, peak RSS and its growth.
``--pod-run-minutes 30`` adds a whole ``pod run`` (ingest excluded) of a speech episode on
the embedded default (SQLite, local store) in a fresh ``POD_HOME``.

Every run is a fresh child process (``python -m bench.steps`` or the ffmpeg binary); its
wall time is taken around the child and its peak RSS from ``os.wait4``. Ours and the
baseline alternate (ours first in even repetitions, the baseline first in odd ones); the
table gives medians and the ratio of medians (ours / baseline). pydub takes about two
minutes and 1.2 GB per hour of audio, so it runs once per size.

Usage::

    .venv/bin/python -m bench.run                 # 15 and 60 min, 3 repetitions
    .venv/bin/python -m bench.run --quick         # 2 and 5 min smoke run, into bench/out/quick
    .venv/bin/python -m bench.run --sizes 15 --repeat 5 --no-pydub
    .venv/bin/python -m bench.run --render bench/results.json   # only rewrite results.md

Writes ``results.json`` (machine, every sample, the rows) and ``results.md`` (the table)
into ``bench/`` (``--quick``: ``bench/out/quick/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The runner imports no numpy, PyAV or pod_audio: a child started with fork/vfork starts
# its peak RSS (``ru_maxrss``) from its parent's, so a fat runner would inflate every
# child's number. Inputs are made by ``python -m bench.workloads`` in a child as well.
REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"

RSS_LIMIT_MB = 300.0
RSS_GROWTH_LIMIT = 1.3
PYDUB_SPEEDUP = 20.0
SILENCEDETECT_RATIO = 2.0
MP3_RATIO = 1.5
ASR_X_REALTIME = 15.0
"""The transcript step (product engine) at the largest size: at least this x realtime."""
ASR_RSS_LIMIT_MB = 600.0
POD_RUN_X_REALTIME = 10.0

_POLL_S = 0.05


# --------------------------------------------------------------------------- one child


@dataclass
class Sample:
    """One run of one child process."""

    wall_s: float
    cpu_s: float
    """User + system CPU of the child and the children it waited for."""
    peak_rss_mb: float
    """Largest RSS of any single process of the run (``ru_maxrss`` from ``wait4``)."""
    tree_rss_mb: float
    """Largest sampled sum of the RSS of the child and its descendants (every 50 ms)."""
    load_1m: float = 0.0
    """1-minute load average of the machine when the run started."""
    work_s: float | None = None
    """Our steps only: wall time of the work inside the child, without start-up and imports."""
    info: dict[str, Any] = field(default_factory=dict)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, IndexError, ValueError):
        return 0


class _TreeRss(threading.Thread):
    """Samples the summed RSS of a process tree until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            total = sum(_rss_kb(p) for p in (self.pid, *_descendants(self.pid)))
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(_POLL_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


class ChildFailed(RuntimeError):
    pass


def run_child(
    argv: Sequence[str], *, env: dict[str, str] | None = None
) -> tuple[Sample, str, str]:
    """Run ``argv`` to completion; returns the sample and the child's stdout and stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load_1m = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO, env=env
        )
        sampler = _TreeRss(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - start
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise ChildFailed(
            f"{' '.join(argv)} exited with {proc.returncode}:\n{stderr[-3000:]}"
        )
    peak_mb = usage.ru_maxrss / 1024.0  # kB on Linux
    sample = Sample(
        wall_s=round(wall_s, 4),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        peak_rss_mb=round(peak_mb, 1),
        tree_rss_mb=round(max(peak_mb, sampler.peak_kb / 1024.0), 1),
        load_1m=round(load_1m, 2),
    )
    return sample, stdout, stderr


def run_step(step: str, **options: Any) -> Sample:
    """One of :mod:`bench.steps` in a fresh interpreter."""
    argv = [sys.executable, "-m", "bench.steps", step]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    sample, stdout, _ = run_child(argv)
    info = json.loads(stdout.strip().splitlines()[-1])
    sample.work_s = info.pop("work_s", None)
    sample.info = info
    return sample


def run_ffmpeg(args: Sequence[str]) -> Sample:
    sample, _, stderr = run_child(["ffmpeg", "-nostdin", "-hide_banner", "-y", *args])
    silences = stderr.count("silence_end:")
    if silences:
        sample.info = {"silences": silences}
    return sample


# --------------------------------------------------------------------------- measurements


@dataclass
class Measurement:
    """Samples of ours against a baseline, and the target on their ratio."""

    name: str
    size: str
    ours: str
    baseline: str
    target: str | None
    target_ratio: float | None
    """The ratio of medians (ours / baseline) must be at most this."""
    ours_samples: list[Sample] = field(default_factory=list)
    baseline_samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def row(self) -> dict[str, Any]:
        ours = statistics.median(s.wall_s for s in self.ours_samples)
        base = statistics.median(s.wall_s for s in self.baseline_samples)
        ratio = ours / base
        work = [s.work_s for s in self.ours_samples if s.work_s is not None]
        return {
            "size": self.size,
            "name": self.name,
            "ours": self.ours,
            "baseline": self.baseline,
            "ours_median_s": round(ours, 3),
            "baseline_median_s": round(base, 3),
            "ratio": round(ratio, 4),
            "cpu_ratio": round(
                statistics.median(s.cpu_s for s in self.ours_samples)
                / max(statistics.median(s.cpu_s for s in self.baseline_samples), 1e-9),
                4,
            ),
            "target": self.target,
            "met": None if self.target_ratio is None else ratio <= self.target_ratio,
            "peak_rss_mb": max(s.peak_rss_mb for s in self.ours_samples),
            "tree_rss_mb": max(s.tree_rss_mb for s in self.ours_samples),
            "baseline_peak_rss_mb": max(s.peak_rss_mb for s in self.baseline_samples),
            "ours_cpu_median_s": round(statistics.median(s.cpu_s for s in self.ours_samples), 3),
            "baseline_cpu_median_s": round(
                statistics.median(s.cpu_s for s in self.baseline_samples), 3
            ),
            "ours_work_median_s": round(statistics.median(work), 3) if work else None,
            "load_1m_median": round(
                statistics.median(s.load_1m for s in [*self.ours_samples, *self.baseline_samples]), 2
            ),
            "ours_runs": len(self.ours_samples),
            "baseline_runs": len(self.baseline_samples),
            "note": self.note,
        }


def _pair(
    m: Measurement, rep: int, ours: Callable[[], Sample], baseline: Callable[[], Sample]
) -> None:
    """One repetition of a measurement: ours first in even repetitions, the baseline in odd."""
    if rep % 2 == 0:
        m.ours_samples.append(ours())
        m.baseline_samples.append(baseline())
    else:
        m.baseline_samples.append(baseline())
        m.ours_samples.append(ours())


def _warm(path: Path) -> None:
    """Read a file once so every run finds it in the page cache (through a small buffer:
    the runner's own peak RSS is the floor of every child's)."""
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buffer):
            pass


def _make_input(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.workloads", *args],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise ChildFailed(f"bench.workloads {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def _last(m: Measurement) -> str:
    o, b = m.ours_samples[-1], m.baseline_samples[-1]
    return (
        f"{m.name} {m.size}: ours {o.wall_s:.2f} s ({o.peak_rss_mb:.0f} MB), "
        f"baseline {b.wall_s:.2f} s ({b.peak_rss_mb:.0f} MB)"
    )


def measure_episode(
    minutes: float, *, repeat: int, pydub: bool, work_dir: Path
) -> list[Measurement]:
    _log(f"{minutes:g} min: preparing input (cached in {OUT_DIR})")
    episode = _make_input("episode", "--minutes", f"{minutes:g}")
    size = f"{minutes:g} min"
    src = Path(episode["audio"])
    transcript = Path(episode["transcript"])
    size_dir = work_dir / f"{minutes:g}min"
    size_dir.mkdir(parents=True, exist_ok=True)
    cleaned = size_dir / "cleaned.flac"
    _warm(src)

    sil_ff = Measurement(
        "silence_vs_ffmpeg", size, "detect_silences_in_file", "ffmpeg -af silencedetect",
        f"<= {SILENCEDETECT_RATIO:g}", SILENCEDETECT_RATIO,
    )
    clean = Measurement(
        "cleaned_audio_vs_ffmpeg_flac", size, "cleaned_audio library path",
        "ffmpeg -i in.flac out.flac", None, None,
        note="floor only; no target",
    )
    final = Measurement(
        "final_episode_vs_ffmpeg_mp3", size, "render_final (measures the decoded MP3)",
        "ffmpeg -i cleaned.flac -b:a 128k out.mp3", f"<= {MP3_RATIO:g}", MP3_RATIO,
        note="input: the cleaned FLAC",
    )
    threshold: list[float] = []

    def silence_ours() -> Sample:
        sample = run_step("silence", input=src)
        threshold.append(sample.info["threshold_dbfs"])
        return sample

    def silence_ffmpeg() -> Sample:
        # Same threshold and minimum length as our detector found/uses.
        return run_ffmpeg(
            ["-i", str(src), "-af", f"silencedetect=noise={threshold[0]:.2f}dB:d=0.3", "-f", "null", "-"]
        )

    for rep in range(repeat):
        _log(f"{size}: repetition {rep + 1}/{repeat}")
        if rep == 0:
            sil_ff.ours_samples.append(silence_ours())
            sil_ff.baseline_samples.append(silence_ffmpeg())
        else:
            _pair(sil_ff, rep, silence_ours, silence_ffmpeg)
        _log(_last(sil_ff))
        _pair(
            clean, rep,
            lambda: run_step(
                "clean", input=src, transcript=transcript, output=cleaned
            ),
            lambda: run_ffmpeg(["-loglevel", "error", "-i", str(src), str(size_dir / "ffmpeg.flac")]),
        )
        _log(_last(clean))
        _warm(cleaned)
        _pair(
            final, rep,
            lambda: run_step("final", input=cleaned, output=size_dir / "episode.mp3"),
            lambda: run_ffmpeg(
                ["-loglevel", "error", "-i", str(cleaned), "-b:a", "128k", str(size_dir / "ffmpeg.mp3")]
            ),
        )
        _log(_last(final))

    measurements = [sil_ff, clean, final]
    if pydub:
        _log(f"{size}: pydub (once)")
        sil_pd = Measurement(
            "silence_vs_pydub", size, "detect_silences_in_file", "pydub detect_nonsilent",
            f"<= {1 / PYDUB_SPEEDUP:g} ({PYDUB_SPEEDUP:g}x faster)", 1 / PYDUB_SPEEDUP,
            ours_samples=list(sil_ff.ours_samples),
            note="pydub runs once per size: it decodes the whole file into memory and scans it sample by sample",
        )
        sil_pd.baseline_samples.append(
            run_step(
                "pydub_silence", input=src, threshold_dbfs=threshold[0], min_silence_ms=300
            )
        )
        _log(_last(sil_pd))
        measurements.insert(0, sil_pd)
    return measurements


@dataclass
class SpeedRow:
    """Runs of one step on one input, judged by x realtime (audio seconds per wall second)."""

    name: str
    size: str
    what: str
    audio_s: float
    target_x: float | None
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def row(self) -> dict[str, Any]:
        wall = statistics.median(s.wall_s for s in self.samples)
        cpu = statistics.median(s.cpu_s for s in self.samples)
        x = self.audio_s / wall
        return {
            "size": self.size,
            "name": self.name,
            "what": self.what,
            "audio_s": round(self.audio_s, 1),
            "runs": len(self.samples),
            "median_wall_s": round(wall, 2),
            "min_wall_s": round(min(s.wall_s for s in self.samples), 2),
            "max_wall_s": round(max(s.wall_s for s in self.samples), 2),
            "x_realtime": round(x, 2),
            "median_cpu_s": round(cpu, 2),
            "cpu_s_per_audio_s": round(cpu / self.audio_s, 4),
            "peak_rss_mb": max(s.peak_rss_mb for s in self.samples),
            "tree_rss_mb": max(s.tree_rss_mb for s in self.samples),
            "target": None if self.target_x is None else f">= {self.target_x:g}x realtime",
            "met": None if self.target_x is None else x >= self.target_x,
            "load_1m": [s.load_1m for s in self.samples],
            "load_1m_median": round(statistics.median(s.load_1m for s in self.samples), 2),
            "info": self.samples[-1].info,
            "note": self.note,
        }


def measure_transcription(
    sizes: Sequence[float], *, repeat: int, repeat_large: int, baseline_sizes: Sequence[float],
    rows: list[SpeedRow], write: Callable[[], None], model: str | None = None,
    every_chunk_twice: bool = False,
) -> None:
    """The ``transcript`` step on looped real speech: the product engine at every size, the
    pocketsphinx baseline at ``baseline_sizes``. Appends to ``rows`` and calls ``write``
    after every run. ``model`` measures another shipped Whisper model (``base``) in rows of
    its own, ``transcript_whisper_<model>``, which no target applies to;
    ``every_chunk_twice`` has the second opinion (``base``) hear every chunk, the step's
    worst case, in rows ``transcript_whisper_second_opinion_all``."""
    options: dict[str, Any] = {"model": model} if model else {}
    name = f"transcript_whisper_{model}" if model else "transcript_whisper"
    what = f"Whisper {model or 'tiny.en'}"
    if every_chunk_twice:
        options["second_opinion_below"] = 2.0
        name, what = "transcript_whisper_second_opinion_all", "Whisper tiny.en, then base on every chunk"
    for minutes in sizes:
        seconds = minutes * 60.0
        _log(f"transcription {minutes:g} min: preparing input")
        path = Path(_make_input("speech", "--seconds", f"{seconds:g}")["audio"])
        _warm(path)
        size = f"{minutes:g} min speech"
        ours = SpeedRow(
            name, size, f"transcribe(path): {what} + alignment + fillers",
            seconds, ASR_X_REALTIME if minutes >= 60 and not options else None,
            note=f"{_cores()} cores; model load included",
        )
        rows.append(ours)
        baseline = None
        if minutes in baseline_sizes:
            baseline = SpeedRow(
                "transcript_pocketsphinx", size,
                "transcribe(path, recogniser=PocketsphinxRecogniser())", seconds, None,
                note="baseline, one run: single-threaded and slow",
            )
        runs = repeat_large if minutes >= 60 else repeat
        if runs == 0 and baseline is not None:
            _log(f"transcription {size}: pocketsphinx baseline (load {_load()})")
            baseline.samples.append(run_step("transcribe", input=path, engine="pocketsphinx"))
            rows.append(baseline)
            write()
        for rep in range(runs):
            _log(f"transcription {size}: whisper run {rep + 1}/{runs} (load {_load()})")
            ours.samples.append(run_step("transcribe", input=path, engine="whisper", **options))
            _log(f"  {ours.samples[-1].wall_s:.1f} s wall, {ours.samples[-1].cpu_s:.1f} s CPU, "
                 f"{ours.samples[-1].peak_rss_mb:.0f} MB")
            write()
            if baseline is not None and rep == 0:
                _log(f"transcription {size}: pocketsphinx baseline (load {_load()})")
                baseline.samples.append(run_step("transcribe", input=path, engine="pocketsphinx"))
                _log(f"  {baseline.samples[-1].wall_s:.1f} s wall, "
                     f"{baseline.samples[-1].cpu_s:.1f} s CPU, "
                     f"{baseline.samples[-1].peak_rss_mb:.0f} MB")
                rows.append(baseline)
                write()


def measure_pod_run(minutes: float, *, repeat: int, rows: list[SpeedRow], write: Callable[[], None]) -> None:
    """A whole ``pod run`` of one episode (looped real speech) on the embedded default, in a
    fresh ``POD_HOME`` each time; the ingest is not timed."""
    seconds = minutes * 60.0
    path = Path(_make_input("speech", "--seconds", f"{seconds:g}")["audio"])
    _warm(path)
    pod = Path(sys.executable).with_name("pod")
    m = SpeedRow(
        "pod_run", f"{minutes:g} min episode", "pod run (all steps, embedded default)",
        seconds, POD_RUN_X_REALTIME,
        note="fresh POD_HOME (SQLite + local store) per run; pod ingest not timed",
    )
    rows.append(m)
    for rep in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-pod-home-") as home:
            env = {
                k: v for k, v in os.environ.items()
                if not (k.startswith("POD_") or k == "DAGSTER_HOME")
            }
            env["POD_HOME"] = home
            source = Path(home) / f"bench-episode-{minutes:g}min.flac"
            os.link(path, source) if _same_fs(path, Path(home)) else source.write_bytes(path.read_bytes())
            run_child([str(pod), "ingest", str(source)], env=env)
            _log(f"pod run {minutes:g} min: run {rep + 1}/{repeat} (load {_load()})")
            sample, stdout, _ = run_child([str(pod), "run"], env=env)
            status = subprocess.run(
                [str(pod), "status", "--json"], env=env, cwd=REPO, capture_output=True,
                text=True, check=False,
            )
            sample.info = _pod_status(status.stdout)
            if sample.info.get("status") != "processed":
                raise ChildFailed(f"pod run did not process the episode: {stdout[-2000:]}")
            m.samples.append(sample)
            _log(f"  {sample.wall_s:.1f} s wall, {sample.cpu_s:.1f} s CPU, "
                 f"peak {sample.peak_rss_mb:.0f} MB, tree {sample.tree_rss_mb:.0f} MB")
            write()


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _pod_status(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"status": None}
    episodes = data if isinstance(data, list) else data.get("episodes", [])
    if not episodes:
        return {"status": None}
    ep = episodes[0]
    metrics = ep.get("metrics") or {}
    return {
        "status": ep.get("status"),
        "error": ep.get("error"),
        **{k: metrics.get(k) for k in ("duration_s", "cleaned_duration_s", "final_duration_s",
                                      "fillers_removed", "loudness_lufs")},
    }


# --------------------------------------------------------------------------- memory rows


_MEMORY_STEPS = {
    "silence_vs_ffmpeg": "silence detection",
    "cleaned_audio_vs_ffmpeg_flac": "cleaned_audio",
    "final_episode_vs_ffmpeg_mp3": "final_episode",
    "transcript_whisper": "transcript (Whisper + alignment)",
}


def memory_rows(
    rows: Sequence[dict[str, Any]], sizes: Sequence[float], asr_sizes: Sequence[float] = ()
) -> list[dict[str, Any]]:
    """Peak RSS per step at the largest size (<= 300 MB; transcript <= 600 MB) and its growth
    from the smallest, both of the whole process tree (a step's encoder or search workers
    count: they are memory the step needs)."""
    out = []
    for name, label in _MEMORY_STEPS.items():
        by_size = {r["size"]: r for r in rows if r["name"] == name}
        if not by_size:
            continue
        limit = RSS_LIMIT_MB
        small, large = f"{min(sizes or [0]):g} min", f"{max(sizes or [0]):g} min"
        if name.startswith("transcript"):
            limit = ASR_RSS_LIMIT_MB
            small = f"{min(asr_sizes or [0]):g} min speech"
            large = f"{max(asr_sizes or [0]):g} min speech"
        if large in by_size:
            r = by_size[large]
            out.append({
                "step": label, "size": large, "peak_rss_mb": r["peak_rss_mb"],
                "tree_rss_mb": r["tree_rss_mb"], "target": f"<= {limit:g} MB",
                "met": r["tree_rss_mb"] <= limit,
            })
        if small in by_size and large in by_size and small != large:
            growth = by_size[large]["tree_rss_mb"] / by_size[small]["tree_rss_mb"]
            out.append({
                "step": label, "size": f"{small} -> {large}",
                "peak_rss_mb": by_size[large]["peak_rss_mb"],
                "tree_rss_mb": by_size[large]["tree_rss_mb"],
                "growth": round(growth, 3), "target": f"< {RSS_GROWTH_LIMIT:g}x",
                "met": growth < RSS_GROWTH_LIMIT,
            })
    return out


# --------------------------------------------------------------------------- reporting


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False)
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout.strip()
    return {
        "nproc": _cores(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "av": _version("av"),
        "av_ffmpeg": subprocess.run(
            [sys.executable, "-c", "import av; print(av.ffmpeg_version_info)"],
            capture_output=True, text=True, check=False,
        ).stdout.strip() or None,
        "ffmpeg_binary": _short_ffmpeg(ffmpeg.stdout.splitlines()[0]) if ffmpeg.stdout else None,
        "pydub": _version("pydub"),
        "pocketsphinx": _version("pocketsphinx"),
        "git_commit": commit or None,
    }


def _short_ffmpeg(version_line: str) -> str:
    """``"ffmpeg version 5.1.9-0+deb12u1 Copyright ..."`` -> ``"ffmpeg 5.1.9-0+deb12u1"``."""
    words = version_line.split()
    return f"ffmpeg {words[2]}" if len(words) > 2 and words[1] == "version" else version_line


def _fmt_ratio(row: dict[str, Any]) -> str:
    ratio = row["ratio"]
    if row["name"] == "silence_vs_pydub":
        return f"{ratio:.3f} ({1 / ratio:.0f}x faster)"
    return f"{ratio:.2f}"


def _mark(met: bool | None) -> str:
    return "—" if met is None else ("✓" if met else "✗")


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['timestamp']} on {m['nproc']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Python {m['python']}, numpy {m['numpy']}, "
        f"PyAV {m['av']} (FFmpeg {m['av_ffmpeg']}), binary {_short_ffmpeg(m['ffmpeg_binary'] or '?')}. "
        f"Load average before/after: {results['load_before']} / {results['load_after']}.",
        "",
        f"Medians of {results['repeat']} runs per side (pydub: 1 run per size), each run a "
        "fresh process; ratio = ours / baseline of the median wall times (lower is better "
        "for us); CPU ratio = the same for user + system CPU time, which depends less on "
        "what else the machine runs; load = median 1-minute load average at the start of "
        "the runs. See `docs/benchmarks.md` for how to read it.",
        "",
        "| size | measurement | ours | baseline | ours median s | baseline median s | ratio | target | met | CPU ratio | ours peak RSS MB | baseline peak RSS MB | load |",
        "|---|---|---|---|---:|---:|---:|---|:-:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        carried = " (carried over)" if r.get("carried_over_from") else ""
        lines.append(
            f"| {r['size']} | {r['name']}{carried} | {r['ours']} | {r['baseline']} | "
            f"{r['ours_median_s']:.2f} | {r['baseline_median_s']:.2f} | {_fmt_ratio(r)} | "
            f"{r['target'] or '—'} | {_mark(r['met'])} | {r['cpu_ratio']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['baseline_peak_rss_mb']:.0f} | {r['load_1m_median']:.1f} |"
        )
    if results.get("speed_rows"):
        lines += [
            "",
            "## Transcription and the whole run",
            "",
            "Each run a fresh process (`python -m bench.steps transcribe`, or `pod run` in a fresh "
            "`POD_HOME`); x realtime = audio seconds / median wall seconds of the whole process "
            "(start-up and model load included); CPU s per audio s = median user + system CPU "
            "of the process and its children / audio seconds; load = 1-minute load average at "
            "the start of each run.",
            "",
            "| size | measurement | runs | median wall s (min-max) | x realtime | CPU s per audio s | peak RSS MB | tree RSS MB | target | met | load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|:-:|---|",
        ]
        for r in results["speed_rows"]:
            loads = ", ".join(f"{x:.1f}" for x in r["load_1m"])
            lines.append(
                f"| {r['size']} | {r['name']}: {r['what']}{' (carried over)' if r.get('carried_over_from') else ''} | {r['runs']} | "
                f"{r['median_wall_s']:.1f} ({r['min_wall_s']:.1f}-{r['max_wall_s']:.1f}) | "
                f"{r['x_realtime']:.1f}x | {r['cpu_s_per_audio_s']:.3f} | {r['peak_rss_mb']:.0f} | "
                f"{r['tree_rss_mb']:.0f} | {r['target'] or '—'} | {_mark(r['met'])} | {loads} |"
            )
    lines += [
        "",
        "## Peak memory",
        "",
        "Peak RSS is the largest single process of a run (`ru_maxrss` from `wait4`); "
        "tree RSS is the largest sampled sum over the process and its children (50 ms samples): "
        "the targets are judged on it, since an encoder or a search worker is memory the step needs. "
        f"The runner's own peak RSS, the floor of every child's, was {results['runner_peak_rss_mb']:.0f} MB.",
        "",
        "| step | size | peak RSS MB | tree RSS MB | growth | target | met |",
        "|---|---|---:|---:|---:|---|:-:|",
    ]
    for r in results["memory"]:
        growth = f"{r['growth']:.2f}x" if "growth" in r else ""
        tree = f"{r['tree_rss_mb']:.0f}" if "tree_rss_mb" in r else ""
        carried = " (carried over)" if r.get("carried_over_from") else ""
        lines.append(
            f"| {r['step']}{carried} | {r['size']} | {r['peak_rss_mb']:.0f} | {tree} | {growth} | "
            f"{r['target']} | {_mark(r['met'])} |"
        )
    notes = sorted({f"{r['name']}: {r['note']}" for r in results["rows"] if r.get("note")})
    if notes or results.get("notes"):
        lines += ["", "Notes:", ""]
        lines += [f"- {n}" for n in notes]
        lines += [f"- {n}" for n in results.get("notes", [])]
    met = [
        r for r in [*results["rows"], *results.get("speed_rows", []), *results["memory"]]
        if r["met"] is not None
    ]
    lines += [
        "",
        f"Targets met: {sum(1 for r in met if r['met'])} of {len(met)}. "
        f"Total bench time {results['elapsed_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="episode lengths in minutes (default 15,60)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument(
        "--repeat-large", type=int, default=None,
        help="runs per side for sizes of 60 min and more (default: --repeat)",
    )
    parser.add_argument("--quick", action="store_true",
                        help="2 and 5 min episodes, 1 and 2 min of speech, 1 min pod run")
    parser.add_argument("--no-pydub", action="store_true", help="skip pydub entirely")
    parser.add_argument("--no-pydub-60", action="store_true", help="skip pydub for 60 min and longer")
    parser.add_argument("--no-episodes", action="store_true",
                        help="skip the silence, cleaning and mastering rows (keep those of the "
                             "previous results.json, marked as carried over)")
    parser.add_argument("--asr-sizes", default=None,
                        help="minutes of speech for the transcript step (default 15,60)")
    parser.add_argument("--asr-baseline-sizes", default=None,
                        help="sizes at which the pocketsphinx baseline runs once (default: the smallest)")
    parser.add_argument("--asr-model", default=None,
                        help="measure this shipped Whisper model (base) instead of the default, "
                             "in rows of its own")
    parser.add_argument("--asr-every-chunk-twice", action="store_true",
                        help="measure the worst case of the second opinion: base hears every "
                             "chunk after tiny.en, in rows of their own")
    parser.add_argument("--no-asr", action="store_true", help="skip transcription")
    parser.add_argument("--pod-run-minutes", type=float, default=None,
                        help="length of the episode for the whole pod run (default 30; 0: skip)")
    parser.add_argument("--pod-run-repeat", type=int, default=1)
    parser.add_argument("--carry-over", action="store_true",
                        help="keep the transcription and pod run rows of the previous results.json "
                             "that this run does not measure (marked as carried over)")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument(
        "--render", type=Path, metavar="RESULTS_JSON",
        help="only rewrite results.md next to RESULTS_JSON from it (no measuring)",
    )
    args = parser.parse_args(argv)
    if args.render:
        stored = json.loads(args.render.read_text())
        (args.render.parent / "results.md").write_text(render_markdown(stored))
        return 0

    sizes = [float(s) for s in (args.sizes or ("2,5" if args.quick else "15,60")).split(",")]
    asr_sizes = [] if args.no_asr else [
        float(s) for s in (args.asr_sizes or ("1,2" if args.quick else "15,60")).split(",")
    ]
    baseline_sizes = (
        [float(s) for s in args.asr_baseline_sizes.split(",") if s.strip()]
        if args.asr_baseline_sizes is not None
        else asr_sizes[:1] and [min(asr_sizes)]
    )
    pod_minutes = args.pod_run_minutes if args.pod_run_minutes is not None else (
        1.0 if args.quick else 30.0
    )
    results_dir = args.results_dir or (OUT_DIR / "quick" if args.quick else REPO / "bench")
    results_dir.mkdir(parents=True, exist_ok=True)
    work_dir = (results_dir if args.quick else OUT_DIR) / "runs"
    previous_path = results_dir / "results.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else None

    started = time.perf_counter()
    results: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_before": _load(),
        "repeat": args.repeat,
        "repeat_large": args.repeat_large or args.repeat,
        "sizes_min": [] if args.no_episodes else sizes,
        "asr_sizes_min": asr_sizes,
        "asr_baseline_sizes_min": baseline_sizes,
        "pod_run_minutes": pod_minutes,
        "notes": [],
        "rows": [],
        "speed_rows": [],
        "memory": [],
        "samples": [],
    }
    measurements: list[Measurement] = []
    speed_rows: list[SpeedRow] = []
    carried: list[dict[str, Any]] = []
    carried_memory: list[dict[str, Any]] = []
    if args.no_episodes and previous:
        stamp = previous.get("timestamp")
        episode_names = {"silence_vs_pydub", "silence_vs_ffmpeg", "cleaned_audio_vs_ffmpeg_flac",
                         "final_episode_vs_ffmpeg_mp3"}
        carried = [
            {**r, "carried_over_from": r.get("carried_over_from", stamp)}
            for r in previous.get("rows", []) if r["name"] in episode_names
        ]
        carried_memory = [
            {**r, "carried_over_from": r.get("carried_over_from", stamp)}
            for r in previous.get("memory", [])
            if not str(r["step"]).startswith("transcri")
        ]
        if carried:
            results["notes"].append(
                f"silence, cleaned_audio and final_episode rows carried over from the run of "
                f"{carried[0]['carried_over_from']} (not measured again in this run)"
            )
        results["carried_samples"] = [
            x for x in previous.get("samples", []) if x["name"] in episode_names
        ] or previous.get("carried_samples", [])
    carried_speed: list[dict[str, Any]] = []
    ours_name = (
        "transcript_whisper_second_opinion_all" if args.asr_every_chunk_twice
        else f"transcript_whisper_{args.asr_model}" if args.asr_model else "transcript_whisper"
    )
    if args.carry_over and previous:
        measured: set[tuple[str, str]] = set()
        for m in asr_sizes:
            if (args.repeat_large if m >= 60 else args.repeat) or 0:
                measured.add((ours_name, f"{m:g} min speech"))
            if m in baseline_sizes:
                measured.add(("transcript_pocketsphinx", f"{m:g} min speech"))
        if pod_minutes > 0:
            measured.add(("pod_run", f"{pod_minutes:g} min episode"))
        carried_speed = [
            {**r, "carried_over_from": r.get("carried_over_from", previous.get("timestamp"))}
            for r in previous.get("speed_rows", [])
            if (r["name"], r["size"]) not in measured
        ]
        results["carried_speed_samples"] = [
            x for x in previous.get("samples", [])
            if "runs" in x and (x["name"], x["size"]) not in measured
        ] + previous.get("carried_speed_samples", [])
        for r in carried_speed:
            results["notes"].append(
                f"{r['name']} at {r['size']} carried over from the run of {r['carried_over_from']}"
            )

    def write() -> None:
        results["rows"] = carried + [m.row() for m in measurements]
        results["speed_rows"] = carried_speed + [m.row() for m in speed_rows if m.samples]
        all_asr_sizes = sorted(
            {float(r["size"].split()[0]) for r in results["speed_rows"]
             if r["name"] == "transcript_whisper"}
        )
        results["memory"] = (
            carried_memory
            + memory_rows([m.row() for m in measurements], sizes)
            + memory_rows(results["speed_rows"], [], all_asr_sizes)
        )
        results["samples"] = [
            {
                "size": m.size,
                "name": m.name,
                "ours": [asdict(s) for s in m.ours_samples],
                "baseline": [asdict(s) for s in m.baseline_samples],
            }
            for m in measurements
        ] + [
            {"size": m.size, "name": m.name, "runs": [asdict(s) for s in m.samples]}
            for m in speed_rows
        ]
        results["load_after"] = _load()
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        results["runner_peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1
        )
        (results_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (results_dir / "results.md").write_text(render_markdown(results))

    if args.repeat_large and args.repeat_large != args.repeat:
        results["notes"].append(
            f"{args.repeat_large} runs per side for sizes of 60 min and more, {args.repeat} below"
        )
    if not args.no_episodes:
        for minutes in sizes:
            repeat = args.repeat_large if (args.repeat_large and minutes >= 60) else args.repeat
            pydub = not args.no_pydub and not (args.no_pydub_60 and minutes >= 60)
            if not pydub:
                results["notes"].append(f"pydub skipped for {minutes:g} min")
            measurements += measure_episode(minutes, repeat=repeat, pydub=pydub, work_dir=work_dir)
            write()
    if asr_sizes:
        measure_transcription(
            asr_sizes, repeat=args.repeat, repeat_large=args.repeat_large or args.repeat,
            baseline_sizes=baseline_sizes, rows=speed_rows, write=write, model=args.asr_model,
            every_chunk_twice=args.asr_every_chunk_twice,
        )
    if pod_minutes > 0:
        measure_pod_run(pod_minutes, repeat=args.pod_run_repeat, rows=speed_rows, write=write)
    write()
    _log(f"wrote {results_dir / 'results.json'} and {results_dir / 'results.md'}")
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
