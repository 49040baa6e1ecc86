"""Measure transcription and filler detection on speech with known truth, for the product
engine and the pocketsphinx baseline side by side in one run.

Engines:

``whisper``
    the product: :func:`pod_audio.asr.transcribe` with its defaults (Whisper ``tiny.en``,
    words force-aligned by pocketsphinx, fillers searched only between aligned words).
``pocketsphinx``
    the baseline: ``transcribe(path, recogniser=PocketsphinxRecogniser())`` (pocketsphinx's
    language model and the acoustic filler detector over the whole chunk).

Each engine runs in a child process of its own (``--transcribe``) over every set, so its
peak RSS is its own; the parent scores what the children wrote. The sets and what is known
about them are described in :mod:`bench.corpus`.

Measured per set and engine:

- **WER**: words compared after normalising case, punctuation and numbers
  (:func:`pod_audio.align.dictionary_tokens`); fillers are left out on both sides.
- **word boundaries** (sets built word by word): ``|start error|`` and ``|end error|`` of
  every reference word the engine got right (Levenshtein alignment), pooled; median and
  p95. Also over *context-correct* words, whose neighbours were recognised right as well,
  which separates alignment error from recognition error.
- **fillers**: a detection (a word with ``is_filler=True``) is correct when its centre lies
  within a true filler's span +/- 100 ms; each true filler matches at most one detection.
- **real words cut**: filler detections overlapping a true non-filler speech span
  (:attr:`bench.corpus.Item.speech_spans`) by more than 20 ms. Must be zero for the product.
- **speed**: audio seconds per wall second (x realtime) and CPU seconds per audio second,
  around each ``transcribe`` call (the model is loaded before the clock starts); peak RSS of
  the engine's child process.

Usage::

    .venv/bin/python -m bench.filler_eval            # table + bench/filler_results.json
    .venv/bin/python -m bench.filler_eval --quick    # 10 files per synthetic set, fewer elsewhere
    .venv/bin/python -m bench.filler_eval --fit      # refit the detector on what the product
                                                     # sees; compare old and new constants
    .venv/bin/python -m bench.filler_eval --funnel   # also: which check lost each missed
                                                     # filler (bench/filler_funnel.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import corpus, filler_funnel  # noqa: E402
from bench.corpus import JFK_PATH, SR, Item, TrueFiller, read_16k  # noqa: E402
from pod_audio import filler_candidates, fillers  # noqa: E402
from pod_audio.align import dictionary_tokens  # noqa: E402
from pod_audio.dsp import as_int16  # noqa: E402
from pod_audio.whisper import WhisperSettings  # noqa: E402

MATCH_TOLERANCE_S = 0.1
MAX_WORD_OVERLAP_S = 0.02
RESULTS_PATH = REPO / "bench" / "filler_results.json"
ENGINES = ("whisper", "pocketsphinx")
ENGINE_LABELS = {
    "whisper": "Whisper tiny.en + alignment (product)",
    "pocketsphinx": "pocketsphinx LM + whole-chunk detector (baseline)",
}
TARGETS = {
    "precision_heldout": 0.95,
    "recall_heldout": 0.85,
    "real_words_cut": 0,
    "wer_synthetic": 0.15,
    "jfk_words_right": True,
}
HELDOUT_FILLER_SETS = ("synthetic_heldout", "jfk_mix", "held_vowel")


# --------------------------------------------------------------------------- scoring


@dataclass
class SetScore:
    name: str
    engine: str
    files: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    filler_cpu_s: float = 0.0
    ref_words: int = 0
    word_errors: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    files_all_words_right: int = 0
    boundary_errors_s: list[float] = field(default_factory=list)
    boundary_errors_context_s: list[float] = field(default_factory=list)
    start_errors_s: list[float] = field(default_factory=list)
    end_errors_s: list[float] = field(default_factory=list)
    matched_words: int = 0
    context_words: int = 0
    true_fillers: int = 0
    detections: int = 0
    true_positives: int = 0
    recall_by_context: dict[str, list[int]] = field(default_factory=dict)
    labels_correct: int = 0
    coverage: list[float] = field(default_factory=list)
    real_words_cut: int = 0
    cuts: list[str] = field(default_factory=list)
    false_positive_words: list[str] = field(default_factory=list)
    word_errors_shown: list[str] = field(default_factory=list)
    lost_at: dict[str, int] = field(default_factory=dict)
    """With ``--funnel``: true fillers per stage of the search that lost them (``found``
    too); see :mod:`bench.filler_funnel`."""

    @property
    def precision(self) -> float:
        return self.true_positives / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_fillers if self.true_fillers else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def wer(self) -> float:
        return self.word_errors / self.ref_words if self.ref_words else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "engine": self.engine,
            "files": self.files,
            "audio_s": round(self.audio_s, 2),
            "wer": round(self.wer, 4),
            "ref_words": self.ref_words,
            "word_errors": self.word_errors,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "files_all_words_right": self.files_all_words_right,
            "boundary": _boundary_summary(self.boundary_errors_s, self.matched_words),
            "boundary_context_correct": _boundary_summary(
                self.boundary_errors_context_s, self.context_words
            ),
            "start_error_ms_median": _ms(_percentile(self.start_errors_s, 50)),
            "end_error_ms_median": _ms(_percentile(self.end_errors_s, 50)),
            "true_fillers": self.true_fillers,
            "detections": self.detections,
            "true_positives": self.true_positives,
            "false_positives": self.detections - self.true_positives,
            "precision": round(self.precision, 3),
            "recall": round(self.recall, 3),
            "f1": round(self.f1, 3),
            "label_accuracy": (
                round(self.labels_correct / self.true_positives, 3) if self.true_positives else None
            ),
            "span_coverage_median": _percentile(self.coverage, 50),
            "recall_by_context": {
                k: {"found": v[0], "total": v[1]} for k, v in sorted(self.recall_by_context.items())
            },
            **({"lost_at": dict(sorted(self.lost_at.items()))} if self.lost_at else {}),
            "real_words_cut": self.real_words_cut,
            "cuts": self.cuts,
            "false_positive_words": self.false_positive_words,
            "word_errors_examples": self.word_errors_shown[:12],
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            "x_realtime_wall": round(self.audio_s / self.wall_s, 2) if self.wall_s else None,
            "x_realtime_cpu": round(self.audio_s / self.cpu_s, 2) if self.cpu_s else None,
            "cpu_s_per_audio_s": round(self.cpu_s / self.audio_s, 4) if self.audio_s else None,
            "filler_cpu_s_per_audio_s": (
                round(self.filler_cpu_s / self.audio_s, 4) if self.audio_s else None
            ),
        }


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if len(values) else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _boundary_summary(errors: Sequence[float], words: int) -> dict[str, Any]:
    return {
        "words": words,
        "median_ms": _ms(_percentile(errors, 50)),
        "p95_ms": _ms(_percentile(errors, 95)),
        "max_ms": _ms(max(errors) if errors else None),
    }


def tokens_of(text: str) -> list[str]:
    """Normalised tokens of a written word (case, punctuation and numbers normalised)."""
    return dictionary_tokens(text)


def align_tokens(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """Levenshtein alignment of two token lists: pairs (ref index or None, hyp index or None)."""
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(
                cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]),
                cost[i - 1, j] + 1,
                cost[i, j - 1] + 1,
            )
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def match(
    detections: Sequence[tuple[float, float]], truth: Sequence[TrueFiller]
) -> list[int | None]:
    """Pair detections ``(start_s, end_s)`` with true fillers, each detection used at most once.

    Returns, for each true filler, the index of the first unused detection whose centre lies
    in the filler's span +/- :data:`MATCH_TOLERANCE_S`, or ``None``.
    """
    used: set[int] = set()
    pairs: list[int | None] = []
    for filler in truth:
        pair = None
        for i, (start, end) in enumerate(detections):
            centre = (start + end) / 2
            low, high = filler.start_s - MATCH_TOLERANCE_S, filler.end_s + MATCH_TOLERANCE_S
            if i not in used and low <= centre <= high:
                used.add(i)
                pair = i
                break
        pairs.append(pair)
    return pairs


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def score_item(
    score: SetScore, item: Item, words: Sequence[dict[str, Any]], row: dict[str, Any] | None = None
) -> None:
    """Add one file's transcript (words as dicts: text, start_s, end_s, is_filler) to ``score``;
    ``row``, the engine's whole output for the file, adds the funnel where it was recorded."""
    label = f"{Path(item.path).parent.name}/{Path(item.path).name}"
    score.files += 1
    score.audio_s += item.duration_s

    # Words.
    lexical = [w for w in words if not w["is_filler"]]
    hyp_tokens: list[str] = []
    hyp_word: list[int] = []
    for index, w in enumerate(lexical):
        for token in tokens_of(w["text"]):
            hyp_tokens.append(token)
            hyp_word.append(index)
    ref_tokens: list[str] = []
    ref_word: list[int] = []
    for index, text in enumerate(item.reference):
        for token in tokens_of(text):
            ref_tokens.append(token)
            ref_word.append(index)
    pairs = align_tokens(ref_tokens, hyp_tokens)
    errors = 0
    right = [False] * len(ref_tokens)
    for r, h in pairs:
        if r is None:
            score.insertions += 1
            errors += 1
        elif h is None:
            score.deletions += 1
            errors += 1
        elif ref_tokens[r] != hyp_tokens[h]:
            score.substitutions += 1
            errors += 1
        else:
            right[r] = True
    score.ref_words += len(ref_tokens)
    score.word_errors += errors
    score.files_all_words_right += errors == 0
    if errors:
        shown = " ".join(hyp_tokens)
        score.word_errors_shown.append(f"{label}: {errors} errors: {shown[:160]}")

    # Word boundaries (sets built word by word: one token per reference word).
    if item.words and len(ref_tokens) == len(item.words):
        for r, h in pairs:
            if r is None or h is None or not right[r]:
                continue
            hyp = lexical[hyp_word[h]]
            if len(tokens_of(hyp["text"])) != 1:
                continue
            true = item.words[r]
            start_err = abs(hyp["start_s"] - true.start_s)
            end_err = abs(hyp["end_s"] - true.end_s)
            score.start_errors_s.append(start_err)
            score.end_errors_s.append(end_err)
            score.boundary_errors_s += [start_err, end_err]
            score.matched_words += 1
            neighbours_right = (r == 0 or right[r - 1]) and (r == len(right) - 1 or right[r + 1])
            if neighbours_right:
                score.boundary_errors_context_s += [start_err, end_err]
                score.context_words += 1

    # Fillers.
    detected = [w for w in words if w["is_filler"]]
    found = match([(w["start_s"], w["end_s"]) for w in detected], item.fillers)
    used = {pair for pair in found if pair is not None}
    score.true_fillers += len(item.fillers)
    score.detections += len(detected)
    score.true_positives += len(used)
    for filler, pair in zip(item.fillers, found):
        counts = score.recall_by_context.setdefault(filler.context, [0, 0])
        counts[0] += pair is not None
        counts[1] += 1
        if pair is not None:
            w = detected[pair]
            score.labels_correct += w["text"] == filler.text
            inside = _overlap(w["start_s"], w["end_s"], filler.start_s, filler.end_s)
            score.coverage.append(inside / (filler.end_s - filler.start_s))
    if row is not None and "funnel" in row:
        matched = [f for f, pair in zip(item.fillers, found) if pair is not None]
        for stage in filler_funnel.lost_at(item, matched, row):
            score.lost_at[stage] = score.lost_at.get(stage, 0) + 1
    score.false_positive_words += [
        f"{label}@{w['start_s']:.2f}-{w['end_s']:.2f}:{w['text']}"
        for i, w in enumerate(detected)
        if i not in used
    ]

    # Real words cut.
    for w in detected:
        worst = max(
            (_overlap(w["start_s"], w["end_s"], a, b) for a, b in item.speech_spans), default=0.0
        )
        if worst > MAX_WORD_OVERLAP_S:
            score.real_words_cut += 1
            score.cuts.append(
                f"{label}@{w['start_s']:.2f}-{w['end_s']:.2f}:{w['text']} "
                f"overlaps speech by {worst * 1000:.0f} ms"
            )


