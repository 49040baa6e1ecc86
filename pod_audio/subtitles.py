"""Subtitles of an episode on its final timeline: WebVTT, SRT and the Podcasting 2.0 JSON
transcript.

The final timeline is the mastered MP3's: a word at ``t`` seconds of the cleaned audio plays
at ``t + offset_s``, where ``offset_s`` is the intro's length minus the crossfade that joins
it to the episode (0 without an intro). Words come from the cleaned transcript, which is the
raw transcript remapped through the cut list (:func:`pod_audio.cuts.remap_transcript`).

Cues group consecutive words. Invariants of :func:`build_cues`, for any words:

- every cue lasts at most ``max_cue_s`` (7 s) and never starts before the previous one ends;
- its text wraps into at most ``max_lines`` lines of at most ``max_line_chars`` characters
  (WebVTT: 2 lines of 65, SRT: 2 lines of 32); a word longer than a line is split into
  pieces that share its time span in proportion to their length;
- a pause longer than ``max_gap_s`` between two words ends a cue;
- cue times are whole milliseconds, the first word's start and the last word's end (the end
  cut to ``start + max_cue_s`` for a single word that lasts longer).

The JSON transcript keeps one segment per word (``startTime``, ``endTime``, ``body``), so it
carries every word time exactly (to the millisecond).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pod_audio.transcript import Word

__all__ = [
    "Cue",
    "CueLimits",
    "SRT_LIMITS",
    "VTT_LIMITS",
    "build_cues",
    "final_timeline_words",
    "to_podcast_json",
    "to_srt",
    "to_webvtt",
]

PODCAST_TRANSCRIPT_VERSION = "1.0.0"


@dataclass(frozen=True)
class CueLimits:
    max_line_chars: int
    max_lines: int = 2
    max_cue_s: float = 7.0
    max_gap_s: float = 1.5


VTT_LIMITS = CueLimits(max_line_chars=65)
SRT_LIMITS = CueLimits(max_line_chars=32)


@dataclass(frozen=True)
class Cue:
    """``start_ms`` .. ``end_ms`` on the final timeline, and the wrapped lines shown."""

    start_ms: int
    end_ms: int
    lines: tuple[str, ...]

    @property
    def words(self) -> list[str]:
        return " ".join(self.lines).split()


def final_timeline_words(words: Iterable[Word], *, offset_s: float) -> list[Word]:
    """``words`` of the cleaned audio as they play in the final MP3: shifted by ``offset_s``,
    blank words dropped, text stripped of line breaks."""
    result = []
    for word in words:
        text = " ".join(word.text.split())
        if text:
            result.append(Word(text, word.start_s + offset_s, word.end_s + offset_s,
                               word.confidence, word.is_filler))
    return result


def _pieces(words: Sequence[Word], max_chars: int) -> list[Word]:
    """Words longer than a line, split into line-sized pieces sharing the word's span."""
    out: list[Word] = []
    for word in words:
        tokens = word.text.split()
        if all(len(t) <= max_chars for t in tokens) and len(tokens) == 1:
            out.append(word)
            continue
        chunks = [t[i:i + max_chars] for t in tokens for i in range(0, len(t), max_chars)]
        total = sum(len(c) for c in chunks)
        start, span = word.start_s, max(0.0, word.end_s - word.start_s)
        for chunk in chunks:
            end = start + span * len(chunk) / total
            out.append(Word(chunk, start, end, word.confidence, word.is_filler))
            start = end
    return out


def _wrap(texts: Sequence[str], max_chars: int) -> list[str]:
    """Greedy line wrap of whole words (each at most ``max_chars`` long)."""
    lines: list[str] = []
    for text in texts:
        if lines and len(lines[-1]) + 1 + len(text) <= max_chars:
            lines[-1] += " " + text
        else:
            lines.append(text)
    return lines


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _cue(words: Sequence[Word], limits: CueLimits) -> Cue:
    start = _ms(words[0].start_s)
    end = min(_ms(words[-1].end_s), start + _ms(limits.max_cue_s))
    return Cue(start, max(end, start + 1), tuple(_wrap([w.text for w in words], limits.max_line_chars)))


def build_cues(words: Sequence[Word], *, limits: CueLimits) -> list[Cue]:
    """Cues for ``words`` (final-timeline times, in order) within ``limits``; see the module
    docstring for the invariants."""
    cues: list[Cue] = []
    current: list[Word] = []
    for word in _pieces(words, limits.max_line_chars):
        if current:
            too_long = word.end_s - current[0].start_s > limits.max_cue_s
            too_wide = len(_wrap([w.text for w in (*current, word)], limits.max_line_chars)) > limits.max_lines
            paused = word.start_s - current[-1].end_s > limits.max_gap_s
            if too_long or too_wide or paused:
                cues.append(_cue(current, limits))
                current = []
        current.append(word)
    if current:
        cues.append(_cue(current, limits))
    return _without_overlaps(cues)


def _without_overlaps(cues: list[Cue]) -> list[Cue]:
    """Starts made strictly increasing (by whole milliseconds), and each end cut to the next
    start: words of zero length or overlapping words never give overlapping cues."""
    starts: list[int] = []
    for cue in cues:
        starts.append(max(cue.start_ms, starts[-1] + 1) if starts else cue.start_ms)
    result = []
    for i, cue in enumerate(cues):
        end = min(cue.end_ms, starts[i + 1]) if i + 1 < len(cues) else cue.end_ms
        result.append(Cue(starts[i], max(end, starts[i] + 1), cue.lines))
    return result


def _clock(ms: int, sep: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Sequence[Cue]) -> str:
    """A WebVTT file (``text/vtt``) of ``cues``; ``&``, ``<`` and ``>`` escaped."""
    blocks = ["WEBVTT"]
    for cue in cues:
        text = "\n".join(_vtt_escape(line) for line in cue.lines)
        blocks.append(f"{_clock(cue.start_ms, '.')} --> {_clock(cue.end_ms, '.')}\n{text}")
    return "\n\n".join(blocks) + "\n"


def to_srt(cues: Sequence[Cue]) -> str:
    """An SRT file (``application/x-subrip``) of ``cues``, numbered from 1."""
    blocks = [
        f"{i}\n{_clock(c.start_ms, ',')} --> {_clock(c.end_ms, ',')}\n" + "\n".join(c.lines)
        for i, c in enumerate(cues, start=1)
    ]
    return "\n\n".join(blocks) + "\n"


def to_podcast_json(words: Sequence[Word]) -> str:
    """The Podcasting 2.0 JSON transcript (``application/json``): one segment per word."""
    segments = [
        {"startTime": _ms(w.start_s) / 1000, "endTime": _ms(w.end_s) / 1000, "body": w.text}
        for w in words
    ]
    return json.dumps({"version": PODCAST_TRANSCRIPT_VERSION, "segments": segments}, ensure_ascii=False)
