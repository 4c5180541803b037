"""Import of outside media: folders, DICOMDIR media (CDs, USB) and zip files, through ingest."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.fileset import FileSet

from imaging_hub.errors import HubError, StorageFull
from imaging_hub.hub import Hub
from imaging_hub.ingest import IngestStatus, store_instance

__all__ = ["ImportItem", "ImportSummary", "collect", "import_items"]


@dataclass(frozen=True, slots=True)
class ImportItem:
    """One candidate file: on disk, or a member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        """Where the file came from, for reports."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)


@dataclass
class ImportSummary:
    """What an import did."""

    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Every file looked at."""
        return self.stored + self.duplicates + self.skipped + len(self.rejected)


def _is_part10(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def _from_dicomdir(path: Path) -> list[ImportItem]:
    """The instances a DICOMDIR references (PS3.10 8.6), in its own order."""
    fileset = FileSet(path)
    return [ImportItem(Path(instance.path)) for instance in fileset]


def _from_zip(path: Path) -> list[ImportItem]:
    with zipfile.ZipFile(path) as archive:
        return [
            ImportItem(path, info.filename)
            for info in archive.infolist()
            if not info.is_dir() and Path(info.filename).name.upper() != "DICOMDIR"
        ]


def collect(paths: list[Path]) -> list[ImportItem]:
    """List the candidate files under the given folders, DICOMDIR files and zip files."""
    items: list[ImportItem] = []
    for root in paths:
        if root.is_dir():
            dicomdir = next((p for p in root.iterdir() if _is_dicomdir(p)), None)
            if dicomdir is not None:
                items += _from_dicomdir(dicomdir)
                continue
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                if not _is_dicomdir(path):  # a nested DICOMDIR only indexes files found anyway
                    items += collect([path])
        elif _is_dicomdir(root):
            items += _from_dicomdir(root)
        elif zipfile.is_zipfile(root):
            items += _from_zip(root)
        elif root.is_file():
            items.append(ImportItem(root))
        else:
            raise FileNotFoundError(f"{root} does not exist")
    return items


@contextmanager
def _local_copy(item: ImportItem, workdir: Path) -> Iterator[Path]:
    """A path on disk for the item (zip members are extracted one at a time)."""
    if item.member is None:
        yield item.path
        return
    target = workdir / "member.dcm"
    with (
        zipfile.ZipFile(item.path) as archive,
        archive.open(item.member) as src,
        target.open("wb") as out,
    ):
        shutil.copyfileobj(src, out, 1024 * 1024)
    try:
        yield target
    finally:
        target.unlink(missing_ok=True)


def _import_one(hub: Hub, item: ImportItem, path: Path, summary: ImportSummary) -> None:
    with path.open("rb") as fh:
        head = fh.read(132)
    if not _is_part10(head):
        summary.skipped += 1  # README, autorun and viewer files on a CD are not DICOM
        return
    try:
        result = store_instance(hub, path, source="import", source_detail=item.label[-256:])
    except StorageFull:
        raise  # nothing more can be stored: stop the import
    except HubError as exc:
        summary.rejected.append((item.label, str(exc)))
        return
    if result.status in (IngestStatus.DUPLICATE, IngestStatus.KEPT_FIRST):
        summary.duplicates += 1
    else:
        summary.stored += 1


def import_items(
    hub: Hub, items: list[ImportItem], *, progress: Callable[[ImportItem], None] | None = None
) -> ImportSummary:
    """Store every DICOM file of items through the common ingest path; report the outcome."""
    summary = ImportSummary()
    with tempfile.TemporaryDirectory(dir=hub.settings.data_dir) as tmp:
        for item in items:
            with _local_copy(item, Path(tmp)) as path:
                _import_one(hub, item, path, summary)
            if progress is not None:
                progress(item)
    return summary