# --------------------------------------------------------------------------- engines (child)


class _FillerTimer:
    """Adds up the CPU time (of the calling thread) spent in
    :func:`pod_audio.fillers.detect_fillers`."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self._original: Callable[..., Any] = fillers.detect_fillers

    def __enter__(self) -> _FillerTimer:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return self._original(*args, **kwargs)
            finally:
                self.cpu_s += time.thread_time() - start

        fillers.detect_fillers = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        fillers.detect_fillers = self._original  # type: ignore[assignment]


def apply_constants(constants: dict[str, Any]) -> None:
    """Use other fitted constants in this process (as if pasted into pod_audio/filler_candidates.py)."""
    filler_candidates._FEATURE_MEAN = np.array(constants["feature_mean"])  # type: ignore[attr-defined]
    filler_candidates._FEATURE_SCALE = np.array(constants["feature_scale"])  # type: ignore[attr-defined]
    filler_candidates._WEIGHTS = np.array(constants["weights"])  # type: ignore[attr-defined]
    filler_candidates._BIAS = float(constants["bias"])  # type: ignore[attr-defined]
    if "threshold" in constants:
        threshold = float(constants["threshold"])
        fillers.DEFAULT_THRESHOLD = threshold
        for function in (fillers.detect_fillers, fillers.fillers_between_words):
            if function.__kwdefaults__ and "threshold" in function.__kwdefaults__:
                function.__kwdefaults__["threshold"] = threshold


def _transcribe_all(
    engine: str, manifest: Path, out: Path, model: str | None = None, *, funnel: bool = False,
    beam_size: int | None = None,
) -> None:
    """Child process: transcribe every item of the manifest with ``engine`` (the product's
    Whisper ``model``, default tiny.en, and ``beam_size``), write words and timings as JSON;
    with ``funnel``, also the filler search's candidates and checks
    (:mod:`bench.filler_funnel`)."""
    from pod_audio import asr
    from pod_audio.pocketsphinx_engine import PocketsphinxRecogniser

    sets = corpus.load_manifest(manifest)

    from bench.steps import whisper_recogniser

    recogniser = whisper_recogniser(model, beam_size) if engine == "whisper" else None

    def run(path: str):  # noqa: ANN202
        if engine == "whisper":
            return asr.transcribe(path, recogniser=recogniser)
        return asr.transcribe(path, recogniser=PocketsphinxRecogniser())

    started = time.perf_counter()
    run(str(JFK_PATH))  # load the model (and warm the caches) before the clock starts
    warmup_s = time.perf_counter() - started
    results: dict[str, list[dict[str, Any]]] = {}
    for name, items in sets.items():
        rows = []
        for item in items:
            recorder = filler_funnel.Recorder() if funnel and engine == "whisper" else None
            with _FillerTimer() as timer, recorder or contextlib.nullcontext():
                wall0, cpu0 = time.perf_counter(), time.process_time()
                transcript = run(item.path)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            rows.append({
                **({"funnel": recorder.events} if recorder else {}),
                "path": item.path,
                "wall_s": wall,
                "cpu_s": cpu,
                "filler_cpu_s": timer.cpu_s,
                "words": [
                    {"text": w.text, "start_s": w.start_s, "end_s": w.end_s,
                     "is_filler": w.is_filler, "confidence": w.confidence}
                    for w in transcript.words
                ],
                "chunks": transcript.extra.get("chunks"),
                "chunks_second_opinion": transcript.extra.get("chunks_second_opinion"),
            })
        results[name] = rows
    out.write_text(json.dumps({"engine": engine, "warmup_s": warmup_s, "sets": results}))


QUICK_FILES = {
    "synthetic_tune": 10, "synthetic_heldout": 10, "jfk_mix_dev": 5, "jfk_mix": 5,
    "jfk_alone": 1, "word_timing": 4, "held_vowel": 6,
}
"""Files per set with ``--quick`` (and for the baseline with ``--baseline-files quick``)."""


def subset(sets: dict[str, list[Item]], counts: dict[str, int]) -> dict[str, list[Item]]:
    """The first files of each set (the same files a smaller run builds)."""
    return {name: items[: counts.get(name, len(items))] for name, items in sets.items()}


def restrict(data: dict[str, Any], sets: dict[str, list[Item]]) -> dict[str, Any]:
    """An engine's output restricted to the files of ``sets``."""
    out = dict(data)
    out["sets"] = {name: data["sets"][name][: len(items)] for name, items in sets.items()}
    return out


