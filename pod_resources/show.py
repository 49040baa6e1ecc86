"""The show an episode belongs to: its name and its optional intro and outro."""

import dagster as dg


class ShowResource(dg.ConfigurableResource):
    """Per-show mastering settings.

    ``intro_key`` and ``outro_key`` are object-store keys (``shows/main/intro.flac``) of
    jingles crossfaded onto every episode; leave them unset for none.
    """

    name: str = "Podcast"
    intro_key: str | None = None
    outro_key: str | None = None
