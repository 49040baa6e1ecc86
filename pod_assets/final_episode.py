"""``final_episode``: intro and outro, loudness to target, true-peak limited, tagged MP3."""

import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.cleaned_audio import cleaned_audio
from pod_assets.partitions import episode_partitions
from pod_assets.status import TRANSIENT_RETRY_POLICY, EpisodeInputError, episode_step
from pod_audio.cuts import CutList
from pod_audio.io import probe
from pod_audio.master import default_target_lufs, render_final
from pod_audio.tags import EpisodeTags
from pod_resources.catalog import CatalogResource
from pod_resources.show import ShowResource
from pod_resources.storage import ObjectStore

LOUDNESS_CHECK = "final_loudness_in_range"
DURATION_CHECK = "final_duration_matches"
LOUDNESS_TOLERANCE_LU = 0.5
DURATION_TOLERANCE_S = 0.05


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


_SET_TOLERANCE_S = 0.01


def _check_cleaned_matches_cut_list(store: ObjectStore, episode_id: str, cleaned_s: float) -> None:
    """``cleaned_audio`` writes its three outputs one after another; a run cut short between
    them leaves a mixed set. Master only audio that the stored cut list (and so the stored
    cleaned transcript) describes."""
    cleaned_key = layout.episode_key(episode_id, layout.CLEANED_AUDIO)
    cut_list_key = layout.episode_key(episode_id, layout.CUT_LIST)
    kept_s = CutList.from_json(store.read_bytes(cut_list_key)).kept_duration_s
    if abs(kept_s - cleaned_s) > _SET_TOLERANCE_S:
        raise EpisodeInputError(
            f"{cleaned_key} is {cleaned_s:.3f} s long but {cut_list_key} keeps {kept_s:.3f} s: "
            "they come from different cleaning runs (one was cut short); "
            "materialise cleaned_audio again"
        )