def run_engine(
    engine: str, manifest: Path, work: Path, constants: Path | None, *, reuse: bool = False,
    model: str | None = None, funnel: bool = False, beam_size: int | None = None,
) -> dict[str, Any]:
    """Run one engine over the manifest in a child process; its output plus the child's
    wall time, CPU time and peak RSS. With ``reuse``, an earlier output for the same
    manifest in ``work`` is read instead, if it was made by the same code (algorithm
    version) with the same options."""
    from bench.run import run_child
    from pod_audio.asr import ALGORITHM_VERSION

    out = work / f"{engine}.json"
    done = work / f"{engine}.process.json"
    options = {
        "algorithm_version": ALGORITHM_VERSION,
        "constants": str(constants) if constants is not None else None,
        "model": model if engine == "whisper" else None,
        "beam_size": beam_size if engine == "whisper" else None,
        "funnel": funnel and engine == "whisper",
    }
    if reuse and out.exists() and done.exists():
        data = json.loads(out.read_text())
        process = json.loads(done.read_text())
        wanted = corpus.load_manifest(manifest)
        if process.get("options") != options:
            print(f"{engine}: not reusing {out}: made with {process.get('options')}", flush=True)
        elif all(
            [r["path"] for r in data["sets"].get(name, [])] == [i.path for i in items]
            for name, items in wanted.items()
        ):
            data["process"] = process
            print(f"{engine}: reusing {out}", flush=True)
            return data
    argv = [sys.executable, "-m", "bench.filler_eval", "--transcribe", engine,
            "--manifest", str(manifest), "--engine-out", str(out)]
    if constants is not None:
        argv += ["--constants", str(constants)]
    if model and engine == "whisper":
        argv += ["--model", model]
    if funnel:
        argv += ["--funnel"]
    if beam_size and engine == "whisper":
        argv += ["--beam-size", str(beam_size)]
    print(f"[{time.strftime('%H:%M:%S')}] {engine}: transcribing (load {_load()})", flush=True)
    sample, _, _ = run_child(argv)
    data = json.loads(out.read_text())
    data["process"] = {
        "wall_s": sample.wall_s, "cpu_s": sample.cpu_s, "peak_rss_mb": sample.peak_rss_mb,
        "tree_rss_mb": sample.tree_rss_mb, "load_1m_at_start": sample.load_1m,
        "load_1m_at_end": round(os.getloadavg()[0], 2), "options": options,
    }
    done.write_text(json.dumps(data["process"]))
    print(
        f"[{time.strftime('%H:%M:%S')}] {engine}: {sample.wall_s:.0f} s wall, "
        f"{sample.cpu_s:.0f} s CPU, peak RSS {sample.peak_rss_mb:.0f} MB", flush=True,
    )
    return data


