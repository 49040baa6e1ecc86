"""Evaluation sets for :mod:`bench.filler_eval`: generated speech with known truth.

Every set is built from a fixed seed; the audio is synthesized with espeak-ng or cut from the
shipped 11 s JFK sample (``samples/jfk-inaugural-excerpt.flac``), nothing is downloaded. Each
:class:`Item` carries what is known by construction:

- ``fillers``: the true filler spans (every filler is synthesized on its own and
  concatenated, so its span is exact to the sample);
- ``reference``: the words said, in order, fillers excluded (for the word error rate);
- ``words``: per-word spans, in the sets built one word at a time (``word_timing``,
  ``held_vowel``), for the word-boundary error;
- ``speech_spans``: stretches of real (non-filler) speech that no filler detection may
  overlap by more than 20 ms: the words of the word-by-word sets, the synthesized word runs
  of the synthetic sets, and the JFK speech itself (every 10 ms frame more than 10 dB above
  its noise floor) in the jfk sets.

Sets:

``synthetic_tune`` (seed 101) / ``synthetic_heldout`` (seed 202)
    espeak-ng sentences with "um", "uh", "er", "ah", "hmm" inserted between words.
``jfk_mix_dev`` (seed 303) / ``jfk_mix`` (seed 404)
    the JFK speech with synthetic fillers spliced into its pauses and between its words
    (the word boundaries for those splices come from pocketsphinx, not from the product).
``jfk_alone``
    the JFK sample itself: no filler.
``word_timing`` (seed 505)
    sentences synthesized one word at a time (several voices, 150-180 wpm) and concatenated
    with 20-120 ms gaps, 0.5 s between sentences, faint noise: every word's span is known.
``held_vowel`` (seed 606)
    sentences ending in a word that sounds like a held vowel ("show", "all", "so", "no",
    "too", "though", "know", "saw") before a pause, said slowly or with the last word
    stretched; every second file has real fillers right after some of those words. Built
    word by word, so a detection that takes part of the held word is seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt

from pod_audio import asr
from pod_audio.dsp import write_wav
from pod_audio.io import iter_blocks
from pod_audio.pocketsphinx_engine import PocketsphinxRecogniser

REPO = Path(__file__).resolve().parents[1]
SR = 16000
JFK_PATH = REPO / "samples" / "jfk-inaugural-excerpt.flac"
"""11 s of real, public-domain speech shipped with the project."""
JFK_TEXT = (
    "And so my fellow Americans ask not what your country can do for you "
    "ask what you can do for your country"
)

TUNE_SEED = 101
HELDOUT_SEED = 202
JFK_MIX_DEV_SEED = 303
JFK_MIX_SEED = 404
WORD_TIMING_SEED = 505
HELD_VOWEL_SEED = 606
SEEDS = {
    "synthetic_tune": TUNE_SEED,
    "synthetic_heldout": HELDOUT_SEED,
    "jfk_mix_dev": JFK_MIX_DEV_SEED,
    "jfk_mix": JFK_MIX_SEED,
    "word_timing": WORD_TIMING_SEED,
    "held_vowel": HELD_VOWEL_SEED,
}
TUNING_SETS = ("synthetic_tune", "jfk_mix_dev")
"""The sets the detector is fitted on; every other set is held out."""

SENTENCES_TUNE = (
    "so today we are talking about the history of the printing press",
    "I think the most important thing is to listen to your audience",
    "we recorded this episode in a small studio downtown",
    "the weather was terrible but the show went on anyway",
    "my guest has written three books about urban gardening",
    "you can find all the links in the show notes below",
    "last week we had a lot of questions about microphones",
    "the answer depends on how much time you have",
    "she started the company with two friends from college",
    "let me tell you what happened at the conference",
    "there are many ways to make a good cup of coffee",
    "our producer edited the interview over the weekend",
    "it took us almost a year to finish the project",
    "please send your feedback to the address on our website",
    "the city council voted against the new parking rules",
    "he moved to Canada when he was twelve years old",
    "we will be back after a short break",
    "the results of the survey were quite surprising",
    "most listeners prefer shorter episodes in the morning",
    "the new library opens next month on Main Street",
)
SENTENCES_HELDOUT = (
    "the museum keeps a collection of old radios in the basement",
    "before we start I want to thank everyone who wrote in",
    "my brother builds furniture from reclaimed wood",
    "the train was late so I missed the first half of the game",
    "this recipe needs fresh basil and a little lemon juice",
    "we talked to a scientist who studies ocean currents",
    "nobody expected the small team to win the championship",
    "the documentary follows three families over ten years",
    "you should always back up your files before an update",
    "the mountain trail is closed during the winter months",
    "our next guest teaches music at a public high school",
    "the bakery on the corner sells bread until noon",
    "I finally read the book everyone was recommending",
    "the festival moved indoors because of the storm",
    "a good interview starts with a simple question",
    "the engineers tested the bridge for several weeks",
    "she learned to code by building small games",
    "the podcast started as a hobby in a spare bedroom",
    "local farmers sell their vegetables every Saturday",
    "thanks for listening and see you next week",
)
VOICES_TUNE = (
    "en-us+m3", "en-us+f2", "en+m1", "en-gb+f3", "en-us+m7", "en-us+Andy", "en-us+Annie",
    "en-us+m5",
)
VOICES_HELDOUT = (
    "en-us+m3", "en-gb+f3", "en-us+Annie", "en+m1",
    # never in the tuning set:
    "en-us+Michael", "en-029+f2", "en-gb-x-rp+m2", "en-us+f5",
)
FILLER_TEXTS = ("um", "uh", "er", "ah", "hmm")
FILLER_WEIGHTS = (0.35, 0.3, 0.1, 0.1, 0.15)
JFK_FILLER_VOICES = ("en-us+m3", "en-us+m1", "en-us+Michael", "en+m1", "en-us+m5", "en-gb+m3")


SENTENCES_TIMING = (
    "the morning train was full of people going to work",
    "we asked our listeners to send us their favorite recipes",
    "a small boat drifted slowly across the quiet lake",
    "the teacher explained the rules before the game started",
    "my neighbor grows tomatoes and peppers in his garden",
    "the storm knocked down several trees along the river",
    "our guest spent twenty years working as a nurse",
    "you can listen to every episode on our website",
    "the children built a castle out of sand and stones",
    "she plays the violin in a band with her cousins",
    "the old bridge was painted bright green last summer",
    "they opened a bookstore next to the train station",
)
VOICES_TIMING = (
    "en-us+m3", "en-us+f2", "en+m1", "en-gb+f3", "en-us+Michael", "en-029+f2", "en-us+Andy",
)
HELD_SENTENCES = (
    ("we stayed until the very end of the", "show"),
    ("I think that is really", "all"),
    ("she told me it was not", "so"),
    ("the answer to that question was", "no"),
    ("my sister wanted to come along", "too"),
    ("it sounded like a good idea", "though"),
    ("that is something you already", "know"),
    ("it was the best film we ever", "saw"),
    ("I honestly did not think", "so"),
    ("he wanted to see the whole", "show"),
)
"""Sentences ending in a word that sounds like a held vowel: (lead words, last word)."""
HELD_FILLERS = ("um", "uh", "er", "ah")


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class TrueFiller:
    start_s: float
    end_s: float
    text: str
    context: str  # "paused" (pause on both sides), "one_side" or "tight" (no pause)


@dataclass(frozen=True)
class TrueWord:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Item:
    path: str
    duration_s: float
    fillers: tuple[TrueFiller, ...]
    voice: str
    reference: tuple[str, ...] = ()
    """The words said, in order, fillers excluded."""
    words: tuple[TrueWord, ...] = ()
    """Per-word spans (sets built one word at a time only)."""
    speech_spans: tuple[tuple[float, float], ...] = ()
    """Stretches of real speech no filler detection may overlap by more than 20 ms."""
    tags: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        return cls(
            path=data["path"],
            duration_s=data["duration_s"],
            fillers=tuple(TrueFiller(**f) for f in data["fillers"]),
            voice=data["voice"],
            reference=tuple(data.get("reference", ())),
            words=tuple(TrueWord(**w) for w in data.get("words", ())),
            speech_spans=tuple(tuple(s) for s in data.get("speech_spans", ())),
            tags=dict(data.get("tags", {})),
        )


def save_manifest(path: Path, sets: dict[str, list[Item]]) -> None:
    path.write_text(json.dumps({k: [i.to_dict() for i in v] for k, v in sets.items()}))


def load_manifest(path: Path) -> dict[str, list[Item]]:
    data = json.loads(Path(path).read_text())
    return {k: [Item.from_dict(i) for i in v] for k, v in data.items()}


# --------------------------------------------------------------------------- synthesis


def espeak(text: str, *, voice: str, speed_wpm: int, pitch: int) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng; 16 kHz float32 mono with silence trimmed."""
    with tempfile.TemporaryDirectory(prefix="filler-eval-") as tmp:
        out = Path(tmp) / "piece.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(out)]
            + [text],
            check=True,
            capture_output=True,
        )
        samples = np.concatenate([b[:, 0] for b in iter_blocks(out, sample_rate=SR, channels=1)])
    return trim_silence(samples)


