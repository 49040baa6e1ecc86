"""Tests of :mod:`pod_audio.asr`, :mod:`pod_audio.whisper` and :mod:`pod_audio.align`:
words right, word times on the sound, chunking at pauses, resumable chunks, the model check."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np
import pytest

from pod_audio import asr, whisper
from pod_audio.align import align_words, dictionary_tokens
from pod_audio.asr import PocketsphinxRecogniser, Recogniser, plan_chunks, transcribe
from pod_audio.errors import TranscriptionError
from pod_audio.io import iter_blocks
from pod_audio.transcript import Transcript, Word
from tests.audio_factory import jfk_path
from tests.speech_factory import SR, has_espeak, render_script, write_wav

JFK_WORDS = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
).split()
needs_espeak = pytest.mark.skipif(not has_espeak(), reason="espeak-ng missing")


def _plain(text: str) -> str:
    return re.sub(r"[^a-z']", "", text.lower())


def _jfk_16k() -> np.ndarray:
    return np.concatenate([b[:, 0] for b in iter_blocks(jfk_path(), sample_rate=SR, channels=1)])


def _assert_well_formed(transcript: Transcript) -> None:
    previous_end = 0.0
    for word in transcript.words:
        assert 0.0 <= word.start_s < word.end_s <= transcript.duration_s + 1e-9
        assert word.start_s >= previous_end - 1e-9
        assert 0.0 <= word.confidence <= 1.0
        assert word.text.strip() == word.text and word.text
        previous_end = word.end_s


@pytest.fixture(scope="module")
def jfk_transcript() -> Transcript:
    return transcribe(jfk_path())


def test_jfk_every_word_right(jfk_transcript: Transcript) -> None:
    assert jfk_transcript.engine == "faster-whisper"
    assert jfk_transcript.engine_version == whisper.engine_version()
    assert jfk_transcript.extra["model"] == "tiny.en"
    assert jfk_transcript.extra["model_sha256"] == whisper.TINY_EN_SHA256
    assert jfk_transcript.duration_s == pytest.approx(11.0, abs=0.05)
    _assert_well_formed(jfk_transcript)
    assert [_plain(w.text) for w in jfk_transcript.words] == JFK_WORDS
    assert jfk_transcript.filler_count == 0


def test_jfk_words_sit_on_their_sound_not_on_the_pauses(jfk_transcript: Transcript) -> None:
    # "...fellow Americans [1.1 s pause] ask not [1.1 s pause] what your country...":
    # Whisper's own times give "ask" (2.3-3.9 s) and "what" (4.5-5.7 s) the pauses before
    # them; aligned, no word holds more than 0.35 s of near-silence (the closure of the
    # "k" of "ask" before "not" is the longest).
    samples = _jfk_16k()
    n = len(samples) // 160
    level = 10 * np.log10(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    quiet = level < np.percentile(level, 10) + 10
    for word in jfk_transcript.words:
        frames = quiet[int(word.start_s * 100) : int(word.end_s * 100)]
        assert frames.sum() <= 35, (word, int(frames.sum()))
        assert word.duration_s < 0.9, word


@needs_espeak
def test_word_times_known_by_construction(tmp_path: Path) -> None:
    script = [
        ("say", "the weather was terrible but the show went on anyway"), ("gap", 0.5),
        ("say", "then the transcript gives us every word with its time"), ("gap", 0.5),
    ]  # fmt: skip
    errors: list[float] = []
    for voice in ("en-us+m3", "en-gb+f3"):
        path, truth = render_script(script, tmp_path / f"{voice}.wav", voice=voice, seed=4)
        got = [w for w in transcribe(path).words if not w.is_filler]
        matcher = difflib.SequenceMatcher(
            a=[p.text for p in truth], b=[_plain(w.text) for w in got], autojunk=False
        )
        matched = 0
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                piece, word = truth[block.a + k], got[block.b + k]
                errors += [abs(word.start_s - piece.start_s), abs(word.end_s - piece.end_s)]
                matched += 1
        assert matched >= 0.8 * len(truth)
    assert float(np.median(errors)) <= 0.03
    assert float(np.percentile(errors, 90)) <= 0.08


def test_alignment_moves_rough_times_onto_the_words() -> None:
    samples = _jfk_16k()
    pcm = np.round(samples * 32767).astype(np.int16)
    reference = transcribe(jfk_path()).words
    # The same words with times smeared by half a second either way.
    rough = [Word(w.text, max(0.0, w.start_s - 0.5), w.end_s + 0.5) for w in reference]
    aligned = align_words(pcm, rough)
    assert aligned.fully_aligned
    for got, want in zip(aligned.words, reference):
        assert got.start_s == pytest.approx(want.start_s, abs=0.02)
        assert got.end_s == pytest.approx(want.end_s, abs=0.02)


def test_a_word_that_is_not_in_the_audio_leaves_its_chunk_unaligned_not_misplaced() -> None:
    samples = _jfk_16k()
    pcm = np.round(samples * 32767).astype(np.int16)
    words = [Word("hippopotamus", 0.3, 0.6), Word("and", 0.3, 0.6), Word("so", 0.7, 1.0)]
    result = align_words(pcm[: int(1.2 * SR)], words)
    assert len(result.words) == 3
    # Whatever was placed is in order; nothing overlaps.
    for a, b in zip(result.words, result.words[1:]):
        assert a.end_s <= b.start_s + 1e-9


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("Americans,", ["americans"]), ("well-known", ["well", "known"]), ("1961", ["nineteen", "sixty", "one"]),
     ("42%", ["forty", "two", "percent"]), ("—", []), ("don't", ["don't"]), ("300", ["three", "hundred"])],
)  # fmt: skip
def test_dictionary_tokens(text: str, tokens: list[str]) -> None:
    assert dictionary_tokens(text) == tokens


def test_chunks_split_in_the_pause_shift_times_exactly(tmp_path: Path) -> None:
    # "what your country can do for you, ask what you can do for your country" between two
    # identical 1 s stretches of near silence; the file holds it twice.
    speech = _jfk_16k()[int(5.3 * SR) : int(10.96 * SR)]
    pad = np.random.default_rng(0).normal(0, 1e-4, SR).astype(np.float32)
    unit = np.concatenate([pad, speech, pad])
    unit = unit[: len(unit) // 160 * 160]
    path = write_wav(tmp_path / "twice.wav", np.concatenate([unit, unit]))
    offset_s = len(unit) / SR

    result = transcribe(path, chunk_target_s=offset_s, detect_fillers=False)
    assert result.extra["chunks"] == 2
    _assert_well_formed(result)
    first = [w for w in result.words if w.end_s <= offset_s]
    second = [w for w in result.words if w.start_s >= offset_s]
    assert len(first) + len(second) == len(result.words)
    assert [w.text for w in first] == [w.text for w in second] and len(first) >= 12
    for a, b in zip(first, second):
        assert b.start_s == pytest.approx(a.start_s + offset_s, abs=0.011)
        assert b.end_s == pytest.approx(a.end_s + offset_s, abs=0.011)


class _DictCache:
    def __init__(self) -> None:
        self.chunks: dict[str, list[Word]] = {}
        self.hits = 0

    def get(self, key: str) -> list[Word] | None:
        if key in self.chunks:
            self.hits += 1
        return self.chunks.get(key)

    def put(self, key: str, words: list[Word]) -> None:
        self.chunks[key] = words


def test_cached_chunks_are_reused_and_give_the_same_transcript(tmp_path: Path) -> None:
    cache = _DictCache()
    first = transcribe(jfk_path(), chunk_target_s=4.0, cache=cache)
    assert len(cache.chunks) == first.extra["chunks"] >= 2 and cache.hits == 0
    progress: list[tuple[float, float]] = []
    second = transcribe(jfk_path(), chunk_target_s=4.0, cache=cache, progress=lambda d, t: progress.append((d, t)))
    assert cache.hits == len(cache.chunks)
    assert second.words == first.words
    assert progress[-1][0] == pytest.approx(progress[-1][1], abs=0.02)
    # Other settings never reuse these chunks.
    transcribe(jfk_path(), chunk_target_s=4.0, cache=cache, detect_fillers=False)
    assert cache.hits == len(first.words) * 0 + first.extra["chunks"]


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(2 * SR, dtype=np.float32),
        np.random.default_rng(1).normal(0, 3e-4, 2 * SR).astype(np.float32),  # -70 dBFS hiss
        np.zeros(400, dtype=np.float32),  # 25 ms
        0.3 * np.sin(2 * np.pi * 220 * np.arange(800) / SR).astype(np.float32),  # 50 ms tone
    ],
    ids=["digital-silence", "hiss", "25ms", "50ms-tone"],
)
def test_silence_and_very_short_input_give_empty_transcript(
    tmp_path: Path, samples: np.ndarray
) -> None:
    path = write_wav(tmp_path / "quiet.wav", samples)
    result = transcribe(path)
    assert result.words == ()
    assert result.duration_s == pytest.approx(len(samples) / SR, abs=1e-3)


def test_wav_without_samples_gives_empty_transcript(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    result = transcribe(path)
    assert result.words == () and result.duration_s == 0.0


def test_transcribe_samples_on_silence() -> None:
    result = asr.transcribe_samples(np.zeros(SR, dtype=np.int16))
    assert result.words == () and result.duration_s == 1.0


def test_invalid_chunk_length(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", np.zeros(SR, dtype=np.float32))
    with pytest.raises(ValueError):
        transcribe(path, chunk_target_s=0.0)


# --------------------------------------------------------------------------- the model


def test_a_damaged_model_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(whisper._SHIPPED, "tiny.en", "0" * 64)
    with pytest.raises(TranscriptionError, match="damaged"):
        whisper.resolve_model("tiny.en")


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TranscriptionError, match="no model.bin"):
        whisper.resolve_model(str(tmp_path))


def test_a_local_model_directory_is_loaded_and_named_with_its_checksum(tmp_path: Path) -> None:
    shipped = Path(whisper.resolve_model("tiny.en").path)
    local = tmp_path / "my-tiny"
    local.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (local / name).symlink_to(shipped / name)
    engine = whisper.WhisperEngine(whisper.WhisperSettings(model=str(local)))
    assert engine.describe()["model"] == "my-tiny"
    assert engine.describe()["model_sha256"] == whisper.TINY_EN_SHA256
    words = engine.recognise(_jfk_16k()[: int(5.2 * SR)])
    assert [_plain(w.text) for w in words] == JFK_WORDS[:7]


def test_engines_are_recognisers() -> None:
    assert isinstance(whisper.WhisperEngine(), Recogniser)
    assert isinstance(PocketsphinxRecogniser(), Recogniser)


def test_pocketsphinx_baseline_still_transcribes() -> None:
    result = asr.transcribe_samples(_jfk_16k()[: 5 * SR], recogniser=PocketsphinxRecogniser())
    assert result.engine == "pocketsphinx" and len(result.words) >= 3
    _assert_well_formed(result)


# --------------------------------------------------------------------------- plan_chunks


def _levels(pattern: list[tuple[float, float]]) -> np.ndarray:
    """Frame levels (dBFS, 10 ms frames) from ``(seconds, level_db)`` pieces."""
    return np.concatenate([np.full(round(s * 100), db, dtype=np.float32) for s, db in pattern])


def test_plan_chunks_short_audio_is_one_chunk() -> None:
    assert plan_chunks(_levels([(20.0, -20.0)]), chunk_target_s=30.0) == [(0, 2000)]
    assert plan_chunks(np.zeros(0, dtype=np.float32)) == []


def test_plan_chunks_splits_in_pauses_only() -> None:
    rng = np.random.default_rng(2)
    pattern: list[tuple[float, float]] = []
    for _ in range(40):  # speech of 2-9 s separated by pauses of 0.3-1.5 s
        pattern += [(float(rng.uniform(2, 9)), -18.0), (float(rng.uniform(0.3, 1.5)), -65.0)]
    levels = _levels(pattern)
    levels += rng.normal(0, 1.0, len(levels)).astype(np.float32)
    chunks = plan_chunks(levels, chunk_target_s=20.0)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(levels)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for start, _ in chunks[1:]:
        assert levels[start - 5 : start + 5].max() < -50, "split inside speech"
    lengths = [(end - start) / 100 for start, end in chunks]
    assert max(lengths) <= 3 * 20.0 and min(lengths) >= 10.0


def test_plan_chunks_continuous_sound_still_bounded() -> None:
    levels = _levels([(200.0, -20.0)])
    chunks = plan_chunks(levels, chunk_target_s=30.0)
    assert len(chunks) >= 4
    assert max(end - start for start, end in chunks) <= 45 * 100


def test_a_candidate_next_to_a_squeezed_or_displaced_word_is_not_cut() -> None:
    from pod_audio.asr import _neighbours_look_right

    heard = [Word("so", 0.0, 0.5), Word("the", 0.5, 1.0), Word("answer", 1.0, 1.6)]
    filler = Word("uh", 0.6, 0.95, is_filler=True)
    fine = [Word("so", 0.1, 0.4), Word("the", 0.95, 1.1), Word("answer", 1.1, 1.6)]
    assert _neighbours_look_right(filler, fine, heard)
    # "the" aligned to 30 ms: its sound is most likely what looks like a filler.
    squeezed = [Word("so", 0.1, 0.4), Word("the", 0.95, 0.98), Word("answer", 1.0, 1.6)]
    assert not _neighbours_look_right(filler, squeezed, heard)
    # "answer" aligned a second after the recogniser heard it.
    displaced = [Word("so", 0.1, 0.4), Word("the", 0.95, 1.1), Word("answer", 2.8, 3.3)]
    assert not _neighbours_look_right(filler, displaced, heard)