def score_engine(sets: dict[str, list[Item]], data: dict[str, Any]) -> list[SetScore]:
    scores = []
    for name, items in sets.items():
        score = SetScore(name, data["engine"])
        for item, row in zip(items, data["sets"][name]):
            assert row["path"] == item.path
            score.wall_s += row["wall_s"]
            score.cpu_s += row["cpu_s"]
            score.filler_cpu_s += row["filler_cpu_s"]
            score_item(score, item, row["words"], row)
        scores.append(score)
    return scores


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- fitting


def aligned_words_of(items: Sequence[Item], cache_path: Path) -> list[dict[str, Any]]:
    """What the product hands to the filler search for each (single-chunk) file: Whisper's
    words, force-aligned and tightened, spelled fillers flagged, and which were aligned.
    Cached in ``cache_path`` (keyed by file)."""
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    missing = [item for item in items if item.path not in cache]
    if missing:
        from pod_audio import asr
        from pod_audio.align import align_words

        engine = asr.default_recogniser()
        for n, item in enumerate(missing):
            pcm = as_int16(read_16k(item.path))
            words = engine.recognise(pcm.astype(np.float32) / 32768.0)
            result = align_words(pcm, words) if words else None
            aligned_words = list(result.words) if result else []
            flags = list(result.aligned) if result else []
            aligned_words = [fillers.flag_spelled_filler(w) for w in aligned_words]
            cache[item.path] = {
                "words": [[w.text, w.start_s, w.end_s, w.confidence, w.is_filler]
                          for w in aligned_words],
                "aligned": flags,
            }
            if n % 10 == 9:
                cache_path.write_text(json.dumps(cache))
        cache_path.write_text(json.dumps(cache))
    return [cache[item.path] for item in items]


