"""Studies as a streamed ZIP download: the stored originals, byte for byte, in a few layouts.

The archive is produced while it is sent (zipstream-ng, stored without compression, ZIP64
when needed): each file is read from storage in chunks as its turn comes, so memory stays flat
whatever the study's size, and the total size is known before the first byte (an exact
``Content-Length``). Layouts:

- ``files``: ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``;
- ``dicomdir``: PS3.10 media, a DICOMDIR (built by :mod:`imaging_hub.dicom.dicomdir` from the
  headers only) and the files under their File IDs (``PT000000/ST000000/SE000000/IM000000``);
- ``pdi``: the same, plus a README.TXT, as IHE PDI (ITI TF-1 15) media content asks.

A directory record's type 1 keys that a file lacks (often Instance Number, Series Number,
Study ID) are filled in the record only; an instance that a DICOMDIR still cannot list is added
under ``OTHER/`` in the media layouts. Identity corrections kept in the index are not applied
to the files (the ZIP carries the originals as received).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog
from pydicom import Dataset, dcmread
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from zipstream import ZIP_STORED, ZipStream

from imaging_hub.db.models import Instance, Series, StoredFile, Study
from imaging_hub.dicom.dicomdir import DicomDir
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import NotFound, TooLarge
from imaging_hub.hub import Hub

__all__ = ["Export", "ExportFile", "Layout", "export_files", "export_zip"]

log = structlog.get_logger(__name__)

#: Bytes handed to the web server at a time: each piece is one thread hop in the edge.
CHUNK = 1 << 20
#: At most this many instances in one download.
MAX_INSTANCES = 100_000
_README = """Imaging Hub export ({count} instances, {studies} studies)

