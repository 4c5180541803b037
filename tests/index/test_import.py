"""`imaging-hub import`: folders, DICOMDIR media and zip files through the common ingest path."""

import shutil
import zipfile
from pathlib import Path

import pydicom.data
from click.testing import CliRunner
from sqlalchemy import func, select

from imaging_hub.cli import main
from imaging_hub.db.models import StoredFile
from imaging_hub.hub import Hub
from imaging_hub.importer import collect, import_items
from tests.support import make_instances, testdata

DICOMDIR_MEDIA = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"


def _stored(hub: Hub) -> int:
    with hub.db.read() as s:
        return s.execute(select(func.count(StoredFile.id))).scalar_one()


def _media(tmp_path: Path) -> Path:
    """A copy of pydicom's sample CD: a DICOMDIR and the folders it references."""
    media = tmp_path / "cd"
    shutil.copytree(DICOMDIR_MEDIA, media, ignore=shutil.ignore_patterns("DICOMDIR-*"))
    (media / "README.TXT").write_text("Viewer on this CD: run viewer.exe")
    return media


def test_dicomdir_media_imports_what_it_references(hub: Hub, tmp_path: Path) -> None:
    media = _media(tmp_path)
    items = collect([media])
    referenced = len(pydicom.fileset.FileSet(media / "DICOMDIR"))
    assert len(items) == referenced > 0
    summary = import_items(hub, items)
    assert (summary.stored, summary.rejected) == (referenced, [])
    assert _stored(hub) == referenced
    again = import_items(hub, collect([media / "DICOMDIR"]))
    assert (again.stored, again.duplicates) == (0, referenced)


def test_zip_with_non_dicom_members(hub: Hub, tmp_path: Path) -> None:
    files = make_instances(tmp_path / "src", 3)
    archive = tmp_path / "outside.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, f in enumerate(files):
            zf.write(f, f"IMAGES/IM{i}")
        zf.writestr("README.TXT", "not an image")
        zf.writestr("IMAGES/", "")
    summary = import_items(hub, collect([archive]))
    assert (summary.stored, summary.skipped, summary.rejected) == (3, 1, [])
    assert _stored(hub) == 3


def test_cli_reports_and_fails_on_rejected_files(hub: Hub, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(testdata("CT_small.dcm"), folder / "good.dcm")
    broken = bytearray(testdata("CT_small.dcm").read_bytes())
    (folder / "broken.dcm").write_bytes(bytes(broken[:132]) + b"\x00garbage")
    settings = hub.settings
    monkeypatch.setenv("HUB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("HUB_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("HUB_STORAGE_MIN_FREE_BYTES", "0")
    result = CliRunner().invoke(main, ["import", str(folder)])
    assert result.exit_code == 1
    assert "1 stored, 0 already present, 0 not DICOM, 1 rejected" in result.output
    assert "broken.dcm" in result.output
    assert _stored(hub) == 1