def _words(entry: dict[str, Any]):  # noqa: ANN202
    from pod_audio.transcript import Word

    return [Word(t, s, e, c, f) for t, s, e, c, f in entry["words"]], entry["aligned"]


def candidate_rows(
    items: Sequence[Item], aligned: Sequence[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors of the filler candidates the product scores in ``items`` and whether
    each is a filler.

    As in :func:`pod_audio.fillers.fillers_between_words`: the recogniser's segments are the
    aligned non-filler Whisper words, and only candidates that keep at least 60 % of their
    length (and 0.12 s) once clipped to the gap between words count. A candidate is a filler
    when the centre of its clipped span lies within a true filler's span +/- the match
    tolerance.
    """
    vectors: list[np.ndarray] = []
    labels: list[bool] = []
    for item, entry in zip(items, aligned):
        words, flags = _words(entry)
        pcm = (np.clip(read_16k(item.path), -1, 1) * 32767).round().astype(np.int16)
        gaps = fillers._gaps_between(words, flags, duration_s=len(pcm) / SR)
        if not gaps:
            continue
        lexical = [w for w in words if not w.is_filler]
        table = fillers.candidate_table(pcm, segments=lexical)
        for candidate, vector in zip(table.candidates, table.vectors):
            best = max(gaps, key=lambda g: _overlap(g[0], g[1], candidate.start_s, candidate.end_s))
            start, end = max(candidate.start_s, best[0]), min(candidate.end_s, best[1])
            length = candidate.end_s - candidate.start_s
            if end - start < 0.12 or end - start < 0.6 * length:
                continue
            centre = (start + end) / 2
            vectors.append(vector)
            labels.append(
                any(
                    f.start_s - MATCH_TOLERANCE_S <= centre <= f.end_s + MATCH_TOLERANCE_S
                    for f in item.fillers
                )
            )
    return np.array(vectors).reshape(-1, len(filler_candidates.FEATURE_NAMES)), np.array(labels, dtype=float)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iterations: int = 4000, rate: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-regularised logistic regression on standardised features by gradient descent, each
    weight held to the sign :data:`pod_audio.filler_candidates.FEATURE_SIGNS` allows.

    Returns ``(mean, scale, weights, bias)``.
    """
    signs = np.array([filler_candidates.FEATURE_SIGNS[name] for name in filler_candidates.FEATURE_NAMES])
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    weights = np.zeros(x.shape[1])
    bias = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ weights + bias)))
        error = p - y
        weights -= rate * (z.T @ error / len(y) + l2 * weights / len(y))
        bias -= rate * float(error.mean())
        weights = np.where(signs > 0, np.maximum(weights, 0), weights)
        weights = np.where(signs < 0, np.minimum(weights, 0), weights)
    return mean, scale, weights, bias


def current_constants() -> dict[str, Any]:
    return {
        "feature_mean": filler_candidates._FEATURE_MEAN.tolist(),  # type: ignore[attr-defined]
        "feature_scale": filler_candidates._FEATURE_SCALE.tolist(),  # type: ignore[attr-defined]
        "weights": filler_candidates._WEIGHTS.tolist(),  # type: ignore[attr-defined]
        "bias": float(filler_candidates._BIAS),  # type: ignore[attr-defined]
        "threshold": float(fillers.DEFAULT_THRESHOLD),
    }


