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
from pod_audio.asr import FinishedChunk, Recogniser, chunk_from_json, chunk_to_json, transcribe
from pod_audio.chunking import plan_chunks
from pod_audio.pocketsphinx_engine import PocketsphinxRecogniser
from pod_audio.dsp import write_wav
from pod_audio.errors import TranscriptionError
from pod_audio.transcript import Transcript, Word
from tests.audio_factory import jfk_16k, jfk_path
from tests.speech_factory import SR, has_espeak, render_script

JFK_WORDS = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
).split()
needs_espeak = pytest.mark.skipif(not has_espeak(), reason="espeak-ng missing")


def _plain(text: str) -> str:
    return re.sub(r"[^a-z']", "", text.lower())


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
    assert jfk_transcript.extra["second_opinion"] == "base"
    assert jfk_transcript.extra["chunks_second_opinion"] == 0  # tiny.en is sure of JFK
    assert jfk_transcript.duration_s == pytest.approx(11.0, abs=0.05)
    _assert_well_formed(jfk_transcript)
    assert [_plain(w.text) for w in jfk_transcript.words] == JFK_WORDS
    assert jfk_transcript.filler_count == 0


def test_jfk_words_sit_on_their_sound_not_on_the_pauses(jfk_transcript: Transcript) -> None:
    # "...fellow Americans [1.1 s pause] ask not [1.1 s pause] what your country...":
    # Whisper's own times give "ask" (2.3-3.9 s) and "what" (4.5-5.7 s) the pauses before
    # them; aligned, no word holds more than 0.35 s of near-silence (the closure of the
    # "k" of "ask" before "not" is the longest).
    samples = jfk_16k()
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
    # The targets of the word_timing benchmark: median 30 ms, 95th percentile 80 ms.
    assert float(np.median(errors)) <= 0.03
    assert float(np.percentile(errors, 95)) <= 0.08


def test_alignment_moves_rough_times_onto_the_words() -> None:
    samples = jfk_16k()
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
    samples = jfk_16k()
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
    speech = jfk_16k()[int(5.3 * SR) : int(10.96 * SR)]
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
    """Finished chunks kept as the object store keeps them (JSON bytes)."""

    def __init__(self) -> None:
        self.chunks: dict[str, bytes] = {}
        self.hits = 0

    def get(self, key: str) -> FinishedChunk | None:
        if key not in self.chunks:
            return None
        self.hits += 1
        return chunk_from_json(self.chunks[key])

    def put(self, key: str, chunk: FinishedChunk) -> None:
        self.chunks[key] = chunk_to_json(chunk)


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
    assert cache.hits == first.extra["chunks"]  # only the second run's
    assert len(cache.chunks) == 2 * first.extra["chunks"]  # kept under keys of their own


def test_a_resumed_transcription_still_counts_the_chunks_a_second_model_heard() -> None:
    # Base hears every chunk (no mean probability is below 1.01).
    engine = whisper.WhisperEngine(whisper.WhisperSettings(second_opinion_below=1.01))
    cache = _DictCache()
    first = transcribe(jfk_path(), recogniser=engine, chunk_target_s=4.0, detect_fillers=False, cache=cache)
    assert first.extra["chunks_second_opinion"] == first.extra["chunks"] >= 2
    resumed = transcribe(jfk_path(), recogniser=engine, chunk_target_s=4.0, detect_fillers=False, cache=cache)
    assert cache.hits == first.extra["chunks"]
    assert resumed.extra == first.extra and resumed.words == first.words


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
    words = engine.recognise(jfk_16k()[: int(5.2 * SR)])
    assert [_plain(w.text) for w in words] == JFK_WORDS[:7]


