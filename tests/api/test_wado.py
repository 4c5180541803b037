"""WADO-RS (PS3.18 10.4): instances, transfer syntaxes, metadata and bulk data."""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)
from sqlalchemy import select

from imaging_hub.db.models import StoredFile
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish
from imaging_hub.work import run_job
from tests.api.helpers import run_pending_jobs
from tests.support import make_study, testdata

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MPEG4 = "1.2.840.10008.1.2.4.102"


def split_multipart(response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart response."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    chunks = response.content.split(b"--" + boundary)
    assert chunks[-1].strip() == b"--", "no closing boundary"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert body.endswith(b"\r\n")
        parts.append((headers, body[:-2]))
    return parts


def ingest(hub: Hub, out_dir: Path, count: int = 1, **kwargs) -> list[Path]:
    """Write, store and index instances of one study; return the written files."""
    paths = make_study(out_dir, count, **kwargs)
    for path in paths:
        store_instance(hub, path, source="test")
    run_pending_jobs(hub)
    return paths


def run_jobs_allowing_failures(hub: Hub) -> None:
    """Run every due job once, whatever its outcome."""
    while claimed := claim_for_publish(hub.db):
        for job_id, _queue in claimed:
            run_job(hub, job_id, owner="tests")


def uids(path: Path) -> tuple[str, str, str]:
    """Study, series and SOP instance UIDs of a file."""
    ds = dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def url(path: Path, level: str = "instance") -> str:
    """The WADO-RS URL of a file's study, series or instance."""
    study, series, sop = uids(path)
    if level == "study":
        return f"/dicomweb/studies/{study}"
    if level == "series":
        return f"/dicomweb/studies/{study}/series/{series}"
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def stored_state(hub: Hub) -> list[tuple[str, str, str]]:
    """(path, sha256 in the index, sha256 on disk) of every stored file."""
    with hub.db.read() as s:
        rows = s.execute(select(StoredFile.path, StoredFile.sha256).order_by(StoredFile.id)).all()
    return [
        (r.path, r.sha256, hashlib.sha256(hub.store.local_path(r.path).read_bytes()).hexdigest())
        for r in rows
    ]


def test_study_as_stored_is_byte_identical(hub, client, tmp_path):
    paths = ingest(hub, tmp_path / "ct", 3, series_per_study=2)
    response = client.get(url(paths[0], "study"), headers={"Accept": ANY})
    assert response.status_code == 200, response.text
    assert 'type="application/dicom"' in response.headers["content-type"]
    parts = split_multipart(response)
    assert sorted(body for _, body in parts) == sorted(p.read_bytes() for p in paths)
    assert all(h["content-type"].startswith("application/dicom") for h, _ in parts)


def test_explicit_little_endian_is_served_as_stored_by_default(hub, client, tmp_path):
    paths = ingest(hub, tmp_path / "ct", 2)
    for accept in (None, 'multipart/related; type="application/dicom"', "*/*"):
        headers = {"Accept": accept} if accept else {}
        response = client.get(url(paths[0], "series"), headers=headers)
        assert response.status_code == 200, (accept, response.text)
        assert [body for _, body in split_multipart(response)] == [p.read_bytes() for p in paths]
        syntax = f"transfer-syntax={ExplicitVRLittleEndian}"
        assert all(syntax in h["content-type"] for h, _ in split_multipart(response))


def test_implicit_vr_is_transcoded_to_explicit_little_endian(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "mr", template="MR_small_implicit.dcm")
    before = stored_state(hub)
    response = client.get(
        url(path), headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert response.status_code == 200, response.text
    ((headers, body),) = split_multipart(response)
    assert headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    served, original = dcmread(BytesIO(body)), dcmread(path)
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert original.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert [e.tag for e in served] == [e.tag for e in original]
    assert all(served[e.tag].value == e.value for e in original if e.tag != 0x7FE00010)
    assert np.array_equal(served.pixel_array, original.pixel_array)
    assert stored_state(hub) == before  # the original is untouched
    as_stored = client.get(url(path), headers={"Accept": ANY})
    assert split_multipart(as_stored)[0][1] == path.read_bytes()


def test_implicit_vr_is_served_as_stored_when_asked_for(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "mr", template="MR_small_implicit.dcm")
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={ImplicitVRLittleEndian}'
    )
    response = client.get(url(path), headers={"Accept": accept})
    ((headers, body),) = split_multipart(response)
    assert body == path.read_bytes()
    assert headers["content-type"].endswith(str(ImplicitVRLittleEndian))


def test_jpeg2000_is_decoded_for_explicit_little_endian(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "j2k", template="JPEG2000.dcm")
    assert dcmread(path).file_meta.TransferSyntaxUID == JPEG2000
    response = client.get(url(path))
    assert response.status_code == 200, response.text
    served = dcmread(BytesIO(split_multipart(response)[0][1]))
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert served.SOPInstanceUID == dcmread(path).SOPInstanceUID
    assert np.array_equal(served.pixel_array, dcmread(path).pixel_array)


def test_undecodable_syntax_is_not_acceptable_unless_asked_as_stored(hub, client, tmp_path):
    (path,) = make_study(tmp_path / "mpeg", template="JPEG2000.dcm")
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG4  # no pydicom decoder exists for video
    ds.save_as(path, enforce_file_format=True)
    store_instance(hub, path, source="test")
    run_jobs_allowing_failures(hub)  # jobs that need pixels (previews) may fail on video
    refused = client.get(url(path))
    assert refused.status_code == 406
    assert "transfer-syntax=*" in refused.json()["detail"]
    response = client.get(url(path), headers={"Accept": ANY})
    assert split_multipart(response)[0][1] == path.read_bytes()


@pytest.mark.parametrize(
    "accept",
    [
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless}',
        "image/jpeg",
        'multipart/related; type="application/octet-stream"',
    ],
)
def test_unoffered_representations_are_not_acceptable(hub, client, tmp_path, accept):
    (path,) = ingest(hub, tmp_path / "ct")
    response = client.get(url(path), headers={"Accept": accept})
    assert response.status_code == 406, response.text
    assert response.json()["detail"]