def fast_filler_scores(
    sets: dict[str, list[Item]], aligned: dict[str, list[dict[str, Any]]],
    constants: dict[str, Any],
) -> list[SetScore]:
    """Filler precision, recall and real words cut of the product's filler search with
    ``constants``, from the cached aligned words (single-chunk files: the same words
    ``transcribe`` hands to :func:`pod_audio.fillers.fillers_between_words`)."""
    saved = current_constants()
    apply_constants(constants)
    try:
        scores = []
        for name, items in sets.items():
            score = SetScore(name, "whisper (fast path)")
            for item, entry in zip(items, aligned[name]):
                words, flags = _words(entry)
                pcm = (np.clip(read_16k(item.path), -1, 1) * 32767).round().astype(np.int16)
                found = fillers.fillers_between_words(
                    pcm, words, aligned=flags, threshold=constants["threshold"]
                )
                merged = fillers.merge_fillers(words, found)
                score_item(score, item, [
                    {"text": w.text, "start_s": w.start_s, "end_s": w.end_s,
                     "is_filler": w.is_filler} for w in merged
                ])
            scores.append(score)
        return scores
    finally:
        apply_constants(saved)


def compare_constants(work: Path, constants_path: Path, out: Path) -> dict[str, Any]:
    """Shipped against other constants on every set of an earlier run kept in ``work``
    (``--keep``), through :func:`fast_filler_scores`, taking the product's own non-filler
    words of that run (``whisper.json``) as the aligned words. Cheap (the detector only),
    and approximate: without the local re-alignment and re-recognition checks of
    ``transcribe``, which only ever drop detections."""
    sets = corpus.load_manifest(work / "manifest.json")
    data = json.loads((work / "whisper.json").read_text())
    aligned = {
        name: [
            {"words": [[w["text"], w["start_s"], w["end_s"], w["confidence"], False]
                       for w in row["words"] if not w["is_filler"]],
             "aligned": [True] * sum(1 for w in row["words"] if not w["is_filler"])}
            for row in data["sets"][name]
        ]
        for name in sets
    }
    report: dict[str, Any] = {}
    for label, constants in (("shipped", current_constants()),
                             ("refit", json.loads(constants_path.read_text()))):
        report[label] = {s.name: _filler_summary(s)
                         for s in fast_filler_scores(sets, aligned, constants)}
    print(f"{'set':<18} {'constants':<8} {'true':>5} {'found':>5} {'TP':>4} {'P':>6} {'R':>6} "
          f"{'cut':>4}")
    for name in sets:
        for label in ("shipped", "refit"):
            r = report[label][name]
            print(f"{name:<18} {label:<8} {r['true_fillers']:>5} {r['detections']:>5} "
                  f"{r['true_positives']:>4} {r['precision']:>6.3f} {r['recall']:>6.3f} "
                  f"{r['real_words_cut']:>4}")
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def fit(
    work: Path, *, quick: bool, l2: float, threshold: float | None, fast_eval: bool
) -> dict[str, Any]:
    """Fit on the tuning sets as the product sees them. With ``fast_eval``, also compare the
    shipped and the new constants on every set through :func:`fast_filler_scores` (the gap
    search alone: without the local re-alignment and re-recognition checks that
    ``transcribe`` adds; for the real comparison run the evaluation with ``--constants``).
    Returns the new constants (and the comparison)."""
    sets = corpus.build_sets(
        work, quick=quick, only=None if fast_eval else list(corpus.TUNING_SETS)
    )
    cache = work / "aligned_words.json"
    print(f"[{time.strftime('%H:%M:%S')}] aligning Whisper's words", flush=True)
    aligned = {name: aligned_words_of(items, cache) for name, items in sets.items()}
    tune_items = [i for name in corpus.TUNING_SETS for i in sets[name]]
    tune_aligned = [a for name in corpus.TUNING_SETS for a in aligned[name]]
    x, y = candidate_rows(tune_items, tune_aligned)
    mean, scale, weights, bias = fit_logistic(x, y, l2=l2)
    print(f"{len(y)} candidates in the gaps, {int(y.sum())} on fillers")
    for name, weight in zip(filler_candidates.FEATURE_NAMES, weights):
        print(f"  {name:<24} {weight:+.3f}")
    new = {
        "feature_mean": [float(f"{v:.4g}") for v in mean],
        "feature_scale": [float(f"{v:.4g}") for v in scale],
        "weights": [float(f"{v:.4g}") for v in weights],
        "bias": float(f"{bias:.4g}"),
        "threshold": threshold if threshold is not None else fillers.DEFAULT_THRESHOLD,
    }
    old = current_constants()
    report: dict[str, Any] = {"candidates": len(y), "on_fillers": int(y.sum()), "new": new,
                              "shipped": {}, "refit": {}}
    for label, constants in (("shipped", old), ("refit", new)) if fast_eval else ():
        scores = fast_filler_scores(sets, aligned, constants)
        report[label] = {s.name: _filler_summary(s) for s in scores}
    print()
    print(f"{'set':<18} {'constants':<8} {'true':>5} {'found':>5} {'TP':>4} {'P':>6} {'R':>6} "
          f"{'cut':>4}")
    for name in sets if fast_eval else ():
        for label in ("shipped", "refit"):
            r = report[label][name]
            print(f"{name:<18} {label:<8} {r['true_fillers']:>5} {r['detections']:>5} "
                  f"{r['true_positives']:>4} {r['precision']:>6.3f} {r['recall']:>6.3f} "
                  f"{r['real_words_cut']:>4}")

    def array(values: Sequence[float]) -> str:
        return "np.array([" + ", ".join(f"{v:.4g}" for v in values) + "])"

    print()
    print(f"_FEATURE_MEAN = {array(new['feature_mean'])}")
    print(f"_FEATURE_SCALE = {array(new['feature_scale'])}")
    print(f"_WEIGHTS = {array(new['weights'])}")
    print(f"_BIAS = {new['bias']:.4g}")
    return report