def test_the_base_model_is_put_together_once_from_its_two_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_MODEL_CACHE", str(tmp_path))
    resolved = whisper.resolve_model("base")
    model_bin = Path(resolved.path) / "model.bin"
    assert Path(resolved.path).parent == tmp_path
    assert resolved.sha256 == whisper.BASE_SHA256
    assert model_bin.stat().st_size == 145_217_532
    assert sorted(p.name for p in Path(resolved.path).iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    written = model_bin.stat().st_mtime_ns
    assert whisper.resolve_model("base") == resolved
    assert model_bin.stat().st_mtime_ns == written  # not joined again


def test_base_halves_that_do_not_match_leave_no_model_behind_and_fail_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_MODEL_CACHE", str(tmp_path))
    monkeypatch.setitem(whisper._SHIPPED, "base", "0" * 64)
    with pytest.raises(TranscriptionError, match="base weights .* are damaged"):
        whisper.resolve_model("base")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file() and "model.bin" in p.name] == []
    # The default engine asks base for a second opinion: it refuses before any work.
    with pytest.raises(TranscriptionError, match="base weights .* are damaged"):
        whisper.WhisperEngine()
    assert whisper.WhisperEngine(whisper.WhisperSettings(second_opinion="none")).second is None


def test_the_base_model_recognises_speech() -> None:
    engine = whisper.WhisperEngine(whisper.WhisperSettings(model="base"))
    assert engine.describe()["model"] == "base"
    assert engine.describe()["model_sha256"] == whisper.BASE_SHA256
    words = engine.recognise(jfk_16k()[: int(5.2 * SR)])
    assert [_plain(w.text) for w in words] == JFK_WORDS[:7]


def test_a_second_opinion_is_base_for_tiny_en_and_asked_only_where_tiny_is_unsure() -> None:
    settings = whisper.WhisperSettings()
    assert settings.second_model == "base"
    assert whisper.WhisperSettings(model="base").second_model is None
    assert whisper.WhisperSettings(model="/models/small.en").second_model is None
    assert whisper.WhisperSettings(second_opinion="none").second_model is None
    assert whisper.WhisperSettings(second_opinion="/models/base.en").second_model == "/models/base.en"

    audio = jfk_16k()[: int(5.2 * SR)]
    first = whisper.WhisperEngine(whisper.WhisperSettings(second_opinion="none")).recognise(audio)
    mean = float(np.mean([w.confidence for w in first]))
    base_words = whisper.WhisperEngine(whisper.WhisperSettings(model="base")).recognise(audio)
    assert [w.text for w in base_words] != [w.text for w in first]  # base writes them otherwise

    # Just above tiny.en's mean word probability: base hears the chunk, and its words stand.
    unsure = whisper.WhisperEngine(whisper.WhisperSettings(second_opinion_below=mean + 0.001))
    assert unsure.recognise_chunk(audio) == (base_words, True)
    assert unsure.describe()["second_opinion"] == "base"
    assert unsure.describe()["second_opinion_sha256"] == whisper.BASE_SHA256
    # Just below it: tiny.en's words stand, and base is never loaded.
    sure = whisper.WhisperEngine(whisper.WhisperSettings(second_opinion_below=mean - 0.001))
    assert sure.recognise_chunk(audio) == (first, False)
    assert sure._second_pipeline is None
    # The filler checks' re-recognitions always hear with the first model.
    assert unsure.recognise(audio) == first


def test_a_second_opinion_that_masks_a_word_is_not_taken() -> None:
    """Two pieces of JFK cut mid-word around a pause: tiny.en is unsure of them, and base
    writes the cut "fellow" as "f**k"; tiny.en's words stand."""
    speech = jfk_16k()
    audio = np.concatenate([
        speech[int(0.3 * SR) : int(1.4 * SR)],
        np.zeros(int(1.2 * SR), np.float32),
        speech[int(2.8 * SR) : int(3.9 * SR)],
    ])
    base = whisper.WhisperEngine(whisper.WhisperSettings(model="base")).recognise(audio)
    assert any("*" in w.text for w in base)
    engine = whisper.WhisperEngine()
    first = engine.recognise(audio)
    assert float(np.mean([w.confidence for w in first])) < whisper.SECOND_OPINION_BELOW
    assert engine.recognise_chunk(audio) == (first, False)


def test_engines_are_recognisers() -> None:
    assert isinstance(whisper.WhisperEngine(), Recogniser)
    assert isinstance(PocketsphinxRecogniser(), Recogniser)


