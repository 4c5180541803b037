"""The receiver with real peers: dcmtk's echoscu/storescu and a pynetdicom SCU."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage
from sqlalchemy import func, select

from dicom_scp.server import release_spool, spool_dir, start
from imaging_hub.config import DicomNode, Settings, UnknownAetPolicy
from imaging_hub.db.migrate import upgrade
from imaging_hub.db.models import Job, StoredFile
from imaging_hub.hub import Hub
from tests.scp.helpers import receiver_settings, receiving
from tests.support import dataset_bytes, storescu, testdata

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def scp_settings(tmp_path: Path) -> Settings:
    return receiver_settings(tmp_path, dicom_nodes=[DicomNode(aet="KNOWN_MR", host="127.0.0.1")])


@pytest.fixture
def running(scp_settings: Settings) -> Iterator[Hub]:
    """A receiver listening on 127.0.0.1 for one test."""
    with receiving(scp_settings) as hub:
        yield hub


def _stored(hub: Hub) -> list[StoredFile]:
    with hub.db.read() as s:
        return list(s.execute(select(StoredFile).order_by(StoredFile.id)).scalars())


def _jobs(hub: Hub) -> int:
    with hub.db.read() as s:
        return s.execute(select(func.count(Job.id))).scalar_one()


def test_echo(running: Hub) -> None:
    port = running.settings.dicom_port
    result = subprocess.run(
        ["echoscu", "-aec", "IMAGING_HUB", "127.0.0.1", str(port)], capture_output=True
    )
    assert result.returncode == 0, result.stderr


def test_store_is_durable_and_byte_exact(running: Hub) -> None:
    src = testdata("CT_small.dcm")
    storescu(running.settings.dicom_port, src)
    (row,) = _stored(running)
    assert _jobs(running) == 1  # the index job was committed with the file row
    kept = dcmread(running.store.local_path(row.path))
    original = dcmread(src)
    assert kept.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    # storescu drops the trailing padding item (FFFC,FFFC); every other element arrives.
    assert list(kept.keys()) == [e.tag for e in original if e.tag != 0xFFFCFFFC]
    assert kept.PixelData == original.PixelData


SYNTAX_SAMPLES = [
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "SC_rgb_rle.dcm",  # RLE
    "JPEG-lossy.dcm",  # JPEG extended
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "image_dfl.dcm",  # deflated explicit VR little endian
]
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"


@pytest.fixture
def raw_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the pynetdicom SCU send files' bytes as they are, without re-encoding."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def _send_file(port: int, path: Path) -> int:
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


@pytest.mark.parametrize("name", SYNTAX_SAMPLES)
def test_every_syntax_is_stored_exactly_as_sent(running: Hub, raw_send: None, name: str) -> None:
    """Each file is sent in its own transfer syntax and kept byte for byte (no transcoding)."""
    src = testdata(name)
    assert _send_file(running.settings.dicom_port, src) == 0x0000
    (row,) = _stored(running)
    assert row.transfer_syntax_uid == dcmread(src).file_meta.TransferSyntaxUID
    assert dataset_bytes(running.store.local_path(row.path)) == dataset_bytes(src)


def test_htj2k_is_accepted(running: Hub, raw_send: None, tmp_path: Path) -> None:
    ds = dcmread(testdata("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = HTJ2K_LOSSLESS  # stored as received, never decoded here
    path = tmp_path / "htj2k.dcm"
    ds.save_as(path)
    assert _send_file(running.settings.dicom_port, path) == 0x0000
    (row,) = _stored(running)
    assert row.transfer_syntax_uid == HTJ2K_LOSSLESS


def test_the_senders_first_syntax_is_accepted(running: Hub, raw_send: None) -> None:
    """A sender listing its compressed syntax first sends its file as it is, kept so."""
    src = testdata("MR_small_jp2klossless.dcm")
    meta = dcmread(src, stop_before_pixels=True).file_meta
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(
        meta.MediaStorageSOPClassUID,
        [meta.TransferSyntaxUID, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    )
    assoc = ae.associate("127.0.0.1", running.settings.dicom_port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    try:
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [meta.TransferSyntaxUID]
        assert assoc.send_c_store(src).Status == 0x0000
    finally:
        assoc.release()
    (row,) = _stored(running)
    assert row.transfer_syntax_uid == meta.TransferSyntaxUID
    assert dataset_bytes(running.store.local_path(row.path)) == dataset_bytes(src)


def test_the_senders_order_spans_its_contexts_for_one_sop_class(running: Hub) -> None:
    """Proposed in two contexts, a SOP class's syntaxes follow the sender's order over both."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, [JPEG2000Lossless])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(MRImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", running.settings.dicom_port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    try:
        accepted = [(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts]
    finally:
        assoc.release()
    assert accepted == [
        (CTImageStorage, JPEG2000Lossless),
        (CTImageStorage, ExplicitVRLittleEndian),
        (MRImageStorage, ImplicitVRLittleEndian),
    ]


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ("-xr", "SC_rgb_rle.dcm"),
        ("-xs", "SC_rgb_jpeg_gdcm.dcm"),
        ("-xy", "SC_rgb_jpeg_dcmtk.dcm"),
        ("-xv", "MR_small_jp2klossless.dcm"),
        ("-xt", "MR_small_jpeg_ls_lossless.dcm"),
    ],
)
def test_storescu_sends_compressed_files_as_they_are(running: Hub, option: str, name: str) -> None:
    src = testdata(name)
    storescu(running.settings.dicom_port, src, extra=[option])
    (row,) = _stored(running)
    assert row.transfer_syntax_uid == dcmread(src).file_meta.TransferSyntaxUID
    assert dcmread(running.store.local_path(row.path)).PixelData == dcmread(src).PixelData