def _label(engine: str, model: str | None) -> str:
    if engine == "whisper" and model:
        return ENGINE_LABELS[engine].replace("tiny.en", model)
    return ENGINE_LABELS[engine]


def _filler_summary(s: SetScore) -> dict[str, Any]:
    return {
        "true_fillers": s.true_fillers, "detections": s.detections,
        "true_positives": s.true_positives, "precision": round(s.precision, 3),
        "recall": round(s.recall, 3), "real_words_cut": s.real_words_cut, "cuts": s.cuts,
        "false_positive_words": s.false_positive_words,
    }


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(scores: Sequence[SetScore]) -> None:
    header = (
        f"{'set':<18} {'engine':<12} {'files':>5} {'audio s':>7} {'WER':>6} {'bnd med':>7} "
        f"{'bnd p95':>7} {'ctx med':>7} {'ctx p95':>7} {'fill':>4} {'det':>4} {'P':>5} "
        f"{'R':>5} {'cut':>4} {'x rt':>6} {'cpu/s':>6}"
    )
    print(header)
    print("-" * len(header))
    for s in scores:
        d = s.as_dict()
        print(
            f"{s.name:<18} {s.engine:<12} {s.files:>5} {s.audio_s:>7.1f} {s.wer:>6.3f} "
            f"{_fmt(d['boundary']['median_ms'], '.0f'):>7} {_fmt(d['boundary']['p95_ms'], '.0f'):>7} "
            f"{_fmt(d['boundary_context_correct']['median_ms'], '.0f'):>7} "
            f"{_fmt(d['boundary_context_correct']['p95_ms'], '.0f'):>7} "
            f"{s.true_fillers:>4} {s.detections:>4} {s.precision:>5.2f} {s.recall:>5.2f} "
            f"{s.real_words_cut:>4} {_fmt(d['x_realtime_wall'], '.1f'):>6} "
            f"{_fmt(d['cpu_s_per_audio_s'], '.3f'):>6}"
        )
    print()
    print("WER: word error rate, fillers excluded; bnd: |start|/|end| error of words recognised")
    print("right (ms; ctx: words whose neighbours are right too); fill/det: true fillers and")
    print("detections; cut: detections overlapping a true word by > 20 ms; x rt: audio s per")
    print("wall s; cpu/s: CPU s per audio s")


def print_funnel(scores: Sequence[SetScore]) -> None:
    """With ``--funnel``: per set, the true fillers each stage of the search lost."""
    recorded = [s for s in scores if s.lost_at and s.engine == "whisper"]
    if not recorded:
        return
    stages = [st for st in filler_funnel.STAGES if any(s.lost_at.get(st) for s in recorded)]
    print()
    print(f"{'where the fillers went':<22} " + " ".join(f"{st[:11]:>11}" for st in stages))
    for s in recorded:
        print(f"{s.name:<22} " + " ".join(f"{s.lost_at.get(st, 0):>11}" for st in stages))