def trim_silence(samples: np.ndarray, *, threshold_dbfs: float = -45.0) -> np.ndarray:
    n = len(samples) // 160
    if n == 0:
        return samples[:0]
    level = 10 * np.log10(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > threshold_dbfs)
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] * 160 : (loud[-1] + 1) * 160].astype(np.float32)


def read_16k(path: str | os.PathLike[str]) -> np.ndarray:
    return np.concatenate([b[:, 0] for b in iter_blocks(path, sample_rate=SR, channels=1)])


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def _context(before_s: float, after_s: float) -> str:
    paused = (before_s >= 0.15) + (after_s >= 0.15)
    return ("tight", "one_side", "paused")[paused]


def _build_set(
    out_dir: Path, *, seed: int, n_files: int,
    make_file: Callable[[Path, int, np.random.Generator], Item],
) -> list[Item]:
    """``n_files`` files made one after the other by ``make_file(out_dir, index, rng)``, all
    drawing from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [make_file(out_dir, index, rng) for index in range(n_files)]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of ``options``, drawn uniformly."""
    return str(options[rng.integers(len(options))])


def _write_file(out_dir: Path, index: int, audio: np.ndarray) -> str:
    """``audio`` written as the set's file number ``index``; its path."""
    path = out_dir / f"{index:03d}.wav"
    write_wav(path, audio)
    return str(path)


