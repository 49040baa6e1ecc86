"""Forced alignment: put known words on their true spans in the audio (pocketsphinx).

The recogniser knows *what* was said; its word times are rough (Whisper's are up to half a
second off and swallow pauses and fillers). :func:`align_words` runs pocketsphinx's forced
alignment of the known word sequence over one chunk of 16 kHz audio: a search through the
acoustic model that must pass every word in order, with optional silence and noise between
them. Each word gets the frames (10 ms) of its phones, so pauses and hesitations between
words fall *between* the aligned spans, where :mod:`pod_audio.fillers` looks for them.

Words the pronunciation dictionary lacks get a spelling-based pronunciation (good enough to
take up the right stretch of audio). When the search cannot pass every word (the recogniser
heard a word that is not there, say), the chunk is aligned again in halves at its longest
pause; what still fails keeps the recogniser's times and is marked unaligned, and nothing
unaligned is ever cut as a filler.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pod_audio import pronunciations, search_workers
from pod_audio.dsp import SAMPLE_RATE
from pod_audio.errors import TranscriptionError
from pod_audio.transcript import Word

__all__ = [
    "AlignedChunk", "align_with_hesitations", "align_words", "aligner_version",
    "dictionary_tokens", "frame_levels_db", "quiet_level_db", "tighten_to_sound",
]

FRAMES_PER_S = 100
_MIN_ALIGN_SAMPLES = SAMPLE_RATE // 10

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"%": "percent", "&": "and", "+": "plus", "@": "at", "$": "dollars"}

# Spelling to phones, longest match first: only for words the dictionary lacks.
_GRAPHEMES: dict[str, str] = {
    "tch": "CH", "sch": "S K", "igh": "AY", "ough": "AO", "tion": "SH AH N", "sion": "ZH AH N",
    "th": "TH", "sh": "SH", "ch": "CH", "ph": "F", "ng": "NG", "ck": "K", "qu": "K W",
    "wh": "W", "gh": "G", "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ow": "OW",
    "oi": "OY", "oy": "OY", "ai": "EY", "ay": "EY", "au": "AO", "aw": "AO", "er": "ER",
    "ir": "ER", "ur": "ER", "ar": "AA R", "or": "AO R", "ie": "IY", "ey": "IY",
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH",
    "i": "IH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P",
    "q": "K", "r": "R", "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S",
    "y": "Y", "z": "Z",
}  # fmt: skip
_GRAPHEME_KEYS = sorted(_GRAPHEMES, key=len, reverse=True)


@dataclass(frozen=True)
class AlignedChunk:
    """The words of one chunk on their aligned spans.

    Attributes:
        words: the input words in order, times from the chunk's first sample. Aligned words
            lie on 10 ms frames and do not overlap.
        aligned: per word, whether its span comes from the alignment (``False``: the
            recogniser's time, kept because the search could not place it).
    """

    words: tuple[Word, ...]
    aligned: tuple[bool, ...]

    @property
    def fully_aligned(self) -> bool:
        return all(self.aligned)


def aligner_version() -> str:
    try:
        return "pocketsphinx " + importlib.metadata.version("pocketsphinx")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "pocketsphinx"


# --------------------------------------------------------------------------- text


def _number_words(value: int) -> list[str]:
    if value < 20:
        return [_ONES[value]]
    if value < 100:
        tens, ones = divmod(value, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return [_ONES[hundreds], "hundred"] + (_number_words(rest) if rest else [])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if value >= size:
            high, rest = divmod(value, size)
            return _number_words(high) + [name] + (_number_words(rest) if rest else [])
    return []  # pragma: no cover


def dictionary_tokens(text: str) -> list[str]:
    """What a written word says, as lower-case tokens the dictionary may hold.

    ``"Americans,"`` -> ``["americans"]``; ``"well-known"`` -> ``["well", "known"]``;
    ``"1961"`` -> ``["nineteen", "sixty", "one"]``; ``"—"`` -> ``[]``.
    """
    tokens: list[str] = []
    for part in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*|\d+|[%&+@$]", text):
        if part.isdigit():
            value = int(part)
            if len(part) == 4 and 1100 <= value <= 2099 and value % 100 >= 10:
                tokens += _number_words(value // 100) + _number_words(value % 100)
            elif value < 10**12:
                tokens += _number_words(value)
        elif part in _SYMBOLS:
            tokens.append(_SYMBOLS[part])
        else:
            tokens.append(part.lower())
    return tokens


def _spelled_phones(token: str) -> str:
    letters = re.sub(r"[^a-z]", "", token.lower())
    phones: list[str] = []
    i = 0
    while i < len(letters):
        for key in _GRAPHEME_KEYS:
            if letters.startswith(key, i):
                phones.extend(_GRAPHEMES[key].split())
                i += len(key)
                break
        else:  # pragma: no cover - every letter is a key
            i += 1
    collapsed = [p for j, p in enumerate(phones) if j == 0 or p != phones[j - 1]]
    return " ".join(collapsed) or "AH"


# --------------------------------------------------------------------------- alignment


def align_words(pcm: np.ndarray, words: Sequence[Word]) -> AlignedChunk:
    """Align ``words`` (the recogniser's, in order) to ``pcm`` (16 kHz mono ``int16``).

    Returns every input word, in order, with its aligned span where the search placed it.
    """
    if not words:
        return AlignedChunk((), ())
    pcm = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
    tokens = [dictionary_tokens(w.text) for w in words]
    lo, hi = _heard_stretch(len(pcm), words)
    chunk = _align_range(pcm[lo:hi], list(words), tokens, offset=lo, depth=0, hesitations=False)
    if _displaced(chunk, words):
        # A word was pulled far from where the recogniser heard it: most often onto a
        # hesitation the recogniser left out. Aligned again with optional hesitations
        # between the words, the sound has a place of its own; the alignment that leaves
        # fewer words displaced wins (plain alignment on a tie: its boundaries are tighter).
        with_hesitations = _align_range(
            pcm[lo:hi], list(words), tokens, offset=lo, depth=0, hesitations=True
        )
        if _displaced(with_hesitations, words) < _displaced(chunk, words):
            chunk = with_hesitations
    return _fit_unaligned(tighten_to_sound(pcm, chunk))


def align_with_hesitations(pcm: np.ndarray, words: Sequence[Word]) -> AlignedChunk:
    """Align ``words`` like :func:`align_words`, always with an optional hesitation ("um",
    "uh", "er", "ah", "hmm") between any two words.

    A filler the recogniser left out then has a place of its own instead of stretching a
    neighbouring word over it, so it shows as a gap. The same slots also take the held end
    of a drawn-out word ("sooo"): a gap found only here is a filler only when quiet sets it
    apart from the word (see :func:`pod_audio.filler_checks.set_apart`). The transcript's
    word times come from :func:`align_words`, whose boundaries are tighter.
    """
    if not words:
        return AlignedChunk((), ())
    pcm = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
    tokens = [dictionary_tokens(w.text) for w in words]
    lo, hi = _heard_stretch(len(pcm), words)
    chunk = _align_range(pcm[lo:hi], list(words), tokens, offset=lo, depth=0, hesitations=True)
    return _fit_unaligned(tighten_to_sound(pcm, chunk))


HEARD_MARGIN_S = 1.0
"""How far before the recogniser's first word and after its last the alignment looks."""


def _heard_stretch(samples: int, words: Sequence[Word]) -> tuple[int, int]:
    """The samples ``[lo, hi)`` of a chunk the alignment searches: from
    :data:`HEARD_MARGIN_S` before the recogniser's first word to as far after its last.

    The search must spend every frame on a word, silence or noise, and music or a hum
    is neither silence nor speech to its acoustic model: a chunk that opens on 15 s of
    music had its first word ("And") aligned onto the music's first two seconds. Where
    no word was heard, no word is put. The recogniser's times are up to half a second
    off, so the margin takes in every word's true sound.
    """
    margin = round(HEARD_MARGIN_S * SAMPLE_RATE)
    lo = max(0, round(min(w.start_s for w in words) * SAMPLE_RATE) - margin)
    hi = min(samples, round(max(w.end_s for w in words) * SAMPLE_RATE) + margin)
    return (lo, hi) if hi - lo >= _MIN_ALIGN_SAMPLES else (0, samples)


DISPLACED_S = 0.6
"""Farther than this outside the recogniser's own span of a word, an aligned word is
displaced (the recogniser's times are up to half a second off)."""


def is_displaced(word: Word, rough: Word) -> bool:
    """Whether an aligned ``word`` lies wholly outside the recogniser's own span of it
    (``rough``) widened by :data:`DISPLACED_S` on each side."""
    return word.end_s < rough.start_s - DISPLACED_S or word.start_s > rough.end_s + DISPLACED_S


def _displaced(chunk: AlignedChunk, rough: Sequence[Word]) -> int:
    """How many aligned words are displaced from their rough spans."""
    return sum(
        1 for word, ok, guess in zip(chunk.words, chunk.aligned, rough) if ok and is_displaced(word, guess)
    )


def _fit_unaligned(chunk: AlignedChunk) -> AlignedChunk:
    """Keep each unaligned word (on the recogniser's time) between its aligned neighbours."""
    if chunk.fully_aligned:
        return chunk
    words = list(chunk.words)
    for i, ok in enumerate(chunk.aligned):
        if ok:
            continue
        previous_end = words[i - 1].end_s if i else 0.0
        next_start = next(
            (w.start_s for w, a in zip(words[i + 1 :], chunk.aligned[i + 1 :]) if a), words[i].end_s
        )
        start = max(words[i].start_s, previous_end)
        words[i] = replace(words[i], start_s=start, end_s=max(start, min(words[i].end_s, next_start)))
    return AlignedChunk(tuple(words), chunk.aligned)


def tighten_to_sound(pcm: np.ndarray, chunk: AlignedChunk) -> AlignedChunk:
    """Trim each word's edge frames that hold only background noise.

    The acoustic model's shortest phone lasts 30 ms and its silence model is coarse, so an
    aligned word often begins a frame or three early and ends late, inside the pause around
    it. A frame is background when its level stays below the chunk's noise floor (10th
    percentile of the 10 ms levels) plus a fifth of the floor-to-speech range (6-12 dB).
    Only edge frames are trimmed, and a word keeps at least 30 ms.
    """
    if not chunk.words:
        return chunk
    samples = np.asarray(pcm, dtype=np.float32).reshape(-1) / 32768.0
    n = len(samples) // _FRAME_SAMPLES
    if n < 3:
        return chunk
    level_db = frame_levels_db(samples[: n * _FRAME_SAMPLES])
    quiet_db = quiet_level_db(level_db)
    out: list[Word] = []
    for word, aligned in zip(chunk.words, chunk.aligned):
        # Unaligned words too: the recogniser's own span of a word often takes in the pause
        # next to it, or a whole pause between two stretches of sound.
        lo = int(round(word.start_s * FRAMES_PER_S))
        hi = min(n, int(round(word.end_s * FRAMES_PER_S)))
        if not aligned:
            if not np.any(level_db[lo:hi] >= quiet_db) and out:
                # No sound at all where the recogniser put it (a word heard in a pause):
                # kept, on the shortest span right after the word before it, so that it
                # does not hold the pause open.
                lo = min(n - _MIN_WORD_FRAMES, int(round(out[-1].end_s * FRAMES_PER_S)))
                out.append(replace(word, start_s=lo / FRAMES_PER_S, end_s=(lo + _MIN_WORD_FRAMES) / FRAMES_PER_S))
                continue
            lo, hi = _loudest_stretch(level_db, lo, hi, quiet_db)
        while hi - lo > _MIN_WORD_FRAMES and level_db[lo] < quiet_db:
            lo += 1
        while hi - lo > _MIN_WORD_FRAMES and level_db[hi - 1] < quiet_db:
            hi -= 1
        out.append(replace(word, start_s=lo / FRAMES_PER_S, end_s=max(hi, lo + 1) / FRAMES_PER_S))
    return AlignedChunk(tuple(out), chunk.aligned)


def widen_to_sound(pcm: np.ndarray, words: Sequence[Word]) -> list[Word]:
    """Each word's edges moved out over the sound next to it that no word holds.

    The acoustic model's silence takes in the quiet end of a word now and then, or all of a
    slowly said short word but its first frames ("the" aligned on 40 ms of its "th", its
    vowel left to the pause after it), so the word ends too early (or starts too late) by
    up to a quarter of a second. Sound that runs on from a word's edge, with no quiet
    between them, into a pause that no word or filler holds is that word's: the edge moves
    to the first frame of background (the level of :func:`tighten_to_sound`). The edge
    stays where the sound runs on for more than 0.3 s or into another word or a filler
    without a pause: that sound is no more this word's than the next one's (a hesitation
    spoken straight into the word, say). Fillers (``is_filler``) are not moved, and are
    never taken in. ``words`` are in order, times in seconds from ``pcm``'s first sample.
    """
    samples = np.asarray(pcm, dtype=np.float32).reshape(-1) / 32768.0
    n = len(samples) // _FRAME_SAMPLES
    if n < 3 or not words:
        return list(words)
    level_db = frame_levels_db(samples[: n * _FRAME_SAMPLES])
    sound = level_db >= quiet_level_db(level_db)
    held = np.zeros(n + 1, dtype=bool)
    for w in words:
        held[int(round(w.start_s * FRAMES_PER_S)) : int(round(w.end_s * FRAMES_PER_S))] = True
    out: list[Word] = []
    for word in words:
        if word.is_filler:
            out.append(word)
            continue
        lo = int(round(word.start_s * FRAMES_PER_S))
        hi = min(n, int(round(word.end_s * FRAMES_PER_S)))
        # Frames before the word, nearest first (and after it): where their sound ends.
        start = lo - _sound_into_a_pause(sound[:lo][::-1], held[:lo][::-1])
        end = hi + _sound_into_a_pause(sound[hi:n], held[hi:n])
        out.append(word if (start, end) == (lo, hi) else replace(
            word, start_s=start / FRAMES_PER_S, end_s=end / FRAMES_PER_S
        ))
    return out


def _sound_into_a_pause(sound: np.ndarray, held: np.ndarray) -> int:
    """How many of the frames next to a word's edge (``sound`` and ``held`` per frame,
    nearest first) it takes in: the sound no word holds up to a pause, if that pause
    comes within :data:`_WIDEN_MAX_FRAMES`; none when the sound runs on longer, into a
    held frame, or to the chunk's edge."""
    for k in range(min(len(sound), _WIDEN_MAX_FRAMES + 1)):
        if held[k]:
            return 0
        if not sound[k]:
            return k
    return 0


_WIDEN_MAX_FRAMES = 30
"""Sound running on from a word for longer than this (0.3 s) is not taken into it."""


def quiet_level_db(level_db: np.ndarray) -> float:
    """The level (dBFS) under which a 10 ms frame of a chunk holds only background: the
    chunk's noise floor (10th percentile of ``level_db``) plus a fifth of the floor-to-speech
    range (95th percentile), that fifth kept within 6-12 dB."""
    floor_db = float(np.percentile(level_db, 10))
    speech_db = float(np.percentile(level_db, 95))
    return floor_db + min(_QUIET_MAX_DB, max(_QUIET_MIN_DB, 0.2 * (speech_db - floor_db)))


_PAUSE_IN_WORD_FRAMES = 30
"""A quiet run this long (0.3 s) inside an unaligned word's span is a pause, not the word."""


def _loudest_stretch(level_db: np.ndarray, lo: int, hi: int, quiet_db: float) -> tuple[int, int]:
    """Of the stretches of sound in frames ``[lo, hi)`` that pauses (0.3 s or more of quiet)
    separate, the one with the most sound: where an unaligned word most likely is. The whole
    span when there is no such pause."""
    sound = level_db[lo:hi] >= quiet_db
    stretches: list[list[int]] = []
    for index in np.flatnonzero(sound).tolist():
        if stretches and index - stretches[-1][1] < _PAUSE_IN_WORD_FRAMES:
            stretches[-1][1] = index + 1
        else:
            stretches.append([index, index + 1])
    if len(stretches) < 2:
        return lo, hi
    start, end = max(stretches, key=lambda r: int(np.count_nonzero(sound[r[0] : r[1]])))
    return lo + start, lo + end


def frame_levels_db(samples: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of each 10 ms frame of ``samples`` (float in ``[-1, 1]`` at 16 kHz,
    a whole number of frames long), ``float32``, shape ``(frames,)``."""
    frames = np.asarray(samples, dtype=np.float32).reshape(-1, _FRAME_SAMPLES)
    return (10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)).astype(np.float32)


_FRAME_SAMPLES = SAMPLE_RATE // FRAMES_PER_S
_QUIET_MIN_DB = 6.0
_QUIET_MAX_DB = 12.0
_MIN_WORD_FRAMES = 3


def _align_range(
    pcm: np.ndarray,
    words: list[Word],
    tokens: list[list[str]],
    *,
    offset: int,
    depth: int,
    hesitations: bool,
) -> AlignedChunk:
    spans = (
        _force_align(pcm, tokens, hesitations=hesitations)
        if len(pcm) >= _MIN_ALIGN_SAMPLES
        else None
    )
    if spans is not None:
        shift = offset / SAMPLE_RATE
        out = [
            replace(w, start_s=round(s + shift, 3), end_s=round(e + shift, 3))
            if (s, e) != (-1.0, -1.0)
            else w
            for w, (s, e) in zip(words, spans)
        ]
        return AlignedChunk(tuple(out), tuple((s, e) != (-1.0, -1.0) for s, e in spans))
    split = _split_index(words) if depth < 3 else None
    if split is None:
        return AlignedChunk(tuple(words), (False,) * len(words))
    # Cut the audio halfway through the widest gap between the recogniser's words.
    cut_s = (words[split - 1].end_s + words[split].start_s) / 2
    cut = min(max(int(cut_s * SAMPLE_RATE) - offset, 0), len(pcm))
    left = _align_range(
        pcm[:cut], words[:split], tokens[:split], offset=offset, depth=depth + 1,
        hesitations=hesitations,
    )
    right = _align_range(
        pcm[cut:], words[split:], tokens[split:], offset=offset + cut, depth=depth + 1,
        hesitations=hesitations,
    )
    return AlignedChunk(left.words + right.words, left.aligned + right.aligned)


def _split_index(words: Sequence[Word]) -> int | None:
    if len(words) < 2:
        return None
    gaps = [words[i].start_s - words[i - 1].end_s for i in range(1, len(words))]
    middle = len(words) / 2
    # The widest gap, preferring the middle on ties.
    best = max(range(1, len(words)), key=lambda i: (round(gaps[i - 1], 2), -abs(i - middle)))
    return best


_HESITATIONS = ("um", "uh", "er", "ah", "hmm")
"""Optional between any two words of the alignment grammar: a hesitation the recogniser left
out then has a place of its own and does not pull a neighbouring word onto its sound."""


def _grammar(flat: Sequence[str]) -> str:
    body = " ".join(f"[<h>] {token}" for token in flat) + " [<h>]"
    return (
        "#JSGF V1.0;\ngrammar align;\n"
        f"public <utterance> = {body};\n<h> = {' | '.join(_HESITATIONS)};\n"
    )


def _match_tokens(
    segments: Sequence[tuple[str, int, int]], flat: Sequence[str]
) -> list[tuple[str, int, int]] | None:
    """The segments of ``flat``'s tokens, in order, skipping the grammar's optional
    hesitations; ``None`` when the path does not spell ``flat``."""
    out: list[tuple[str, int, int]] = []
    for name, start, end in segments:
        if len(out) < len(flat) and name == flat[len(out)]:
            out.append((name, start, end))
        elif name not in _HESITATIONS:
            return None
    return out if len(out) == len(flat) else None


def _force_align(
    pcm: np.ndarray, tokens: list[list[str]], *, hesitations: bool
) -> list[tuple[float, float]] | None:
    """Per word, its ``(start_s, end_s)`` in ``pcm``, ``(-1, -1)`` for words with no token;
    ``None`` when the search does not pass every token."""
    flat = [t for word_tokens in tokens for t in word_tokens]
    if not flat:
        return [(-1.0, -1.0)] * len(tokens)
    segments = search_workers.run(_search, pcm, flat, hesitations)
    if segments is None:
        return None
    spans: list[tuple[float, float]] = []
    position = 0
    for word_tokens in tokens:
        if not word_tokens:
            spans.append((-1.0, -1.0))
            continue
        first = segments[position]
        last = segments[position + len(word_tokens) - 1]
        spans.append((first[1] / FRAMES_PER_S, last[2] / FRAMES_PER_S))
        position += len(word_tokens)
    return spans


def _search(
    pcm: np.ndarray, flat: Sequence[str], hesitations: bool
) -> list[tuple[str, int, int]] | None:
    """The frames ``[start, end)`` of each token of ``flat``, in order; ``None`` when the
    search does not pass every token. Runs where :func:`pod_audio.search_workers.run`
    puts it."""
    # The search with hesitations reads its path from the Viterbi backtrace, not from a
    # best path through the word lattice: building that lattice cost three quarters of it.
    with pronunciations.dictionary_for([*flat, *_HESITATIONS]) as dictionary:
        decoder = _decoder(dictionary, bestpath=not hesitations)
    try:
        for token in set(flat):
            if decoder.lookup_word(token) is None:
                decoder.add_word(token, _spelled_phones(token), False)
        if hesitations:
            decoder.add_jsgf_string("align", _grammar(flat))
            decoder.activate_search("align")
        else:
            decoder.set_align_text(" ".join(flat))
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return None
        segments = [
            (seg.word, seg.start_frame, seg.end_frame + 1)
            for seg in decoder.seg()
            if not _is_filler_segment(seg.word)
        ]
    except (RuntimeError, ValueError):
        return None
    return _match_tokens([(_strip_variant(n), a, b) for n, a, b in segments], flat)


def _is_filler_segment(name: str) -> bool:
    return name in ("<s>", "</s>", "<sil>", "(NULL)") or name.startswith("[") or name.startswith("+")


def _strip_variant(text: str) -> str:
    """``"for(2)"`` -> ``"for"``: pocketsphinx marks alternative pronunciations."""
    if text.endswith(")") and "(" in text:
        return text[: text.rindex("(")]
    return text


_SILENCE_PROBABILITY = 0.3
"""How readily the search puts a pause between two words (pocketsphinx's ``silprob``; its
default, 0.005, suits recognition with a language model). With the words known, a pause
costs little: at the default the search would rather stretch a word over the pause after
it, or put the next word's start on the end of a slow one, than insert a pause
(word_timing boundaries, p95: 160 ms at the default, 133 ms at 0.1, 124 ms at 0.3)."""


def _decoder(dictionary: str, *, bestpath: bool = True):  # noqa: ANN202 - pocketsphinx.Decoder
    """A fresh decoder with the acoustic model and ``dictionary`` (a file from
    :func:`pod_audio.pronunciations.dictionary_for`), no language model (and quiet: a search
    that cannot pass every word is expected and handled, not an error to print)."""
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise TranscriptionError("pocketsphinx is not installed") from exc
    try:
        return Decoder(
            loglevel="FATAL", lm=None, dict=dictionary, bestpath=bestpath, silprob=_SILENCE_PROBABILITY
        )
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(f"pocketsphinx cannot start: {exc}") from exc