def test_pocketsphinx_baseline_still_transcribes() -> None:
    result = asr.transcribe_samples(jfk_16k()[: 5 * SR], recogniser=PocketsphinxRecogniser())
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
    from pod_audio.filler_checks import neighbours_look_right

    heard = [Word("so", 0.0, 0.5), Word("the", 0.5, 1.0), Word("answer", 1.0, 1.6)]
    filler = Word("uh", 0.6, 0.95, is_filler=True)
    fine = [Word("so", 0.1, 0.4), Word("the", 0.95, 1.1), Word("answer", 1.1, 1.6)]
    assert neighbours_look_right(filler, fine, heard)
    # "the" aligned to 30 ms: its sound is most likely what looks like a filler.
    squeezed = [Word("so", 0.1, 0.4), Word("the", 0.95, 0.98), Word("answer", 1.0, 1.6)]
    assert not neighbours_look_right(filler, squeezed, heard)
    # Exactly 60 ms for the two sounds of "the" (DH AH; 5.77 -> 5.83 in floating point) is
    # not under 30 ms a sound.
    heard_late = [w.shifted(4.9) for w in heard]
    at_limit = [Word("so", 5.0, 5.3), Word("the", 5.77, 5.83), Word("answer", 5.9, 6.5)]
    assert neighbours_look_right(filler.shifted(4.9), at_limit, heard_late)
    # "the" aligned a second after the recogniser heard it.
    displaced = [Word("so", 0.1, 0.4), Word("the", 1.7, 1.8), Word("answer", 1.8, 2.3)]
    assert not neighbours_look_right(filler, displaced, heard)


def test_only_the_words_either_side_of_a_candidate_and_their_sounds_judge_it() -> None:
    """A word is squeezed when it is aligned to less than 30 ms for each sound it is said
    with (CMUdict), not each letter; and only the words next to the candidate say whether
    the sound in its gap is theirs."""
    from pod_audio.filler_checks import neighbours_look_right, sounds_in

    assert [sounds_in(t) for t in ("The", "for", "I", "country", "Americans")] == [2, 2, 1, 6, 6]
    assert sounds_in("Zorblaxx") == 6  # not in the dictionary: its letters, at most six
    heard = [Word("all", 0.0, 0.4), Word("the", 0.5, 0.9), Word("way", 0.9, 1.2),
             Word("back", 1.3, 1.6)]  # fmt: skip
    filler = Word("ah", 1.3, 1.8, is_filler=True)
    # "the" squeezed into 40 ms, two words before the candidate: the gap after "way" is not
    # where its sound went.
    aligned = [Word("all", 0.0, 0.4), Word("the", 1.06, 1.1), Word("way", 1.1, 1.29),
               Word("back", 1.8, 2.1)]  # fmt: skip
    assert neighbours_look_right(filler, aligned, heard)
    # "back", right after the candidate, squeezed into 80 ms (three sounds need 90).
    squeezed_next = [*aligned[:3], Word("back", 1.8, 1.88)]
    assert not neighbours_look_right(filler, squeezed_next, heard)


def test_a_candidate_whose_cut_changes_the_words_next_to_it_is_not_cut() -> None:
    from pod_audio.filler_checks import cut_takes_a_word

    cut_s = (1.5, 1.9)
    said = ["until", "the", "very"]
    as_is = [("until", 0.9), ("the", 1.7), ("very", 2.3)]
    # Cut out, the recogniser no longer hears "the": the candidate was that word.
    assert cut_takes_a_word(as_is, [("until", 0.9), ("very", 1.9)], cut_s=cut_s, said=said)
    # Heard as another word right at the cut: the cut garbles it.
    garbled = [("until", 0.9), ("a", 1.5), ("very", 1.9)]
    assert cut_takes_a_word(as_is, garbled, cut_s=cut_s, said=said)
    # The same words (earlier after the cut): only a filler went.
    same = [("until", 0.9), ("the", 1.5), ("very", 1.9)]
    assert not cut_takes_a_word(as_is, same, cut_s=cut_s, said=said)
    # A word at the stretch's edge, far from the cut, comes and goes: recogniser noise.
    far = [("so", 0.2), *as_is]
    assert not cut_takes_a_word(far, as_is, cut_s=cut_s, said=["so", *said])
    what = [("what's", 0.3), *as_is]
    assert not cut_takes_a_word(what, [("what", 0.3), *as_is], cut_s=cut_s, said=said)