def _scu_send(port: int, ds, aet: str = "PYNETDICOM") -> list[int]:
    """Send datasets on one association with pynetdicom; return the statuses."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(item).Status) for item in ds]
    finally:
        assoc.release()


def test_invalid_uid_fails_and_the_association_goes_on(running: Hub) -> None:
    bad = dcmread(testdata("CT_small.dcm"))
    bad.SOPInstanceUID = "1.2.evil/../x"
    good = dcmread(testdata("CT_small.dcm"))
    statuses = _scu_send(running.settings.dicom_port, [bad, good])
    assert statuses[0] == 0xC000
    assert statuses[1] == 0x0000
    assert len(_stored(running)) == 1
    assert any(running.settings.quarantine_dir.glob("*.json"))


def test_wrong_called_aet_is_rejected(running: Hub) -> None:
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", running.settings.dicom_port, ae_title="SOMEONE_ELSE")
    assert assoc.is_rejected


def test_refuse_policy_admits_known_nodes_only(scp_settings: Settings) -> None:
    scp_settings.dicom_unknown_aets = UnknownAetPolicy.REFUSE
    upgrade(scp_settings.resolved_database_url)
    hub = Hub.open(scp_settings)
    saved = tempfile.tempdir
    server = start(hub, block=False)
    try:
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", scp_settings.dicom_port, ae_title="IMAGING_HUB")
        assert assoc.is_rejected
        storescu(scp_settings.dicom_port, testdata("CT_small.dcm"), aet="KNOWN_MR")
        assert len(_stored(hub)) == 1
    finally:
        server.shutdown()
        tempfile.tempdir = saved
        hub.close()


def test_stale_spool_of_a_dead_receiver_is_removed_at_start(scp_settings: Settings) -> None:
    """A crashed receiver's spool folder goes; a live one's (or another host's) stays."""
    incoming = scp_settings.data_dir / "incoming"
    host = socket.gethostname()
    stale = incoming / f"{host}-999999"  # above the default pid_max: no such process
    live = incoming / f"{host}-{os.getppid()}"
    elsewhere = incoming / "other-host-999999"
    for folder in (stale, live, elsewhere):
        folder.mkdir(parents=True)
        (folder / "tmp1234.dcm").write_bytes(b"half a dataset")
    upgrade(scp_settings.resolved_database_url)
    hub = Hub.open(scp_settings)
    saved = tempfile.tempdir
    server = start(hub, block=False)
    try:
        assert not stale.exists()
        assert (live / "tmp1234.dcm").exists() and (elsewhere / "tmp1234.dcm").exists()
        own = spool_dir(scp_settings)
        assert own.is_dir() and own.name == f"{host}-{os.getpid()}"
        storescu(scp_settings.dicom_port, testdata("CT_small.dcm"))
        assert len(_stored(hub)) == 1
        assert list(own.iterdir()) == []  # the received dataset's spool file was removed
    finally:
        server.shutdown()
        tempfile.tempdir = saved
        release_spool(scp_settings)
        hub.close()
    assert not own.exists()