def test_unknown_uids_are_404_and_malformed_uids_400(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    study, series, sop = uids(path)
    for missing in (
        "/dicomweb/studies/1.2.3",
        f"/dicomweb/studies/{study}/series/1.2.3",
        f"/dicomweb/studies/{study}/series/{series}/instances/1.2.3",
        f"/dicomweb/studies/1.2.3/series/{series}/instances/{sop}",
        f"/dicomweb/studies/{study}/metadata/../series/1.2.3/metadata",
    ):
        response = client.get(missing)
        assert response.status_code == 404, (missing, response.text)
    for bad in (
        "/dicomweb/studies/1.2.abc",
        f"/dicomweb/studies/{study}/series/{'1' * 65}",
        f"/dicomweb/studies/{study}/series/{series}/instances/1..2/metadata",
    ):
        response = client.get(bad)
        assert response.status_code == 400, (bad, response.text)
        assert "not a valid UID" in response.json()["detail"]


def with_bulk_data(out_dir: Path) -> Path:
    """A CT instance with a large top-level OB element and one inside a sequence."""
    (path,) = make_study(out_dir)
    ds = dcmread(path)
    ds.add_new(0x00420011, "OB", bytes(range(256)) * 8)  # Encapsulated Document, 2 KiB
    item = Dataset()
    item.add_new(0x00420011, "OB", b"\x07" * 2048)
    ds.ReferencedImageSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return path


def test_metadata_is_dicom_json_with_absolute_bulk_data_uris(hub, client, tmp_path):
    path = with_bulk_data(tmp_path / "bulk")
    store_instance(hub, path, source="test")
    run_pending_jobs(hub)
    for level in ("study", "series", "instance"):
        response = client.get(url(path, level) + "/metadata")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/dicom+json"
        (instance,) = response.json()
        assert instance["00080018"]["Value"] == [uids(path)[2]]
        assert instance["00420011"] == {
            "vr": "OB",
            "BulkDataURI": "http://testserver" + url(path) + "/bulkdata/00420011",
        }
        nested = instance["00081140"]["Value"][0]["00420011"]
        assert nested["BulkDataURI"] == (
            "http://testserver" + url(path) + "/bulkdata/00081140/0/00420011"
        )
        assert instance["00083002"] == {"vr": "UI", "Value": [str(ExplicitVRLittleEndian)]}
        assert instance["7FE00010"] == {
            "vr": "OW",
            "BulkDataURI": "http://testserver" + url(path) + "/bulkdata/7FE00010",
        }
    expected = {
        "http://testserver" + url(path) + "/bulkdata/00420011": bytes(range(256)) * 8,
        nested["BulkDataURI"]: b"\x07" * 2048,
    }
    for uri, value in expected.items():
        bulk = client.get(uri)
        assert bulk.status_code == 200, bulk.text
        assert 'type="application/octet-stream"' in bulk.headers["content-type"]
        ((headers, body),) = split_multipart(bulk)
        assert headers["content-type"] == "application/octet-stream"
        assert body == value
    pixels = client.get(url(path) + "/bulkdata/7FE00010")
    ((headers, body),) = split_multipart(pixels)
    assert (
        headers["content-type"]
        == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    assert body == dcmread(path).PixelData


def test_bulk_data_of_other_tags_is_404(hub, client, tmp_path):
    path = with_bulk_data(tmp_path / "bulk")
    store_instance(hub, path, source="test")
    run_pending_jobs(hub)
    for tag in (
        "00100010",
        "00991000",
        "nothex!!",
        "00081140",
        "00081140/1/00420011",
        "00081140/0",
    ):
        assert client.get(url(path) + f"/bulkdata/{tag}").status_code == 404, tag


def test_metadata_is_offered_as_dicom_json_only(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    assert client.get(url(path) + "/metadata", headers={"Accept": "image/png"}).status_code == 406
    accept = {"Accept": "application/dicom+json"}
    assert client.get(url(path) + "/metadata", headers=accept).status_code == 200


def test_unindexed_instances_are_not_served(hub, client, tmp_path):
    (indexed,) = ingest(hub, tmp_path / "a")
    study = uids(indexed)[0]
    (waiting,) = make_study(tmp_path / "b", study_uid=study)
    store_instance(hub, waiting, source="test")  # received, its index job not run yet
    response = client.get(url(indexed, "study"), headers={"Accept": ANY})
    assert [body for _, body in split_multipart(response)] == [indexed.read_bytes()]
    assert len(client.get(url(indexed, "study") + "/metadata").json()) == 1


# --- frames (PS3.18 10.4.1.1.4) ----------------------------------------------------------------

OCTET = 'multipart/related; type="application/octet-stream"'


def frames_url(path: Path, numbers: str) -> str:
    """The frames resource of a file's instance."""
    return url(path) + f"/frames/{numbers}"


def native_frame(path: Path, index: int) -> bytes:
    """Frame index (0-based) of a file decoded by pydicom, as native little endian bytes."""
    from pydicom.pixels.utils import pixel_array

    frame = pixel_array(path, index=index)
    return frame.astype(frame.dtype.newbyteorder("<")).tobytes()


def test_native_frames_are_octet_stream_slices_of_the_pixel_data(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "dose", template="rtdose.dcm")  # implicit VR, 15 frames
    ds = dcmread(path)
    size = len(ds.PixelData) // 15
    for accept in (None, "*/*", OCTET, f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"):
        response = client.get(frames_url(path, "3,1,15"), headers={"Accept": accept or ""})
        assert response.status_code == 200, (accept, response.text)
        parts = split_multipart(response)
        expected = [ds.PixelData[i * size : (i + 1) * size] for i in (2, 0, 14)]
        assert [body for _, body in parts] == expected, accept
        assert all(
            h["content-type"]
            == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
            for h, _ in parts
        )


def test_big_endian_frames_are_served_little_endian(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "be", template="rtdose_expb.dcm")
    response = client.get(frames_url(path, "2"), headers={"Accept": OCTET})
    assert response.status_code == 200, response.text
    ((_, body),) = split_multipart(response)
    assert body == native_frame(path, 1)


def test_one_frame_may_be_a_single_part(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    response = client.get(frames_url(path, "1"), headers={"Accept": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/octet-stream")
    assert response.content == dcmread(path).PixelData
    many = client.get(frames_url(path, "1,1"), headers={"Accept": "application/octet-stream"})
    assert many.status_code == 406  # a single part holds one frame only


def test_compressed_frames_as_stored_or_decoded(hub, client, tmp_path):
    from pydicom.encaps import generate_frames

    (path,) = ingest(hub, tmp_path / "rle", template="SC_rgb_rle_2frame.dcm")
    ds = dcmread(path)
    stored = list(generate_frames(ds.PixelData, number_of_frames=2))
    as_stored = client.get(
        frames_url(path, "2,1"), headers={"Accept": f"{OCTET}; transfer-syntax=*"}
    )
    parts = split_multipart(as_stored)
    assert [body for _, body in parts] == [stored[1], stored[0]]
    assert parts[0][0]["content-type"] == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    by_type = client.get(
        frames_url(path, "1"), headers={"Accept": 'multipart/related; type="image/dicom-rle"'}
    )
    assert [body for _, body in split_multipart(by_type)] == [stored[0]]
    decoded = client.get(frames_url(path, "2"), headers={"Accept": OCTET})
    ((headers, body),) = split_multipart(decoded)
    assert headers["content-type"].startswith("application/octet-stream")
    assert body == native_frame(path, 1)
    default = client.get(frames_url(path, "1"))  # lossless: */* means native
    assert [b for _, b in split_multipart(default)] == [native_frame(path, 0)]
    refused = client.get(
        frames_url(path, "1"), headers={"Accept": 'multipart/related; type="image/jpeg"'}
    )
    assert refused.status_code == 406


def test_lossy_frames_are_served_as_stored_by_default(hub, client, tmp_path):
    from pydicom.encaps import get_frame

    (path,) = ingest(hub, tmp_path / "ybr", template="examples_ybr_color.dcm")  # 30 JPEG frames
    ds = dcmread(path)
    response = client.get(frames_url(path, "30"), headers={"Accept": "*/*"})
    ((headers, body),) = split_multipart(response)
    assert headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert body == get_frame(ds.PixelData, 29, number_of_frames=30)
    single = client.get(frames_url(path, "7"), headers={"Accept": "image/jpeg"})
    assert single.headers["content-type"].startswith("image/jpeg")
    assert single.content == get_frame(ds.PixelData, 6, number_of_frames=30)
    native = client.get(frames_url(path, "1"), headers={"Accept": OCTET})
    ((_, body),) = split_multipart(native)
    assert len(body) == ds.Rows * ds.Columns * 3


def test_jpeg_ls_lossless_frames(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "jls", template="MR_small_jpeg_ls_lossless.dcm")
    ((headers, body),) = split_multipart(client.get(frames_url(path, "1")))
    assert headers["content-type"].startswith("application/octet-stream")
    assert body == dcmread(testdata("MR_small.dcm")).PixelData  # the same lossless image
    jls = client.get(
        frames_url(path, "1"), headers={"Accept": 'multipart/related; type="image/x-jls"'}
    )
    ((headers, _),) = split_multipart(jls)
    assert headers["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"


@pytest.mark.parametrize(("frames", "status"), [("0", 400), ("1,x", 400), ("-1", 400), ("2", 404)])
def test_bad_frame_numbers(hub, client, tmp_path, frames, status):
    (path,) = ingest(hub, tmp_path / "ct")
    response = client.get(frames_url(path, frames))
    assert response.status_code == status, response.text
    assert "frame" in response.json()["detail"]


def test_frames_of_an_instance_without_pixel_data_are_404(hub, client, tmp_path):
    (path,) = make_study(tmp_path / "sr")
    ds = dcmread(path)
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    store_instance(hub, path, source="test")
    run_pending_jobs(hub)
    assert client.get(frames_url(path, "1")).status_code == 404
    (item,) = client.get(url(path) + "/metadata").json()
    assert "7FE00010" not in item


def test_stream_files_batches_small_files_and_chunks_large_ones(tmp_path):
    import anyio

    from viewer_api.multipart import files_length, stream_files

    sizes = [10, 3000, 5, 9000, 0, 4096]
    files = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(bytes([i + 1]) * size)
        files.append((f"application/dicom; n={i}", path, size))

    async def collect() -> list[bytes]:
        return [chunk async for chunk in stream_files(files, "B", chunk=4096)]

    chunks = anyio.run(collect)
    assert max(len(c) for c in chunks) <= 4096 + 200  # bounded by the chunk (plus part heads)
    expected = (
        b"".join(
            f"--B\r\nContent-Type: {kind}\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
            for kind, path, _ in files
        )
        + b"--B--\r\n"
    )
    assert b"".join(chunks) == expected
    assert files_length([(kind, size) for kind, _, size in files], "B") == len(expected)


def test_as_stored_answers_carry_a_content_length(hub, client, tmp_path):
    paths = ingest(hub, tmp_path / "ct", 3)
    response = client.get(url(paths[0], "study"), headers={"Accept": ANY})
    assert int(response.headers["content-length"]) == len(response.content)
    assert sorted(b for _, b in split_multipart(response)) == sorted(p.read_bytes() for p in paths)