def test_a_cut_that_only_mends_what_the_short_stretch_misheard_is_not_a_word_taken() -> None:
    """Heard alone, a short stretch is often misheard ("why are you a country" for "what
    your country"); once the filler is cut, it is heard as the transcript has it. No word of
    the transcript heard before the cut is lost: the cut takes nothing. A transcript word
    heard before and lost after still stops the cut, even among mishearings."""
    from pod_audio.filler_checks import cut_takes_a_word

    said = ["what", "your", "country", "can", "do"]
    as_is = [("why", 0.4), ("are", 0.8), ("you", 0.9), ("a", 1.0), ("country", 1.3),
             ("can", 1.9), ("do", 2.3)]
    mended = [("what", 0.4), ("your", 0.9), ("country", 1.3), ("can", 1.7), ("do", 2.0)]
    assert not cut_takes_a_word(as_is, mended, cut_s=(1.5, 1.85), said=said)
    lost = [("what", 0.4), ("your", 0.9), ("country", 1.3), ("do", 2.0)]
    assert cut_takes_a_word(as_is, lost, cut_s=(1.5, 1.85), said=said)


def test_a_cut_that_lets_a_word_whisper_misspelt_be_heard_better_takes_nothing() -> None:
    """Whisper wrote "as" for "ask", and an "ah" follows it: the stretch as it is is heard
    "and what", and with the candidate cut out "ask what", which is the transcript's "as"
    heard better. A word heard as one that is no near spelling of the transcript's still
    stops the cut."""
    from pod_audio.filler_checks import cut_takes_a_word

    said = ["for", "you", "as", "what", "you"]
    as_is = [("for", 0.3), ("you", 0.6), ("and", 1.2), ("what", 1.9), ("you", 2.2)]
    heard_better = [("for", 0.3), ("you", 0.6), ("ask", 1.2), ("what", 1.5), ("you", 1.8)]
    assert not cut_takes_a_word(as_is, heard_better, cut_s=(1.3, 1.9), said=said)
    for other in ("at", "a", "asked"):  # another word, too short, two letters more
        garbled = [*heard_better[:2], (other, 1.2), *heard_better[3:]]
        assert cut_takes_a_word(as_is, garbled, cut_s=(1.3, 1.9), said=said), other


def test_a_misheard_word_that_the_cut_deletes_is_still_a_word() -> None:
    """A slow "the" that the aligner put on the end of "until" leaves its sound in a gap;
    heard alone, the stretch gives "leh" for it. The cut deletes "leh" without mending
    anything: it takes a word, though "leh" is not in the transcript."""
    from pod_audio.filler_checks import cut_takes_a_word

    said = ["stayed", "until", "the", "very", "end"]
    as_is = [("i'm", 0.5), ("teal", 1.3), ("leh", 1.9), ("very", 2.6), ("in", 3.1)]
    without = [("i'm", 0.5), ("teal", 1.3), ("very", 2.1), ("in", 2.6)]
    assert cut_takes_a_word(as_is, without, cut_s=(1.5, 1.94), said=said)
    # Heard as something else that matches no more of the transcript: garbled, kept.
    other = [("i'm", 0.5), ("teal", 1.3), ("i'm", 1.8), ("not", 1.9), ("very", 2.1)]
    assert cut_takes_a_word(as_is, other, cut_s=(1.5, 1.94), said=said)


def test_cut_out_removes_exactly_the_candidate_with_a_short_crossfade() -> None:
    from pod_audio.filler_checks import cut_out

    pcm = np.arange(SR * 4, dtype=np.int16) % 1000
    stretch = cut_out(pcm, Word("uh", 1.5, 2.0, is_filler=True), (0.5, 3.0))
    fade = int(0.01 * SR)
    assert len(stretch) == int(2.0 * SR) - fade
    np.testing.assert_array_equal(stretch[: SR - fade], pcm[int(0.5 * SR) : int(1.5 * SR) - fade])
    np.testing.assert_array_equal(stretch[SR:], pcm[int(2.0 * SR) + fade : int(3.0 * SR)])


