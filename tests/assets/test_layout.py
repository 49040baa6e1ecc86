"""Episode ids and object keys derived from hostile upload names stay inside episodes/<id>/."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pod_assets import layout

ID_RE = re.compile(r"[a-z0-9][a-z0-9-]*-[0-9a-f]{10}")

HOSTILE_NAMES = [
    "../x.mp3",
    "../../etc/passwd",
    "a/../../b.wav",
    "nul\x00byte.mp3",
    "x" * 300 + ".mp3",
    "\u202eevil\u202c.mp3",  # right-to-left override
    "episode 🎙️ 42.m4a",
    "Épisode n°1 — été.flac",
    "   .mp3",
    ".hidden",
    "no-extension",
    "back\\slash.wav",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_give_path_safe_ids_and_keys(name):
    episode_id = layout.episode_id_for(name)
    assert ID_RE.fullmatch(episode_id), episode_id
    assert len(episode_id) <= 51
    key = layout.raw_key(episode_id, name)
    assert key.startswith(f"episodes/{episode_id}/raw.")
    assert ".." not in key and "\x00" not in key and "\\" not in key
    assert re.fullmatch(r"episodes/[a-z0-9-]+/raw\.[a-z0-9]{1,5}", key)


@given(st.text(min_size=1, max_size=400))
def test_any_name_maps_to_a_stable_safe_id(name):
    episode_id = layout.episode_id_for(name)
    assert ID_RE.fullmatch(episode_id)
    assert layout.episode_id_for(name) == episode_id
    assert layout.episode_prefix(episode_id) == f"episodes/{episode_id}/"
    assert re.fullmatch(r"[a-z0-9]{1,5}", layout.raw_extension(name))


def test_same_slug_different_names_are_different_episodes():
    assert layout.episode_id_for("Show 1.mp3") != layout.episode_id_for("show-1.mp3")
    assert layout.episode_id_for("Show 1.mp3").startswith("show-1-")


def test_extension_and_title():
    assert layout.raw_extension("Talk.MP3") == "mp3"
    assert layout.raw_extension("noext") == "bin"
    assert layout.raw_extension("weird.ex/t") == "bin"
    assert layout.display_title("my_great show.mp3") == "my great show"
    assert layout.display_title("\u202eevil\u202c.mp3") == "evil"
    assert layout.display_title(".mp3") == ".mp3"  # a dot file: the whole name is its stem
    # Nothing readable left: a title all the same.
    assert layout.display_title("\u202e\u202c.mp3") == "Untitled episode"
    assert layout.display_title("___.mp3") == "Untitled episode"


def test_printable_escapes_controls():
    assert layout.printable("a\x00b\u202e") == "a\\u0000b\\u202e"


def test_episode_prefix_refuses_non_ids():
    with pytest.raises(ValueError):
        layout.episode_prefix("../x")