def check_targets(scores: Sequence[SetScore]) -> list[dict[str, Any]]:
    """The targets of the product engine, met or not."""
    by = {(s.name, s.engine): s for s in scores}
    out = []
    for name in HELDOUT_FILLER_SETS:
        s = by.get((name, "whisper"))
        if s and s.true_fillers:
            out.append({"target": f"{name} precision >= {TARGETS['precision_heldout']}",
                        "value": round(s.precision, 3),
                        "met": s.precision >= TARGETS["precision_heldout"]})
            out.append({"target": f"{name} recall >= {TARGETS['recall_heldout']}",
                        "value": round(s.recall, 3),
                        "met": s.recall >= TARGETS["recall_heldout"]})
    cut = sum(s.real_words_cut for s in scores if s.engine == "whisper")
    out.append({"target": "real words cut = 0 on every set", "value": cut, "met": cut == 0})
    for name in ("synthetic_tune", "synthetic_heldout", "word_timing", "held_vowel"):
        s = by.get((name, "whisper"))
        if s:
            out.append({"target": f"{name} WER <= {TARGETS['wer_synthetic']}",
                        "value": round(s.wer, 3), "met": s.wer <= TARGETS["wer_synthetic"]})
    s = by.get(("jfk_alone", "whisper"))
    if s:
        out.append({"target": "jfk_alone every word right", "value": s.word_errors,
                    "met": s.word_errors == 0})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer files per set")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    parser.add_argument("--keep", type=Path, help="keep the generated audio in this directory")
    parser.add_argument("--sets", help="comma-separated set names (default: all)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--baseline-files", choices=("all", "quick"), default="all",
                        help="quick: the baseline runs on the first files of each set only "
                             "(as many as --quick builds); the product is also scored on them")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: read an engine's earlier output for the same files, "
                             "code and options")
    parser.add_argument("--constants", type=Path, help="JSON of fitted constants to use instead")
    parser.add_argument("--fit", action="store_true",
                        help="refit the detector on the tuning sets as the product sees them")
    parser.add_argument("--fast-eval", action="store_true",
                        help="with --fit: compare old and new constants on every set (gap search only)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--compare-constants", type=Path, metavar="CONSTANTS_JSON",
                        help="with --keep DIR of an earlier run: shipped vs these constants, "
                             "gap search only, on the product's words of that run")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--model", help="the product's Whisper model (default tiny.en; base is "
                        "shipped too)")
    parser.add_argument("--beam-size", type=int, help="the product's Whisper beam size "
                        "(default: the product's, 5)")
    parser.add_argument("--funnel", action="store_true",
                        help="record where the product lost each missed filler (which check "
                             "turned it down); its speed numbers are then not the product's")
    parser.add_argument("--transcribe", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.compare_constants:
        if not args.keep:
            parser.error("--compare-constants needs --keep DIR of an earlier run")
        compare_constants(args.keep, args.compare_constants,
                          REPO / "bench" / "out" / "refit_comparison.json")
        return 0
    if args.transcribe:  # child process
        if args.constants:
            apply_constants(json.loads(args.constants.read_text()))
        _transcribe_all(args.transcribe, args.manifest, args.engine_out, args.model,
                        funnel=args.funnel, beam_size=args.beam_size)
        return 0
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng is not installed")
    work = args.keep or Path(tempfile.mkdtemp(prefix="filler-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.fit:
            report = fit(work, quick=args.quick, l2=args.l2, threshold=args.threshold,
                         fast_eval=args.fast_eval)
            out = REPO / "bench" / "out" / "refit.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1) + "\n")
            (out.parent / "refit_constants.json").write_text(json.dumps(report["new"]) + "\n")
            print(f"\nwrote {out} and {out.parent / 'refit_constants.json'}")
            return 0
        started = time.time()
        load_before = _load()
        only = args.sets.split(",") if args.sets else None
        print(f"[{time.strftime('%H:%M:%S')}] building sets in {work}", flush=True)
        sets = corpus.build_sets(work, quick=args.quick, only=only)
        manifest = work / "manifest.json"
        corpus.save_manifest(manifest, sets)
        engine_sets = {engine: sets for engine in args.engines.split(",")}
        if args.baseline_files == "quick" and "pocketsphinx" in engine_sets:
            engine_sets["pocketsphinx"] = subset(sets, QUICK_FILES)
            corpus.save_manifest(work / "manifest_baseline.json", engine_sets["pocketsphinx"])
        runs = {
            engine: run_engine(
                engine,
                manifest if engine_sets[engine] is sets else work / "manifest_baseline.json",
                work, args.constants, reuse=args.reuse, model=args.model, funnel=args.funnel,
                beam_size=args.beam_size,
            )
            for engine in engine_sets
        }
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    scores = [s for engine in runs for s in score_engine(engine_sets[engine], runs[engine])]
    if "whisper" in runs and "pocketsphinx" in runs and engine_sets["pocketsphinx"] is not sets:
        # The product on the baseline's files too, for a like-for-like comparison.
        same = score_engine(engine_sets["pocketsphinx"], restrict(runs["whisper"],
                                                                  engine_sets["pocketsphinx"]))
        for s in same:
            s.engine = "whisper@same"
        scores += same
    order = {"whisper": 0, "whisper@same": 1, "pocketsphinx": 2}
    scores.sort(key=lambda s: (list(sets).index(s.name), order.get(s.engine, 3)))
    print_table(scores)
    print_funnel(scores)
    targets = check_targets(scores)
    print()
    for t in targets:
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['value']}")
    for s in scores:
        for cut in s.cuts:
            print(f"cut ({s.engine}, {s.name}): {cut}")
    result = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "load_before": load_before,
        "load_after": _load(),
        "quick": args.quick,
        "funnel": args.funnel,
        "model": args.model or "tiny.en",
        "beam_size": args.beam_size or WhisperSettings().beam_size,
        "constants": str(args.constants) if args.constants else "pod_audio/filler_candidates.py",
        "match_tolerance_s": MATCH_TOLERANCE_S,
        "max_word_overlap_s": MAX_WORD_OVERLAP_S,
        "seeds": {k: v for k, v in corpus.SEEDS.items() if k in sets},
        "engines": {
            engine: {"label": _label(engine, args.model), "warmup_s": round(runs[engine]["warmup_s"], 2),
                     "files": sum(len(v) for v in engine_sets[engine].values()),
                     "audio_s": round(sum(i.duration_s for v in engine_sets[engine].values()
                                          for i in v), 1),
                     **runs[engine]["process"]}
            for engine in runs
        },
        "targets": targets,
        "sets": {f"{s.name}/{s.engine}": s.as_dict() for s in scores},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