The DICOMDIR file lists every DICOM file on this medium (PS3.10); open it with any DICOM
viewer. The files are the originals as the hub received them.
"""


class Layout(StrEnum):
    """How files are laid out in a download."""

    FILES = "files"
    DICOMDIR = "dicomdir"
    PDI = "pdi"


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One stored original that goes into a download."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class Export:
    """A download ready to stream: its chunks, exact size and what it holds."""

    chunks: Iterable[bytes]
    size: int
    study_uids: tuple[str, ...]
    count: int


def export_files(
    hub: Hub,
    session: Session,
    study_uids: Iterable[str],
    *,
    series_uids: Iterable[str] = (),
) -> list[ExportFile]:
    """The current stored file of every instance of the studies: of the given series only for
    a study that some of them belong to, of the whole study otherwise.

    NotFound names a study the index does not hold or a series that is not in one of the
    studies; TooLarge beyond ``MAX_INSTANCES`` instances.
    """
    studies = list(dict.fromkeys(validate_uid(u, what="StudyInstanceUID") for u in study_uids))
    series = list(dict.fromkeys(validate_uid(u, what="SeriesInstanceUID") for u in series_uids))
    if not studies:
        raise ValueError("a download needs at least one study")
    found_series = session.execute(
        select(Series.series_uid, Study.study_uid)
        .join(Study, Study.id == Series.study_pk)
        .where(Series.series_uid.in_(series), Study.study_uid.in_(studies))
    )
    parents = {series_uid: study_uid for series_uid, study_uid in found_series}
    if missing_series := [u for u in series if u not in parents]:
        raise NotFound(f"series {missing_series[0]} is not in the selected studies")
    whole = [u for u in studies if u not in set(parents.values())]
    query = (
        select(
            Study.study_uid,
            Series.series_uid,
            Instance.sop_instance_uid,
            StoredFile.path,
            StoredFile.size,
        )
        .join(Series, Series.study_pk == Study.id)
        .join(Instance, Instance.series_pk == Series.id)
        .join(StoredFile, StoredFile.id == Instance.stored_file_id)
        .where(Study.study_uid.in_(studies))
    )
    if series:
        query = query.where(or_(Series.series_uid.in_(series), Study.study_uid.in_(whole)))
    query = query.order_by(
        Study.sort_key.desc(),
        Study.id,
        Series.series_number.asc().nulls_last(),
        Series.id,
        Instance.instance_number.asc().nulls_last(),
        Instance.id,
    ).limit(MAX_INSTANCES + 1)
    rows = [
        ExportFile(study, se, sop, hub.store.local_path(key), size)
        for study, se, sop, key, size in session.execute(query)
    ]
    if len(rows) > MAX_INSTANCES:
        raise TooLarge(f"a download holds at most {MAX_INSTANCES} instances")
    found = {r.study_uid for r in rows}
    if missing := [u for u in studies if u not in found]:
        raise NotFound(f"study {missing[0]} is not in the hub")
    return rows


def _fill_record_keys(header: Dataset, numbers: tuple[int, int, int]) -> None:
    """Give a header the type 1 keys of the DICOMDIR records (PS3.3 F.5) that it lacks.

    Only the directory records get these values, never the file: a missing or empty Study ID,
    Series Number or Instance Number becomes the item's position on the medium, a missing
    Study Date or Time an unknown one (``19000101``, ``000000``), a missing Patient ID
    ``UNKNOWN``.
    """
    study_no, series_no, instance_no = numbers
    fallbacks = {
        "PatientID": "UNKNOWN",
        "StudyDate": "19000101",
        "StudyTime": "000000",
        "StudyID": str(study_no),
        "SeriesNumber": series_no,
        "InstanceNumber": instance_no,
    }
    for keyword, value in fallbacks.items():
        if keyword not in header or header[keyword].is_empty:
            setattr(header, keyword, value)


def _positions(files: list[ExportFile]) -> list[tuple[int, int, int]]:
    """Each file's (study, series, instance) position, counted from 1 in the download's order."""
    studies: dict[str, int] = {}
    series: dict[str, int] = {}
    per_study: dict[str, int] = {}
    per_series: dict[str, int] = {}
    found = []
    for f in files:
        study_no = studies.setdefault(f.study_uid, len(studies) + 1)
        if f.series_uid not in series:
            per_study[f.study_uid] = per_study.get(f.study_uid, 0) + 1
            series[f.series_uid] = per_study[f.study_uid]
        per_series[f.series_uid] = per_series.get(f.series_uid, 0) + 1
        found.append((study_no, series[f.series_uid], per_series[f.series_uid]))
    return found


def _dicomdir(files: list[ExportFile]) -> tuple[bytes, dict[str, str]]:
    """A DICOMDIR for files (from their headers) and each listed SOP Instance UID's File ID."""
    media = DicomDir()
    ids: dict[str, str] = {}
    for f, numbers in zip(files, _positions(files), strict=True):
        header = dcmread(f.path, stop_before_pixels=True)
        try:
            try:
                ids[f.sop_instance_uid] = media.add(header)
            except ValueError:  # a record key is missing or empty: fill it, try again
                _fill_record_keys(header, numbers)
                ids[f.sop_instance_uid] = media.add(header)
        except (ValueError, KeyError, AttributeError) as exc:
            log.info("dicomdir_skipped", sop_instance_uid=f.sop_instance_uid, error=str(exc))
    return media.encode(), ids


def _arcname(f: ExportFile, layout: Layout, ids: dict[str, str]) -> str:
    if layout == Layout.FILES:
        return f"{f.study_uid}/{f.series_uid}/{f.sop_instance_uid}.dcm"
    return ids.get(f.sop_instance_uid) or f"OTHER/{f.sop_instance_uid}.dcm"


def export_zip(files: list[ExportFile], *, layout: Layout = Layout.FILES) -> Export:
    """A ZIP of files in layout, to be streamed; files are added as stored, uncompressed."""
    archive = ZipStream(compress_type=ZIP_STORED, sized=True)
    ids: dict[str, str] = {}
    studies = tuple(dict.fromkeys(f.study_uid for f in files))
    if layout != Layout.FILES:
        dicomdir, ids = _dicomdir(files)
        archive.add(dicomdir, "DICOMDIR")
        if layout == Layout.PDI:
            readme = _README.format(count=len(files), studies=len(studies))
            archive.add(readme.replace("\n", "\r\n").encode("ascii"), "README.TXT")
    for f in files:
        archive.add_path(str(f.path), _arcname(f, layout, ids))
    size = len(archive)
    return Export(chunks=_chunks(archive), size=size, study_uids=studies, count=len(files))


def _chunks(archive: ZipStream) -> Iterator[bytes]:
    """The archive in pieces of about CHUNK bytes (zipstream yields 64 KiB at a time)."""
    pending = bytearray()
    for piece in archive:
        pending += piece
        if len(pending) >= CHUNK:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)