def test_speech_the_recogniser_left_out_is_recognised_again() -> None:
    """Whisper now and then ends a window early and drops the rest; those words come back."""
    from pod_audio.filler_checks import uncovered_speech, with_dropped_words
    from pod_audio.dsp import as_int16

    pcm = as_int16(jfk_16k())
    engine = asr.default_recogniser()
    heard = engine.recognise(pcm / 32768.0)
    assert [_plain(w.text) for w in heard] == JFK_WORDS
    # As if the recogniser had stopped after "americans".
    first = heard[:5]
    placed = align_words(pcm, first).words
    assert uncovered_speech(pcm, placed)
    recovered = with_dropped_words(pcm, first, placed, engine)
    assert [_plain(w.text) for w in recovered] == JFK_WORDS
    assert [w.start_s for w in recovered] == sorted(w.start_s for w in recovered)
    # Nothing left out: nothing to recover, no recognition.
    all_placed = align_words(pcm, heard).words
    assert uncovered_speech(pcm, all_placed) == []


class _Counting:
    """The real recogniser, counting the audio it is asked about."""

    def __init__(self, engine: Recogniser) -> None:
        self.engine, self.asked_s = engine, []

    def recognise(self, samples: np.ndarray) -> list[Word]:
        self.asked_s.append(len(samples) / SR)
        return self.engine.recognise(samples)


@pytest.fixture(scope="module")
def jfk_aligned() -> tuple[np.ndarray, list[Word], Recogniser]:
    """JFK's audio as ``int16``, its words on their aligned spans, and the recogniser."""
    from pod_audio.dsp import as_int16

    pcm = as_int16(jfk_16k())
    engine = asr.default_recogniser()
    return pcm, align_words(pcm, engine.recognise(pcm / 32768.0)).words, engine


def test_a_candidate_on_a_word_is_heard_with_both_contexts_and_kept(
    jfk_aligned: tuple[np.ndarray, list[Word], Recogniser],
) -> None:
    """A word really there is heard with 1.5 s of context and again with 3 s; a candidate
    in a pause is cleared by the first hearing and never asked about again."""
    from pod_audio.filler_checks import missed_words

    pcm, words, recogniser = jfk_aligned
    engine = _Counting(recogniser)
    country = next(w for w in words if _plain(w.text) == "country")
    on_a_word = Word("uh", country.start_s, country.end_s, is_filler=True)
    assert missed_words(pcm, [on_a_word], words, engine) == [True]
    # As it is and without the candidate, with each context: the second pair is longer.
    assert len(engine.asked_s) == 4
    assert engine.asked_s[2] > engine.asked_s[0] + 2.5
    # The pause after "ask not": nothing there, one hearing. (Not the pause after
    # "Americans": cut out, its "s" runs into "ask" and Whisper hears "America asked".)
    gap = next(pair for pair in zip(words, words[1:]) if _plain(pair[0].text) == "not")
    in_a_pause = Word("uh", gap[0].end_s + 0.05, gap[1].start_s - 0.05, is_filler=True)
    assert in_a_pause.duration_s > 0.3
    engine.asked_s.clear()
    assert missed_words(pcm, [in_a_pause], words, engine) == [False]
    assert len(engine.asked_s) == 2


def test_a_real_word_the_recogniser_wrote_as_a_hesitation_is_still_kept(
    jfk_aligned: tuple[np.ndarray, list[Word], Recogniser],
) -> None:
    """Where the recogniser wrote "uh", the recognition check asks only whether cutting
    the candidate changes the words heard; cutting a word it wrote as "uh" does."""
    from pod_audio.filler_checks import missed_words

    pcm, words, engine = jfk_aligned
    i = next(i for i, w in enumerate(words) if _plain(w.text) == "country")
    as_uh = Word("uh", words[i].start_s, words[i].end_s, is_filler=True)
    written = [*words[:i], as_uh, *words[i + 1 :]]
    assert missed_words(pcm, [written[i]], written, engine, spelled=[True]) == [True]


def test_a_hesitation_the_recogniser_wrote_is_not_kept_for_a_word_heard_beside_it(
    jfk_aligned: tuple[np.ndarray, list[Word], Recogniser],
) -> None:
    """A word the transcript lacks, heard in a candidate's stretch, keeps an unwritten
    candidate (it may be that word's sound); beside a hesitation the recogniser wrote,
    it does not, unless cutting the candidate changes what is heard. Here the transcript
    lacks "not", and the candidate is the pause after it: cut out, "ask not what" is
    still heard."""
    from pod_audio.filler_checks import missed_words

    pcm, words, engine = jfk_aligned
    i = next(i for i, w in enumerate(words) if _plain(w.text) == "not")
    pause = Word("uh", words[i].end_s + 0.1, words[i + 1].start_s - 0.1, is_filler=True)
    assert pause.duration_s > 0.8
    dropped = [*words[:i], *words[i + 1 :]]
    assert missed_words(pcm, [pause], dropped, engine, spelled=[False]) == [True]
    assert missed_words(pcm, [pause], dropped, engine, spelled=[True]) == [False]


