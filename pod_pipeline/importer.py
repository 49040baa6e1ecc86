"""``pod import DIR|gs://bucket/prefix``: bring a back catalog in, in bulk.

Every file directly in ``DIR`` (or object directly under the ``gs://`` prefix) is copied to
``uploads/<name>`` of the configured store and registered in the catalog exactly as the
upload sensor registers an upload (:meth:`Catalog.register_upload`: the same dedup by
content, new versions under an existing name, hostile names refused one by one); the
partitions of the new episodes are added in batches. No run starts here: the registered
uploads are pending, and the upload sensor (the daemon, or ``pod run``) requests their runs
in registration order, ``max_runs_per_tick`` at a time, through the run queue and pools.

Invariants:

* **Idempotent.** A file whose name and bytes the catalog has recorded is skipped without
  copying (its MD5 is compared, from the listing on GCS, by reading it locally); a second
  import of the same folder changes nothing.
* **Resumable.** Files are handled one at a time, copy then register. A kill between the two
  leaves ``uploads/<name>`` with the same bytes: the next import (or the sensor's next tick)
  registers that object without copying it again. Nothing is registered that was not copied.
* **Bounded.** Memory holds one page of names (:data:`PAGE`) at a time, whatever the size of
  the back catalog.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pod_assets import layout
from pod_resources.catalog import Catalog, RegistrationKind, queries
from pod_resources.storage import ObjectInfo, ObjectStore, store_from_url

PAGE = 500
_HASH_CHUNK = 1 << 20


class ImportSourceError(ValueError):
    """The source is neither a readable directory nor a ``gs://bucket[/prefix]`` URL."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    md5_hex: str
    fetch: Callable[[Path], Path]
    """Puts the file's bytes at a local path (or returns where they already are)."""


@dataclass
class ImportReport:
    files: int = 0
    registered: dict[str, int] = field(default_factory=dict)
    """By registration kind: ``new``, ``new_version``, ``duplicate``, ``restored``, …"""
    already_imported: int = 0
    resumed: int = 0
    """Files found copied but not registered (an import or tick cut short)."""
    failed: list[str] = field(default_factory=list)
    partitions_added: int = 0

    def summary(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.registered.items()))
        return (
            f"import: {self.files} files, registered {sum(self.registered.values())}"
            f"{f' ({kinds})' if kinds else ''}, {self.already_imported} already imported, "
            f"{self.resumed} resumed, {len(self.failed)} failed, "
            f"{self.partitions_added} partitions added; runs follow through the upload sensor "
            "(the daemon, or `pod run`)"
        )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_files(folder: Path) -> Iterator[SourceFile]:
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        yield SourceFile(path.name, _md5_of(path), lambda _scratch, path=path: path)


def _bucket_files(source: ObjectStore) -> Iterator[SourceFile]:
    for info in source.list(""):
        if "/" in info.key:
            continue  # only objects directly under the prefix, as with a folder

        def fetch(scratch: Path, key: str = info.key) -> Path:
            target = scratch / "object"
            source.read_to_path(key, target)
            return target

        yield SourceFile(info.key, info.md5_hex or "", fetch)


def open_source(text: str, *, gcp_project: str | None = None) -> Iterator[SourceFile]:
    """The files of ``DIR`` or ``gs://bucket/prefix``, in name order."""
    if text.startswith("gs://"):
        try:
            return _bucket_files(store_from_url(text, project=gcp_project))
        except ValueError as exc:
            raise ImportSourceError(str(exc)) from None
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise ImportSourceError(f"{text}: not a directory (nor a gs:// URL)")
    return _local_files(folder)


def _land(store: ObjectStore, item: SourceFile, report: ImportReport) -> ObjectInfo:
    """``uploads/<name>`` holding the item's bytes: the one already there, or a new copy."""
    key = layout.upload_key(item.name)
    current = store.stat(key)
    if current is not None and item.md5_hex and current.md5_hex == item.md5_hex:
        report.resumed += 1
        return current
    with tempfile.TemporaryDirectory(prefix="pod-import-") as scratch:
        return store.write_file(key, item.fetch(Path(scratch)))


def import_back_catalog(
    files: Iterator[SourceFile],
    *,
    store: ObjectStore,
    catalog: Catalog,
    add_partitions: Callable[[list[str]], None],
    progress: Callable[[str], None] = lambda _line: None,
    before_register: Callable[[ObjectInfo], None] = lambda _info: None,
) -> ImportReport:
    """Copy and register every file (see the module docstring); the partitions of new
    episodes are added after each page. ``before_register`` is a hook for tests."""
    report = ImportReport()
    while page := list(islice(files, PAGE)):
        known = queries.recorded_contents(catalog, [item.name for item in page])
        new_partitions: list[str] = []
        for item in page:
            report.files += 1
            if (item.name, item.md5_hex) in known:
                report.already_imported += 1
                continue
            try:
                info = _land(store, item, report)
                before_register(info)
                registration = catalog.register_upload(
                    object_name=item.name,
                    generation=info.generation,
                    content_hash=info.md5_hex or item.md5_hex,
                    episode_id=layout.episode_id_for(item.name),
                    title=layout.display_title(item.name),
                )
            except Exception as exc:  # one bad file must not stop the import
                report.failed.append(f"{layout.printable(item.name)}: {type(exc).__name__}: {exc}")
                continue
            kind = registration.kind
            report.registered[str(kind)] = report.registered.get(str(kind), 0) + 1
            if kind in (RegistrationKind.NEW, RegistrationKind.NEW_VERSION):
                new_partitions.append(registration.episode.episode_id)
        if new_partitions:
            add_partitions(new_partitions)
            report.partitions_added += len(new_partitions)
        progress(f"import: {report.files} files handled")
    return report


def add_import_parser(sub) -> None:
    parser = sub.add_parser(
        "import", help="register a back catalog (a folder or gs://bucket/prefix) in bulk"
    )
    parser.add_argument("source", metavar="DIR|gs://BUCKET/PREFIX")
    parser.set_defaults(func=cmd_import)


def cmd_import(args, settings) -> int:
    import sys

    import dagster as dg

    from pod_assets.partitions import episode_partitions
    from pod_pipeline.cli import _guarded_catalog, _prepare_dagster_home, _store

    try:
        files = open_source(args.source, gcp_project=settings.gcp_project)
    except ImportSourceError as exc:
        print(f"pod import: {exc}", file=sys.stderr)
        return 2
    _prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        report = import_back_catalog(
            files,
            store=_store(settings),
            catalog=_guarded_catalog(settings),
            add_partitions=lambda keys: instance.add_dynamic_partitions(
                episode_partitions.name, keys
            ),
            progress=lambda line: print(line, file=sys.stderr),
        )
    for failure in report.failed:
        print(f"pod import: {failure}", file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0