@dg.asset(
    partitions_def=episode_partitions,
    deps=[cleaned_audio],
    group_name="episodes",
    kinds={"audio", "mp3"},
    retry_policy=TRANSIENT_RETRY_POLICY,
    pool="cpu",
    check_specs=[
        dg.AssetCheckSpec(LOUDNESS_CHECK, asset="final_episode", blocking=True,
                          description="Integrated loudness within ±0.5 LU of target; true peak at or below the limit."),
        dg.AssetCheckSpec(DURATION_CHECK, asset="final_episode", blocking=True,
                          description="Duration = cleaned + intro + outro − crossfades, within 50 ms."),
    ],
)
def final_episode(
    context: dg.AssetExecutionContext,
    config: MasteringConfig,
    store: ObjectStore,
    catalog: CatalogResource,
    show: ShowResource,
) -> dg.MaterializeResult:
    """The finished episode: intro and outro crossfaded on, loudness normalised to target,
    true peak limited, MP3 at 44.1 kHz with ID3v2.4 tags (title, show, date, duration),
    written to ``episodes/<ep>/episode.mp3``. Loudness and peak are measured on the decoded MP3.

    Reads only the stored cleaned audio and cut list, never the raw media: it runs on its own
    after the retention purge too (a remaster with other settings)."""
    cat = catalog.get_catalog()
    with episode_step(context, cat, step="final_episode") as step:
        episode = step.episode
        out_key = layout.episode_key(episode.episode_id, layout.FINAL_EPISODE)
        with tempfile.TemporaryDirectory(prefix="pod-master-") as scratch_dir:
            scratch = Path(scratch_dir)
            cleaned_path = scratch / layout.CLEANED_AUDIO
            store.read_to_path(layout.episode_key(episode.episode_id, layout.CLEANED_AUDIO), cleaned_path)
            intro = _fetch_jingle(store, config.intro_key or show.intro_key, scratch, "intro")
            outro = _fetch_jingle(store, config.outro_key or show.outro_key, scratch, "outro")
            cleaned_info = probe(cleaned_path, decode_check=False)
            _check_cleaned_matches_cut_list(store, episode.episode_id, cleaned_info.duration_s)
            target = config.target_lufs if config.target_lufs is not None else default_target_lufs(min(cleaned_info.channels, 2))
            out_path = scratch / layout.FINAL_EPISODE
            report = render_final(
                main_path=cleaned_path,
                out_path=out_path,
                intro_path=intro,
                outro_path=outro,
                crossfade_ms=config.crossfade_ms,
                target_lufs=target,
                true_peak_dbtp=config.true_peak_dbtp,
                bitrate_kbps=config.bitrate_kbps,
                tags=EpisodeTags(
                    title=episode.title,
                    show=show.name,
                    date=dt.datetime.now(dt.UTC).date().isoformat(),
                    duration_s=0.0,
                ),
            )
            measured = report  # measured on the decoded MP3, as a listener's player decodes it
            jingles_s = sum(probe(p, decode_check=False).duration_s for p in (intro, outro) if p)
            joins = sum(1 for p in (intro, outro) if p)
            expected_s = cleaned_info.duration_s + jingles_s - joins * config.crossfade_ms / 1000
            stored = store.write_file(out_key, out_path, content_type="audio/mpeg")

        metrics = {
            "final_duration_s": round(measured.duration_s, 3),
            "loudness_lufs": round(measured.lufs_out, 2),
            "loudness_in_lufs": round(report.lufs_in, 2),
            "true_peak_dbtp": round(measured.true_peak_dbtp, 2),
            "target_lufs": target,
            "final_bytes": stored.size,
        }
        cat.record_metrics(episode.episode_id, metrics)
        cat.record_artifacts(episode.episode_id, {"final_episode": store.uri(out_key)})

        loud_ok = abs(measured.lufs_out - target) <= LOUDNESS_TOLERANCE_LU
        peak_ok = measured.true_peak_dbtp <= config.true_peak_dbtp + 1e-6
        duration_off_s = measured.duration_s - expected_s
        checks = [
            step.check(
                LOUDNESS_CHECK,
                passed=loud_ok and peak_ok,
                description=(
                    f"{measured.lufs_out:.2f} LUFS (target {target:.1f} ±{LOUDNESS_TOLERANCE_LU}), "
                    f"true peak {measured.true_peak_dbtp:.2f} dBTP (limit {config.true_peak_dbtp:.1f})"
                ),
                metadata={"lufs": measured.lufs_out, "true_peak_dbtp": measured.true_peak_dbtp},
            ),
            step.check(
                DURATION_CHECK,
                passed=abs(duration_off_s) <= DURATION_TOLERANCE_S,
                description=f"{measured.duration_s:.3f} s, expected {expected_s:.3f} s ({duration_off_s * 1000:+.0f} ms)",
            ),
        ]
        return dg.MaterializeResult(
            metadata={
                "duration_s": dg.MetadataValue.float(metrics["final_duration_s"]),
                "loudness_in_lufs": dg.MetadataValue.float(metrics["loudness_in_lufs"]),
                "loudness_out_lufs": dg.MetadataValue.float(metrics["loudness_lufs"]),
                "true_peak_dbtp": dg.MetadataValue.float(metrics["true_peak_dbtp"]),
                "target_lufs": dg.MetadataValue.float(target),
                "gain_db": dg.MetadataValue.float(round(report.gain_db, 2)),
                "limiter_max_db": dg.MetadataValue.float(round(report.limiter_max_db, 2)),
                "bytes": dg.MetadataValue.int(stored.size),
                "intro": dg.MetadataValue.text(str(config.intro_key or show.intro_key or "none")),
                "outro": dg.MetadataValue.text(str(config.outro_key or show.outro_key or "none")),
                "uri": dg.MetadataValue.url(store.uri(out_key)),
            },
            check_results=checks,
        )