def synthetic_set(
    out_dir: Path, *, seed: int, n_files: int, sentences: Sequence[str], voices: Sequence[str]
) -> list[Item]:
    """espeak sentences with fillers inserted between words at known times."""

    def make_file(out_dir: Path, index: int, rng: np.random.Generator) -> Item:
        return _synthetic_file(out_dir, index, rng, sentences=sentences, voices=voices)

    return _build_set(out_dir, seed=seed, n_files=n_files, make_file=make_file)


def _synthetic_file(
    out_dir: Path, index: int, rng: np.random.Generator, *,
    sentences: Sequence[str], voices: Sequence[str],
) -> Item:
    voice = _pick(rng, voices)
    speed = int(rng.integers(130, 181))
    pitch = int(rng.integers(30, 71))
    picks = rng.choice(len(sentences), size=2, replace=False)
    words = " ".join(sentences[i] for i in picks).split()
    n_fillers = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]))
    points = sorted(rng.choice(np.arange(1, len(words)), size=n_fillers, replace=False))
    pieces: list[np.ndarray] = [_silence(rng.uniform(0.2, 0.6))]
    position = len(pieces[0])
    truth: list[TrueFiller] = []
    spans: list[tuple[float, float]] = []
    previous = 0
    for point in [*points, len(words)]:
        run = " ".join(words[previous:point])
        text = espeak(run, voice=voice, speed_wpm=speed, pitch=pitch)
        pieces.append(text)
        spans.append((position / SR, (position + len(text)) / SR))
        position += len(text)
        previous = point
        if point == len(words):
            break
        filler_text = str(rng.choice(FILLER_TEXTS, p=FILLER_WEIGHTS))
        filler = espeak(
            filler_text, voice=voice, speed_wpm=int(rng.integers(70, 151)), pitch=pitch
        )
        filler *= 10 ** (rng.uniform(-6.0, 1.0) / 20)  # fillers are often said softer
        gaps = [
            rng.uniform(0.15, 0.6) if rng.random() < 0.6 else rng.uniform(0.0, 0.04)
            for _ in range(2)
        ]
        before, after = _silence(gaps[0]), _silence(gaps[1])
        start = position + len(before)
        truth.append(
            TrueFiller(
                start / SR, (start + len(filler)) / SR, filler_text, _context(*gaps)
            )
        )
        pieces += [before, filler, after]
        position += len(before) + len(filler) + len(after)
    pieces.append(_silence(rng.uniform(0.2, 0.6)))
    audio = _recording_chain(np.concatenate(pieces), rng)
    return Item(
        _write_file(out_dir, index, audio), len(audio) / SR, tuple(truth), voice,
        reference=tuple(words), speech_spans=tuple(spans),
    )