def test_words_whisper_runs_together_with_ellipses_are_words_of_their_own() -> None:
    from pod_audio.fillers import flag_spelled_filler
    from pod_audio.whisper import split_at_ellipses

    run = split_at_ellipses(Word("the...um...was...a...", 2.0, 4.0, confidence=0.4))
    assert [w.text for w in run] == ["the...", "um...", "was...", "a..."]
    # The span shared by letters, in order, end to end; the filler is a filler of its own.
    assert run[0].start_s == 2.0 and run[-1].end_s == 4.0
    assert all(a.end_s == b.start_s for a, b in zip(run, run[1:]))
    assert run[0].duration_s == pytest.approx(3 * run[-1].duration_s, abs=0.002)
    assert [flag_spelled_filler(w).is_filler for w in run] == [False, True, False, False]
    assert [w.text for w in split_at_ellipses(Word("so…uh", 0.0, 1.0))] == ["so…", "uh"]
    for whole in ("Well...", "...and", "U.S.A.", "well-known"):
        assert split_at_ellipses(Word(whole, 0.0, 1.0)) == [Word(whole, 0.0, 1.0)]


def test_a_short_candidate_touching_a_voiced_word_edge_is_not_cut() -> None:
    from pod_audio.filler_checks import word_edge

    words = [Word("about", 5.9, 6.49), Word("urban", 7.44, 7.74), Word("books", 8.5, 8.9)]
    # The "ur" of "urban" left outside the aligned word.
    assert word_edge(Word("uh", 7.29, 7.44, is_filler=True), words)
    # Long enough to be a filler of its own, or clear of the word, or next to a "k"/"s".
    assert not word_edge(Word("uh", 7.0, 7.44, is_filler=True), words)
    assert not word_edge(Word("uh", 7.1, 7.3, is_filler=True), words)
    assert not word_edge(Word("uh", 8.9, 9.05, is_filler=True), words)


def test_a_word_edge_is_voiced_by_its_sound_not_its_spelling() -> None:
    from pod_audio.filler_checks import word_edge

    # "know" is spelled with a "k" and starts on "n": the murmur of a drawn-out "n" left
    # before the aligned word looks like a "hmm". "Honest" starts on its vowel.
    words = [Word("already", 2.62, 3.24), Word("know", 3.5, 4.44), Word("Honest,", 5.2, 5.6)]
    assert word_edge(Word("hmm", 3.33, 3.5, is_filler=True), words)
    assert word_edge(Word("uh", 5.0, 5.19, is_filler=True), words)
    # "make" ends on "k" (its "e" is silent), "stop" on "p": a short sound after them is
    # not their edge. A word the dictionary lacks is judged by its letters.
    words = [Word("make", 1.0, 1.3), Word("stop", 2.0, 2.3), Word("Ulvenbrook", 3.0, 3.5)]
    assert not word_edge(Word("uh", 1.31, 1.5, is_filler=True), words)
    assert not word_edge(Word("uh", 2.31, 2.5, is_filler=True), words)
    assert word_edge(Word("uh", 2.81, 2.99, is_filler=True), words)
    assert not word_edge(Word("uh", 3.51, 3.7, is_filler=True), words)


