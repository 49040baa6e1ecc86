"""Where the fillers a run missed were lost: which stage of the filler search turned each
true filler down (``bench.filler_eval --funnel``).

The product looks for fillers only between aligned words and then puts every candidate
through the checks of :mod:`pod_audio.filler_checks`; each check keeps audio when unsure,
so recall is lost one check at a time. :class:`Recorder` watches one transcription (in the
engine's child process) and notes the candidates of each pass of the search and every
check's verdict on them; :func:`lost_at` then names, for each true filler of a file, the
stage that lost it:

``found``
    a detection matches it (the scoring rule of :mod:`bench.filler_eval`).
``under_a_word``
    no candidate, and an aligned word covers most of it: the recogniser wrote a word there
    (misheard the filler, or stretched a neighbour over it).
``no_candidate``
    no candidate and no word: the detector saw nothing filler-like.
``below_threshold``
    a candidate, scored under the detector's threshold.
``not_spoken`` / ``neighbours`` / ``word_edge`` / ``part_of_a_word`` / ``local_alignment`` /
``set_apart`` / ``recognised_again``
    the last check that turned a candidate for it down
    (:func:`~pod_audio.filler_checks.spoken`,
    :func:`~pod_audio.filler_checks.neighbours_look_right`,
    :func:`~pod_audio.filler_checks.word_edge`, :func:`~pod_audio.filler_checks.part_of_a_word`,
    :func:`~pod_audio.filler_checks.fits_local_alignment`,
    :func:`~pod_audio.filler_checks.set_apart`, :func:`~pod_audio.filler_checks.missed_words`).
``other``
    a candidate passed every check it met and still was not kept (a second-pass candidate
    overlapping a first-pass one, or no room for it among the moved words).

Times of the search are seconds from its chunk's first sample, so only files transcribed
as one chunk are attributed (``multi_chunk`` otherwise; every evaluation file is one chunk).
Recording scores every gap twice (the second time with no threshold), so the speed of a
``--funnel`` run is not the product's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from bench.corpus import Item, TrueFiller
from pod_audio import filler_checks, fillers
from pod_audio.transcript import Word

__all__ = ["STAGES", "Recorder", "lost_at"]

STAGES = (
    "found", "under_a_word", "no_candidate", "below_threshold", "not_spoken", "neighbours",
    "word_edge",
    "part_of_a_word", "local_alignment", "set_apart", "recognised_again", "other", "multi_chunk",
)  # fmt: skip
_CHECKS = {
    "spoken": "not_spoken",
    "neighbours_look_right": "neighbours",
    "word_edge": "word_edge",
    "part_of_a_word": "part_of_a_word",
    "fits_local_alignment": "local_alignment",
    "set_apart": "set_apart",
}
_TOLERANCE_S = 0.1
"""A candidate is for a true filler when its centre lies within the filler +/- this (the
scoring rule of :mod:`bench.filler_eval`)."""
_COVERED = 0.5
"""An aligned word over this share of a true filler covers it."""


def _span(word: Word) -> list[float]:
    return [round(word.start_s, 3), round(word.end_s, 3)]


class Recorder:
    """While active, notes every pass of the filler search and every check's verdict in
    :attr:`events` (plain JSON-ready dicts). Not thread-safe across transcriptions: one
    transcription at a time, as the evaluation runs them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._saved: list[tuple[Any, str, Callable[..., Any]]] = []

    def __enter__(self) -> Recorder:
        self._patch(fillers, "fillers_between_words", self._record_pass)
        for name in _CHECKS:
            self._patch(filler_checks, name, self._record_check(name))
        self._patch(filler_checks, "missed_words", self._record_recognition)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()

    def _patch(self, module: Any, name: str, make: Callable[[Callable[..., Any]], Any]) -> None:
        original = getattr(module, name)
        self._saved.append((module, name, original))
        setattr(module, name, functools.wraps(original)(make(original)))

    def _record_pass(self, original: Callable[..., list[Word]]) -> Callable[..., list[Word]]:
        def run(samples: Any, words: Sequence[Word], **kwargs: Any) -> list[Word]:
            kept = original(samples, words, **kwargs)
            every = original(samples, words, **{**kwargs, "threshold": float("-inf")})
            self.events.append({
                "kind": "pass",
                "words": [_span(w) for w in words if not w.is_filler],
                "kept": [_span(f) for f in kept],
                "scored": [[*_span(f), round(f.confidence, 3)] for f in every],
            })
            return kept

        return run

    def _record_check(self, name: str) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
        def make(original: Callable[..., bool]) -> Callable[..., bool]:
            def run(*args: Any, **kwargs: Any) -> bool:
                verdict = original(*args, **kwargs)
                # spoken, word_edge and neighbours_look_right take the candidate first, the
                # others the audio and then the candidate; word_edge and part_of_a_word say True
                # to turn a candidate down.
                filler = args[0] if isinstance(args[0], Word) else args[1]
                passed = not verdict if name in ("word_edge", "part_of_a_word") else bool(verdict)
                self.events.append({
                    "kind": "check", "stage": _CHECKS[name], "span": _span(filler), "passed": passed,
                })
                return verdict

            return run

        return make

    def _record_recognition(self, original: Callable[..., list[bool]]) -> Callable[..., list[bool]]:
        def run(pcm: Any, found: Sequence[Word], *args: Any, **kwargs: Any) -> list[bool]:
            words_there = original(pcm, found, *args, **kwargs)
            for filler, word_there in zip(found, words_there):
                self.events.append({
                    "kind": "check", "stage": "recognised_again", "span": _span(filler),
                    "passed": not word_there,
                })
            return words_there

        return run


def _for(span: Sequence[float], filler: TrueFiller) -> bool:
    centre = (span[0] + span[1]) / 2
    return filler.start_s - _TOLERANCE_S <= centre <= filler.end_s + _TOLERANCE_S


def _stage(filler: TrueFiller, events: Sequence[dict[str, Any]]) -> str:
    verdicts = [e for e in events if e["kind"] == "check" and _for(e["span"], filler)]
    if verdicts:
        refused = [e for e in verdicts if not e["passed"]]
        return refused[-1]["stage"] if refused else "other"
    passes = [e for e in events if e["kind"] == "pass"]
    if any(_for(span, filler) for p in passes for span in p["kept"]):
        return "other"
    if any(_for(s[:2], filler) for p in passes for s in p["scored"]):
        return "below_threshold"
    length = filler.end_s - filler.start_s
    first = passes[0]["words"] if passes else []
    covered = any(
        min(b, filler.end_s) - max(a, filler.start_s) > _COVERED * length for a, b in first
    )
    return "under_a_word" if covered else "no_candidate"


def lost_at(item: Item, found: Sequence[TrueFiller], row: dict[str, Any]) -> list[str]:
    """Per true filler of ``item`` (in order), the stage that lost it, or ``"found"``.
    ``found`` are the fillers the scoring matched; ``row`` the engine's output for the file
    with its recorded ``funnel`` events."""
    events = row.get("funnel") or []
    single = row.get("chunks") in (None, 0, 1)
    return [
        "found" if f in found else (_stage(f, events) if single else "multi_chunk")
        for f in item.fillers
    ]
