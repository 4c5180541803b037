"""The DICOMDIR writer: the records and File IDs pydicom's FileSet makes, in linear cost."""

from __future__ import annotations

import copy
import io
import subprocess
import tracemalloc
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from imaging_hub.dicom.dicomdir import DicomDir
from tests.support import testdata

#: Bundled pydicom files with File Meta: CT, MR, US, secondary capture, segmentation.
MIXED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "examples_ybr_color.dcm",
    "SC_rgb_rle.dcm",
    "JPEG2000.dcm",
    "examples_palette.dcm",
    "liver_1frame.dcm",
]
OFFSETS = ("OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity")


def _records(dicomdir: Dataset) -> list[Dataset]:
    """The directory records without their offsets (which depend on the encoding)."""
    found = []
    for record in dicomdir.DirectoryRecordSequence:
        record = copy.deepcopy(record)
        for keyword in OFFSETS:
            del record[keyword]
        found.append(record)
    return found


def _walk(dicomdir: Dataset) -> list[Dataset]:
    """The records reached by following the offsets from the root (PS3.3 F.3.2.1), in order."""
    at = {record.seq_item_tell: record for record in dicomdir.DirectoryRecordSequence}
    found: list[Dataset] = []

    def level(offset: int) -> None:
        while offset:
            record = at[offset]  # a KeyError: an offset that is not a record's item tag
            found.append(record)
            level(record.OffsetOfReferencedLowerLevelDirectoryEntity)
            offset = record.OffsetOfTheNextDirectoryRecord

    level(dicomdir.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity)
    last = at[dicomdir.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity]
    assert last.OffsetOfTheNextDirectoryRecord == 0 and last.DirectoryRecordType == "PATIENT"
    return found


def test_records_and_file_ids_match_pydicoms_file_set(tmp_path: Path) -> None:
    headers = [dcmread(testdata(name), stop_before_pixels=True) for name in MIXED]
    media, reference = DicomDir(), FileSet()
    ids = {str(h.SOPInstanceUID): media.add(h) for h in headers}
    for header in headers:
        reference.add(header)
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "DICOMDIR").write_bytes(media.encode())
    reference.write(tmp_path / "pydicom")
    for name, uid in zip(MIXED, ids, strict=True):  # the files where the records say
        target = tmp_path / "ours" / ids[uid]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(testdata(name).read_bytes())

    ours = dcmread(tmp_path / "ours" / "DICOMDIR")
    theirs = dcmread(tmp_path / "pydicom" / "DICOMDIR")
    assert len(ours.DirectoryRecordSequence) == len(theirs.DirectoryRecordSequence) > len(MIXED)
    assert _records(ours) == _records(theirs)
    assert _walk(ours) == list(ours.DirectoryRecordSequence)
    loaded = FileSet(ours)  # pydicom follows the offsets from the root to every file
    found = {str(i.SOPInstanceUID): "/".join(i.ReferencedFileID) for i in loaded}
    assert found == ids
    for name, uid in zip(MIXED, ids, strict=True):
        assert dcmread(tmp_path / "ours" / found[uid]).SOPInstanceUID == uid, name
    dump = subprocess.run(
        ["dcmdump", "-q", "-E", str(tmp_path / "ours" / "DICOMDIR")],
        capture_output=True,
        text=True,
    )
    assert dump.returncode == 0 and dump.stderr == "", dump.stderr
    assert dump.stdout.count("(0004,1430)") == len(ours.DirectoryRecordSequence)


def test_an_instance_added_twice_is_listed_once() -> None:
    header = dcmread(testdata("CT_small.dcm"), stop_before_pixels=True)
    media = DicomDir()
    assert media.add(header) == media.add(header) == "PT000000/ST000000/SE000000/IM000000"
    assert len(dcmread(io.BytesIO(media.encode())).DirectoryRecordSequence) == 4


def test_a_missing_record_key_raises_and_lists_nothing() -> None:
    header = dcmread(testdata("CT_small.dcm"), stop_before_pixels=True)
    del header.StudyID
    media = DicomDir()
    try:
        media.add(header)
    except ValueError as exc:
        assert "Study ID" in str(exc)
    else:
        raise AssertionError("a record without its Study ID was listed")
    assert dcmread(io.BytesIO(media.encode())).DirectoryRecordSequence == []


def test_many_instances_cost_little_memory() -> None:
    """pydicom's FileSet keeps about 17 KB per instance; here about 1 KB, the encoded records."""
    header = dcmread(testdata("CT_small.dcm"), stop_before_pixels=True)
    header.StudyInstanceUID = generate_uid()
    series = [generate_uid() for _ in range(4)]
    media = DicomDir()
    tracemalloc.start()
    try:
        for i in range(500):
            header.SeriesInstanceUID = series[i % 4]
            header.SOPInstanceUID = generate_uid()
            header.InstanceNumber = i + 1
            media.add(header)
        data = media.encode()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(dcmread(io.BytesIO(data)).DirectoryRecordSequence) == 500 + 4 + 2
    assert peak < 500 * 4000, peak
