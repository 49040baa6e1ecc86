"""The set one cleaning writes whole: what it names is read only as written, and its absence
says that cleaning did not finish."""

from __future__ import annotations

from pathlib import Path

import pytest

from pod_assets import layout
from pod_assets.episodes.cleaned_set import read_cleaned_set, write_cleaned_set
from pod_assets.status import EpisodeInputError
from pod_resources.storage import LocalObjectStore

EP = "chat-0123456789"


def _clean(store: LocalObjectStore, audio: bytes) -> None:
    written = {
        "cleaned_audio": store.write_bytes(layout.episode_key(EP, layout.CLEANED_AUDIO), audio),
        "cut_list": store.write_bytes(layout.episode_key(EP, layout.CUT_LIST), b"{}"),
    }
    write_cleaned_set(store, EP, written)


def test_the_set_names_what_the_run_wrote_and_reads_it_back(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path / "store"))
    _clean(store, b"first")
    _clean(store, b"second")

    cleaned_set = read_cleaned_set(store, EP)

    assert cleaned_set.key == layout.episode_key(EP, layout.CLEANED_SET)
    assert set(cleaned_set.objects) == {"cleaned_audio", "cut_list"}
    cleaned_set.read_to_path(store, "cleaned_audio", tmp_path / "cleaned.flac")
    assert (tmp_path / "cleaned.flac").read_bytes() == b"second"


def test_an_object_rewritten_after_the_set_is_refused_by_name(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path / "store"))
    _clean(store, b"first")
    cleaned_key = layout.episode_key(EP, layout.CLEANED_AUDIO)
    store.write_bytes(cleaned_key, b"a cleaning cut short got this far")

    with pytest.raises(EpisodeInputError) as failure:
        read_cleaned_set(store, EP).read_to_path(store, "cleaned_audio", tmp_path / "cleaned.flac")

    assert cleaned_key in failure.value.message and "different cleaning runs" in failure.value.message


def test_no_set_means_cleaning_did_not_finish(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path / "store"))
    store.write_bytes(layout.episode_key(EP, layout.CLEANED_AUDIO), b"audio without its set")

    with pytest.raises(EpisodeInputError) as failure:
        read_cleaned_set(store, EP)

    message = failure.value.message
    assert "\n" not in message
    assert layout.CLEANED_SET in message and "cleaned_audio did not finish" in message