def test_an_unaligned_word_over_a_pause_is_put_on_its_sound_not_on_the_pause() -> None:
    from pod_audio.align import AlignedChunk, tighten_to_sound

    t = np.arange(int(0.6 * SR)) / SR
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    noise = np.random.default_rng(0).normal(0, 3, int(1.2 * SR)).astype(np.int16)
    pcm = np.concatenate([tone[: int(0.5 * SR)], noise, tone])  # sound, 1.2 s pause, sound
    chunk = AlignedChunk(
        (Word("my", 0.0, 0.4), Word("first", 0.45, 2.3), Word("ask", 1.9, 2.3)), (True, False, True)
    )
    my, first, ask = tighten_to_sound(pcm, chunk).words
    # The unaligned word spans the tail of one sound, the pause and the next sound: it keeps
    # the larger stretch of sound only, so the pause is free to be shortened.
    assert first.start_s == pytest.approx(1.7, abs=0.02) and first.end_s == pytest.approx(2.3, abs=0.02)
    # Aligned words are only trimmed at their edges.
    assert my.start_s == pytest.approx(0.0, abs=0.02) and ask.start_s == pytest.approx(1.9, abs=0.02)


def _sound_and_pauses(*pieces: tuple[str, float]) -> np.ndarray:
    """("sound" or "pause", seconds) pieces laid end to end: a 220 Hz tone, or faint noise."""
    rng = np.random.default_rng(2)
    out = []
    for kind, seconds in pieces:
        n = int(round(seconds * SR))
        if kind == "sound":
            out.append((8000 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)).astype(np.int16))
        else:
            out.append(rng.normal(0, 3, n).astype(np.int16))
    return np.concatenate(out)


def test_a_word_takes_in_the_sound_running_on_from_it_into_a_pause() -> None:
    from pod_audio.align import widen_to_sound

    # Sound 0.2-0.75 s, pause, sound 1.15-1.75 s, pause, sound 2.15-2.65 s, pause.
    pcm = _sound_and_pauses(
        ("pause", 0.2), ("sound", 0.55), ("pause", 0.4), ("sound", 0.6), ("pause", 0.4),
        ("sound", 0.5), ("pause", 0.5),
    )
    words = [Word("the", 0.2, 0.5), Word("train", 1.35, 1.75), Word("uh", 2.15, 2.65, is_filler=True)]
    the, train, uh = widen_to_sound(pcm, words)
    # "the" ends 0.25 s before its sound does: it ends where its sound does. "train"
    # starts where its sound does (0.2 s earlier). The filler is neither moved nor taken in.
    assert (the.start_s, the.end_s) == (0.2, pytest.approx(0.75, abs=0.011))
    assert (train.start_s, train.end_s) == (pytest.approx(1.15, abs=0.011), 1.75)
    assert uh == words[2]


def test_sound_that_runs_on_too_long_or_into_another_word_stays_outside_a_word() -> None:
    from pod_audio.align import widen_to_sound

    # 0.6 s of sound after "so" (more than 0.3 s): not taken in.
    pcm = _sound_and_pauses(("pause", 0.2), ("sound", 0.9), ("pause", 0.5))
    assert widen_to_sound(pcm, [Word("so", 0.2, 0.5)]) == [Word("so", 0.2, 0.5)]
    # Sound between two words with no pause in it: neither word's alone.
    pcm = _sound_and_pauses(("pause", 0.2), ("sound", 1.0), ("pause", 0.5))
    words = [Word("and", 0.2, 0.5), Word("then", 0.7, 1.2)]
    assert widen_to_sound(pcm, words) == words
    # Nor into a filler touching the sound.
    words = [Word("and", 0.2, 0.5), Word("uh", 0.7, 1.2, is_filler=True)]
    assert widen_to_sound(pcm, words) == words


def test_an_unaligned_word_with_no_sound_under_it_does_not_hold_a_pause_open() -> None:
    from pod_audio.align import AlignedChunk, tighten_to_sound

    t = np.arange(int(0.5 * SR)) / SR
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    noise = np.random.default_rng(1).normal(0, 3, int(1.5 * SR)).astype(np.int16)
    pcm = np.concatenate([tone, noise, tone])  # sound, 1.5 s pause, sound
    chunk = AlignedChunk(
        (Word("okay", 0.0, 0.5), Word("what", 1.0, 1.03), Word("you", 2.0, 2.5)), (True, False, True)
    )
    okay, what, you = tighten_to_sound(pcm, chunk).words
    # Heard in the middle of the pause, where there is nothing: kept as a word, on the
    # shortest span right after the word before it.
    assert what.start_s == pytest.approx(okay.end_s) and what.duration_s == pytest.approx(0.03)
    assert you.start_s == pytest.approx(2.0, abs=0.02)
