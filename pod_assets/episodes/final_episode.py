"""``final_episode``: intro and outro, loudness to target, true-peak limited, tagged MP3."""

import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.episode_asset import episode_asset, record_metrics, step_name
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.cleaned_set import read_cleaned_set
from pod_assets.episodes.edit_review import redraw_with_final
from pod_assets.status import EpisodeInputError, EpisodeStep, episode_step
from pod_audio.io import probe
from pod_audio.mastering import MasterReport, default_target_lufs, render_final
from pod_audio.tags import EpisodeTags
from pod_resources.catalog import CatalogResource
from pod_resources.media_links import links_metadata
from pod_resources.show import ShowResource
from pod_resources.storage import ObjectStore

LOUDNESS_CHECK = "final_loudness_in_range"
DURATION_CHECK = "final_duration_matches"
LOUDNESS_TOLERANCE_LU = 0.5
DURATION_TOLERANCE_S = 0.05
CHECKS = {
    LOUDNESS_CHECK: "Integrated loudness within ±0.5 LU of target; true peak at or below the limit.",
    DURATION_CHECK: "Duration = cleaned + intro + outro − crossfades, within 50 ms.",
}


class MasteringConfig(dg.Config):
    target_lufs: float | None = None
    """Integrated loudness; default -16 LUFS for stereo, -19 LUFS for mono."""
    true_peak_dbtp: float = -1.0
    """Highest true peak allowed in the MP3."""
    bitrate_kbps: int = 128
    crossfade_ms: float = 500.0
    """Crossfade between intro, episode and outro."""
    intro_key: str | None = None
    """Object key of an intro for this run; default: the show's."""
    outro_key: str | None = None
    """Object key of an outro for this run; default: the show's."""


def _fetch_jingle(store: ObjectStore, key: str | None, scratch: Path, name: str) -> Path | None:
    if not key:
        return None
    if not store.exists(key):
        raise EpisodeInputError(f"{name} {key} ({store.uri(key)}) does not exist; fix the show's {name}_key")
    path = scratch / f"{name}{Path(key).suffix}"
    store.read_to_path(key, path)
    return path


def _intro_offset_s(intro: Path | None, cleaned_s: float, crossfade_ms: float) -> float:
    """Where the cleaned audio starts in the final MP3: the intro minus its crossfade (which
    the mixer shortens to the shorter part); 0 without an intro. Subtitles and chapters
    shift by it."""
    if intro is None:
        return 0.0
    intro_s = probe(intro, decode_check=False).duration_s
    return intro_s - min(crossfade_ms / 1000, intro_s, cleaned_s)


@episode_asset(deps=[cleaned_audio], kinds={"audio", "mp3"}, pool="cpu", checks=CHECKS)
def final_episode(
    context: dg.AssetExecutionContext, config: MasteringConfig, store: ObjectStore,
    catalog: CatalogResource, show: ShowResource,
) -> dg.MaterializeResult:
    """The finished episode: intro and outro crossfaded on, loudness normalised to target,
    true peak limited, MP3 at 44.1 kHz with ID3v2.4 tags (title, show, date, duration),
    written to ``episodes/<ep>/episode.mp3``. Loudness and peak are measured on the decoded MP3.

    Reads only the cleaned audio of the last finished cleaning (``cleaned_set.json``) and its
    cut list, never the raw media: it runs on its own after the retention purge too (a
    remaster with other settings)."""
    cat = catalog.get_catalog()
    with episode_step(context, cat, step=step_name(context)) as step:
        episode = step.episode
        out_key = layout.episode_key(episode.episode_id, layout.FINAL_EPISODE)
        cleaned_set = read_cleaned_set(store, episode.episode_id)
        with tempfile.TemporaryDirectory(prefix="pod-master-") as scratch_dir:
            scratch = Path(scratch_dir)
            cleaned_path = scratch / layout.CLEANED_AUDIO
            cleaned_set.read_to_path(store, "cleaned_audio", cleaned_path)
            intro = _fetch_jingle(store, config.intro_key or show.intro_key, scratch, "intro")
            outro = _fetch_jingle(store, config.outro_key or show.outro_key, scratch, "outro")
            cleaned_info = probe(cleaned_path, decode_check=False)
            out_path = scratch / layout.FINAL_EPISODE
            report = _master(
                cleaned_path, out_path, intro=intro, outro=outro, channels=cleaned_info.channels,
                config=config, show=show, title=episode.title,
                progress=lambda line: context.log.info(f"final_episode {episode.episode_id}: {line}"),
            )
            expected_s = _expected_duration_s(intro, outro, cleaned_info.duration_s, config.crossfade_ms)
            intro_offset_s = _intro_offset_s(intro, cleaned_info.duration_s, config.crossfade_ms)
            stored = store.write_file(out_key, out_path, content_type="audio/mpeg")
            picture = redraw_with_final(
                store, episode_id=episode.episode_id, title=episode.title, final_path=out_path,
                final_offset_s=intro_offset_s, links=show.media_links(), numbers=_loudness_line(report),
            )
        metadata = record_metrics(
            cat, episode.episode_id, _metrics(report, stored.size, intro_offset_s), shown_as=_SHOWN_AS
        )
        cat.record_artifacts(episode.episode_id, {"final_episode": store.uri(out_key)})
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "gain_db": dg.MetadataValue.float(round(report.gain_db, 2)),
                "limiter_max_db": dg.MetadataValue.float(round(report.limiter_max_db, 2)),
                "intro": dg.MetadataValue.text(str(config.intro_key or show.intro_key or "none")),
                "outro": dg.MetadataValue.text(str(config.outro_key or show.outro_key or "none")),
                "uri": dg.MetadataValue.url(store.uri(out_key)),
                **links_metadata(store, show.media_links(), {"final_episode": out_key}),
                **picture,
            },
            check_results=_checks(step, report, config, expected_s=expected_s),
        )