def _recording_chain(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vary the recording: band limits (half the files), noise 20-45 dB below the speech
    (white or pink), and the overall level."""
    if rng.random() < 0.5:
        low_hz, high_hz = rng.uniform(60, 200), rng.uniform(3400, 7000)
        audio = sosfilt(butter(4, [low_hz, high_hz], btype="bandpass", fs=SR, output="sos"), audio)
    active = audio[np.abs(audio) > 0.01 * np.abs(audio).max()]
    speech_rms = _rms(active) if len(active) else _rms(audio)
    noise = rng.normal(0, 1, len(audio))
    if rng.random() < 0.5:  # pink: -3 dB per octave
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, n=len(audio))
    noise *= speech_rms * 10 ** (-rng.uniform(20, 45) / 20) / max(1e-12, _rms(noise))
    audio = audio + noise
    audio *= 10 ** (rng.uniform(-12, -1) / 20) / max(1e-6, float(np.abs(audio).max()))
    return audio.astype(np.float32)


def jfk_mix_set(out_dir: Path, *, jfk_path: Path, seed: int, n_files: int) -> list[Item]:
    """``jfk.flac`` with synthetic fillers spliced into its pauses and between its words."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    speech = read_16k(jfk_path)
    frame_db = _frame_db(speech)
    floor_db = float(np.percentile(frame_db, 10))
    loud = frame_db > floor_db + 10
    speech_rms = float(np.sqrt(np.mean(speech[: len(loud) * 160].reshape(-1, 160)[loud] ** 2)))
    pauses = _pauses(loud, min_frames=30)  # pauses of 0.3 s or more: (start, end) samples
    noise = speech[pauses[0][0] : pauses[0][1]] if pauses else np.zeros(SR, dtype=np.float32)
    # Splice points between words come from pocketsphinx (as when these sets were first
    # built), not from the engine under test.
    words = asr.transcribe_samples(
        speech, recogniser=PocketsphinxRecogniser(detect_fillers=False), detect_fillers=False
    ).words
    loud_runs = _speech_runs(loud)
    # Cuts between two words with no pause between them, away from the file's ends.
    word_cuts = [
        round(word.end_s * SR)
        for word, following in zip(words, words[1:])
        if following.start_s - word.end_s < 0.02
    ]
    band = butter(4, [150, 3800], btype="bandpass", fs=SR, output="sos")
    items: list[Item] = []
    for index in range(n_files):
        n_fillers = int(rng.integers(1, 4))
        # Half the fillers go into pauses, half between two words.
        kinds = ["pause" if rng.random() < 0.5 else "word" for _ in range(n_fillers)]
        pause_at = [(a + b) // 2 for a, b in pauses]
        n_pauses = min(kinds.count("pause"), len(pause_at))
        n_words = min(kinds.count("word"), len(word_cuts))
        chosen = sorted(
            [("pause", int(at)) for at in rng.choice(pause_at, size=n_pauses, replace=False)]
            + [("word", int(at)) for at in rng.choice(word_cuts, size=n_words, replace=False)],
            key=lambda slot: slot[1],
        )
        voice = _pick(rng, JFK_FILLER_VOICES)
        pieces: list[np.ndarray] = []
        truth: list[TrueFiller] = []
        position = 0
        cursor = 0
        spans: list[tuple[float, float]] = []
        for kind, at in chosen:
            pieces.append(speech[cursor:at])
            spans += _shifted_runs(loud_runs, cursor, at, position)
            position += at - cursor
            cursor = at
            text = str(rng.choice(FILLER_TEXTS, p=FILLER_WEIGHTS))
            filler = espeak(
                text,
                voice=voice,
                speed_wpm=int(rng.integers(70, 151)),
                pitch=int(rng.integers(30, 66)),
            )
            filler = sosfilt(band, filler).astype(np.float32)
            filler *= speech_rms * rng.uniform(0.5, 1.0) / max(1e-6, _rms(filler))
            if kind == "pause":
                before_s, after_s = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4)
            else:
                before_s, after_s = rng.uniform(0.0, 0.03), rng.uniform(0.0, 0.03)
            inserted_len = int((before_s + after_s) * SR) + len(filler)
            bed = _loop(noise, inserted_len, rng)
            start = int(before_s * SR)
            bed[start : start + len(filler)] += filler
            truth.append(
                TrueFiller((position + start) / SR, (position + start + len(filler)) / SR, text,
                           _context(before_s, after_s))
            )
            pieces.append(bed)
            position += inserted_len
        pieces.append(speech[cursor:])
        spans += _shifted_runs(loud_runs, cursor, len(speech), position)
        audio = np.concatenate(pieces)
        items.append(
            Item(_write_file(out_dir, index, audio), len(audio) / SR, tuple(truth), voice,
                 reference=tuple(JFK_TEXT.split()), speech_spans=tuple(spans))
        )
    return items


def jfk_alone_item() -> Item:
    speech = read_16k(JFK_PATH)
    frame_db = _frame_db(speech)
    loud = frame_db > float(np.percentile(frame_db, 10)) + 10
    spans = _shifted_runs(_speech_runs(loud), 0, len(speech), 0)
    return Item(str(JFK_PATH), len(speech) / SR, (), "jfk", reference=tuple(JFK_TEXT.split()),
                speech_spans=tuple(spans))


def _speech_runs(loud: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of runs of loud 10 ms frames, runs less than 50 ms apart merged;
    runs shorter than 50 ms (clicks) dropped."""
    edges = np.diff(np.concatenate(([0], loud.astype(np.int8), [0])))
    runs = list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < 5:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a * 160, b * 160) for a, b in merged if b - a >= 5]


def _shifted_runs(
    runs: Sequence[tuple[int, int]], lo: int, hi: int, position: int
) -> list[tuple[float, float]]:
    """The parts of ``runs`` (samples) inside ``[lo, hi)``, moved to start at ``position``."""
    out = []
    for a, b in runs:
        a2, b2 = max(a, lo), min(b, hi)
        if b2 > a2:
            out.append(((position + a2 - lo) / SR, (position + b2 - lo) / SR))
    return out


def _frame_db(samples: np.ndarray) -> np.ndarray:
    n = len(samples) // 160
    return 10 * np.log10(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)


def _pauses(loud: np.ndarray, *, min_frames: int) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([1], loud.astype(np.int8), [1])))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    return [
        (int(a) * 160, int(b) * 160)
        for a, b in zip(starts, ends)
        if b - a >= min_frames and a > 0 and b < len(loud)
    ]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def _loop(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    reps = -(-length // max(1, len(noise))) + 1
    tiled = np.tile(noise, reps)
    offset = int(rng.integers(0, max(1, len(noise))))
    return tiled[offset : offset + length].astype(np.float32).copy()



# --------------------------------------------------------------------------- word by word


def _say_words(
    words: Sequence[str], *, voice: str, speed_wpm: int, pitch: int, rng: np.random.Generator,
    position: int, last_speed_wpm: int | None = None,
) -> tuple[list[np.ndarray], list[TrueWord], int]:
    """Each word synthesized on its own, 20-120 ms of silence after every word but the last.

    Returns the pieces, the words' true spans and the position after the last word.
    """
    pieces: list[np.ndarray] = []
    truth: list[TrueWord] = []
    for i, word in enumerate(words):
        last = i == len(words) - 1
        speed = last_speed_wpm if (last and last_speed_wpm) else speed_wpm
        audio = trim_silence(espeak(word, voice=voice, speed_wpm=speed, pitch=pitch))
        truth.append(TrueWord(word, position / SR, (position + len(audio)) / SR))
        pieces.append(audio)
        position += len(audio)
        if not last:
            gap = _silence(rng.uniform(0.02, 0.12))
            pieces.append(gap)
            position += len(gap)
    return pieces, truth, position


def word_timing_set(out_dir: Path, *, seed: int, n_files: int) -> list[Item]:
    """Two sentences per file, every word synthesized on its own (150-180 wpm, several
    voices), 20-120 ms between words, 0.5 s after each sentence, faint white noise."""
    return _build_set(out_dir, seed=seed, n_files=n_files, make_file=_word_timing_file)


def _word_timing_file(out_dir: Path, index: int, rng: np.random.Generator) -> Item:
    voice = _pick(rng, VOICES_TIMING)
    speed = int(rng.integers(150, 181))
    pitch = int(rng.integers(35, 66))
    picks = rng.choice(len(SENTENCES_TIMING), size=2, replace=False)
    pieces = [_silence(0.3)]
    position = len(pieces[0])
    truth: list[TrueWord] = []
    for pick in picks:
        said, spans, position = _say_words(
            SENTENCES_TIMING[pick].split(), voice=voice, speed_wpm=speed, pitch=pitch,
            rng=rng, position=position,
        )
        pieces += said + [_silence(0.5)]
        position += int(0.5 * SR)
        truth += spans
    return _word_by_word_file(
        out_dir, index, rng, pieces, voice=voice, words=truth, tags={"speed_wpm": speed}
    )


def _word_by_word_file(
    out_dir: Path, index: int, rng: np.random.Generator, pieces: list[np.ndarray], *,
    voice: str, words: list[TrueWord], fillers: Sequence[TrueFiller] = (),
    tags: dict[str, Any],
) -> Item:
    """A file built word by word: ``pieces`` under faint white noise, written as file
    ``index``; ``words`` are its reference and its speech spans."""
    audio = np.concatenate(pieces)
    audio = (audio + rng.normal(0, 3e-4, len(audio))).astype(np.float32)
    return Item(
        _write_file(out_dir, index, audio), len(audio) / SR, tuple(fillers), voice,
        reference=tuple(w.text for w in words), words=tuple(words),
        speech_spans=tuple((w.start_s, w.end_s) for w in words), tags=tags,
    )


def held_vowel_set(out_dir: Path, *, seed: int, n_files: int) -> list[Item]:
    """Three sentences per file, each ending in a held-vowel word before a pause, built word by
    word. Half the sentences are said slowly (95-125 wpm), half at 150-175 wpm with the last
    word stretched (55-80 wpm). Odd-numbered files have a real filler after one or two of
    those words, 60-150 ms or 0.15-0.4 s after it."""
    return _build_set(out_dir, seed=seed, n_files=n_files, make_file=_held_vowel_file)


def _held_vowel_file(out_dir: Path, index: int, rng: np.random.Generator) -> Item:
    voice = _pick(rng, VOICES_TIMING)
    pitch = int(rng.integers(35, 66))
    with_fillers = index % 2 == 1
    picks = rng.choice(len(HELD_SENTENCES), size=3, replace=False)
    filler_after = (
        set(rng.choice(3, size=int(rng.integers(1, 3)), replace=False).tolist())
        if with_fillers else set()
    )
    pieces = [_silence(0.3)]
    position = len(pieces[0])
    truth: list[TrueWord] = []
    fillers: list[TrueFiller] = []
    modes = []
    for n, pick in enumerate(picks):
        lead, last = HELD_SENTENCES[pick]
        if rng.random() < 0.5:
            mode, speed, last_speed = "slow", int(rng.integers(95, 126)), None
        else:
            mode, speed, last_speed = (
                "stretched", int(rng.integers(150, 176)), int(rng.integers(55, 81))
            )
        modes.append(mode)
        said, spans, position = _say_words(
            [*lead.split(), last], voice=voice, speed_wpm=speed, pitch=pitch, rng=rng,
            position=position, last_speed_wpm=last_speed,
        )
        pieces += said
        truth += spans
        if n in filler_after:
            before = rng.uniform(0.06, 0.15) if rng.random() < 0.5 else rng.uniform(0.15, 0.4)
            after = rng.uniform(0.2, 0.5)
            text = _pick(rng, HELD_FILLERS)
            filler = trim_silence(
                espeak(text, voice=voice, speed_wpm=int(rng.integers(70, 131)), pitch=pitch)
            )
            filler *= 10 ** (rng.uniform(-4.0, 0.0) / 20)
            start = position + int(before * SR)
            fillers.append(
                TrueFiller(start / SR, (start + len(filler)) / SR, text,
                           _context(before, after))
            )
            pieces += [_silence(before), filler, _silence(after)]
            position += int(before * SR) + len(filler) + int(after * SR)
        pause = _silence(rng.uniform(0.5, 0.9))
        pieces.append(pause)
        position += len(pause)
    return _word_by_word_file(
        out_dir, index, rng, pieces, voice=voice, words=truth, fillers=fillers,
        tags={"modes": modes, "with_fillers": with_fillers},
    )


# --------------------------------------------------------------------------- all sets


ALL_SETS = (
    "synthetic_tune", "synthetic_heldout", "jfk_mix_dev", "jfk_mix", "jfk_alone", "word_timing",
    "held_vowel",
)


def build_sets(
    work: Path, *, quick: bool = False, only: Sequence[str] | None = None
) -> dict[str, list[Item]]:
    """Every set (or those named in ``only``), audio written under ``work``: 24 files per
    synthetic set and 12 per jfk mix (10 and 5 with ``quick``), 12 word-timing files and 16
    held-vowel files (4 and 6). The first files of a set are the same whatever the count."""
    n = 10 if quick else 24
    builders = {
        "synthetic_tune": lambda: synthetic_set(
            work / "tune", seed=TUNE_SEED, n_files=n, sentences=SENTENCES_TUNE, voices=VOICES_TUNE
        ),
        "synthetic_heldout": lambda: synthetic_set(
            work / "heldout", seed=HELDOUT_SEED, n_files=n, sentences=SENTENCES_HELDOUT,
            voices=VOICES_HELDOUT,
        ),
        "jfk_mix_dev": lambda: jfk_mix_set(
            work / "jfk_mix_dev", jfk_path=JFK_PATH, seed=JFK_MIX_DEV_SEED, n_files=n // 2
        ),
        "jfk_mix": lambda: jfk_mix_set(
            work / "jfk_mix", jfk_path=JFK_PATH, seed=JFK_MIX_SEED, n_files=n // 2
        ),
        "jfk_alone": lambda: [jfk_alone_item()],
        "word_timing": lambda: word_timing_set(
            work / "word_timing", seed=WORD_TIMING_SEED, n_files=4 if quick else 12
        ),
        "held_vowel": lambda: held_vowel_set(
            work / "held_vowel", seed=HELD_VOWEL_SEED, n_files=6 if quick else 16
        ),
    }
    return {name: builders[name]() for name in (only or ALL_SETS)}