def _expected_duration_s(
    intro: Path | None, outro: Path | None, cleaned_s: float, crossfade_ms: float
) -> float:
    """Cleaned audio plus the jingles, less one crossfade per join."""
    jingles_s = sum(probe(p, decode_check=False).duration_s for p in (intro, outro) if p)
    joins = sum(1 for p in (intro, outro) if p)
    return cleaned_s + jingles_s - joins * crossfade_ms / 1000


def _master(
    cleaned_path: Path,
    out_path: Path,
    *,
    intro: Path | None,
    outro: Path | None,
    channels: int,
    config: MasteringConfig,
    show: ShowResource,
    title: str,
    progress: Callable[[str], None],
) -> MasterReport:
    """The MP3 at the run's target (else the show's, else the default for ``channels``)."""
    target = next(
        (t for t in (config.target_lufs, show.target_lufs) if t is not None),
        default_target_lufs(min(channels, 2)),
    )
    return render_final(
        main_path=cleaned_path,
        out_path=out_path,
        intro_path=intro,
        outro_path=outro,
        crossfade_ms=config.crossfade_ms,
        target_lufs=target,
        true_peak_dbtp=config.true_peak_dbtp,
        bitrate_kbps=config.bitrate_kbps,
        progress=progress,
        tags=EpisodeTags(
            title=title, show=show.name, date=dt.datetime.now(dt.UTC).date().isoformat(), duration_s=0.0
        ),
    )


_SHOWN_AS = {"final_duration_s": "duration_s", "loudness_lufs": "loudness_out_lufs", "final_bytes": "bytes"}
"""The names the materialization has always shown these metrics under."""


def _metrics(report: MasterReport, size_bytes: int, intro_offset_s: float) -> dict[str, float | int]:
    """Measured on the decoded MP3, as a listener's player decodes it."""
    return {
        "final_duration_s": round(report.duration_s, 3),
        "loudness_lufs": round(report.lufs_out, 2),
        "loudness_in_lufs": round(report.lufs_in, 2),
        "true_peak_dbtp": round(report.true_peak_dbtp, 2),
        "target_lufs": report.target_lufs,
        "final_bytes": size_bytes,
        "intro_offset_s": round(intro_offset_s, 6),
    }


def _loudness_line(report: MasterReport) -> str:
    return (
        f"before {report.lufs_in:.1f} LUFS, after {report.lufs_out:.1f} LUFS "
        f"(target {report.target_lufs:.1f}), true peak {report.true_peak_dbtp:.1f} dBTP"
    )


def _checks(
    step: EpisodeStep, report: MasterReport, config: MasteringConfig, *, expected_s: float
) -> list[dg.AssetCheckResult]:
    target = report.target_lufs
    loud_ok = abs(report.lufs_out - target) <= LOUDNESS_TOLERANCE_LU
    peak_ok = report.true_peak_dbtp <= config.true_peak_dbtp + 1e-6
    duration_off_s = report.duration_s - expected_s
    return [
        step.check(
            LOUDNESS_CHECK,
            passed=loud_ok and peak_ok,
            description=(
                f"{report.lufs_out:.2f} LUFS (target {target:.1f} ±{LOUDNESS_TOLERANCE_LU}), "
                f"true peak {report.true_peak_dbtp:.2f} dBTP (limit {config.true_peak_dbtp:.1f})"
            ),
            metadata={"lufs": report.lufs_out, "true_peak_dbtp": report.true_peak_dbtp},
        ),
        step.check(
            DURATION_CHECK,
            passed=abs(duration_off_s) <= DURATION_TOLERANCE_S,
            description=f"{report.duration_s:.3f} s, expected {expected_s:.3f} s ({duration_off_s * 1000:+.0f} ms)",
        ),
    ]
