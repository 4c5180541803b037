"""QIDO-RS study search latency: the hub (embedded SQLite) vs Orthanc + its DICOMweb plugin.

Generates N studies deterministically (one small instance per series, realistic varied
demographics: about 2.5 studies per patient, common surnames, accents, a spine clinic's
modality mix over 20 years), loads them into the hub's index through the core (``index_keys``,
no files: QIDO never reads them) and, for sizes up to ``--orthanc-max``, into Orthanc with one
``storescu`` association. Then times each query of the issue ``--repeat`` times against both
over HTTP with keep-alive and prints median and p95 in ms and the hub's speed-up.

    .venv/bin/python bench/qido.py --studies 10000 --studies 100000 --orthanc-max 100000 \
        --repeat 20 --orthanc-repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.servers import Server, hub_api, orthanc, storescu_dir
from imaging_hub.config import Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.db.models import StoredFile
from imaging_hub.dicom.keys import extract_keys
from imaging_hub.hub import Hub
from imaging_hub.index import index_keys

SURNAMES = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "MÜLLER",
    "SCHMIDT",
    "SCHNEIDER",
    "FISCHER",
    "WEBER",
    "MEYER",
    "WAGNER",
    "BECKER",
    "SCHULZ",
    "HOFFMANN",
    "DUBOIS",
    "LEFÈVRE",
    "GARCÍA",
    "NÚÑEZ",
    "PEÑA",
    "O'BRIEN",
    "MURPHY",
    "KELLY",
    "SULLIVAN",
    "DOE",
    "DOERING",
    "DOEHLER",
    "DOEBLER",
    "ROSSI",
    "RUSSO",
    "FERRARI",
    "ESPOSITO",
    "BIANCHI",
    "KOWALSKI",
    "NOWAK",
    "WIŚNIEWSKI",
    "COHEN",
    "LEVY",
    "KIM",
    "PARK",
    "CHOI",
    "TANAKA",
    "SUZUKI",
    "WATANABE",
    "PATEL",
    "SHAH",
]
GIVEN_M = [
    "JAMES",
    "JOHN",
    "ROBERT",
    "MICHAEL",
    "WILLIAM",
    "DAVID",
    "RICHARD",
    "JOSEPH",
    "THOMAS",
    "JOSÉ",
    "JÜRGEN",
    "LUCA",
]
GIVEN_F = [
    "MARY",
    "PATRICIA",
    "JENNIFER",
    "LINDA",
    "ELIZABETH",
    "BARBARA",
    "SUSAN",
    "JESSICA",
    "SARAH",
    "JANE",
    "ZOË",
    "INÉS",
]
MODALITIES = [  # (modalities of the study, weight, descriptions)
    (("MR",), 40, ["MRI LUMBAR SPINE W/O", "MRI CERVICAL SPINE", "MRI THORACIC SPINE", "MRI SI"]),
    (("DX",), 18, ["XR LUMBAR FLEX/EXT", "XR CERVICAL 3 VIEWS", "XR SCOLIOSIS STANDING"]),
    (("CR",), 8, ["XR LUMBOSACRAL", "XR PELVIS AP"]),
    (("CT",), 14, ["CT LUMBAR SPINE W/O", "CT CERVICAL SPINE", "CT MYELOGRAM"]),
    (("CT", "MR"), 4, ["CT + MRI SPINE WORKUP"]),
    (("US",), 5, ["US MSK SHOULDER", "US GUIDED INJECTION"]),
    (("XA",), 4, ["FLUORO EPIDURAL INJECTION", "FLUORO FACET BLOCK"]),
    (("NM", "CT"), 2, ["SPECT-CT BONE SCAN"]),
    (("DX", "MR"), 3, ["XR + MRI SPINE"]),
    (("OT",), 2, ["OUTSIDE STUDY"]),
]
SOP_CLASS = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}
ROOT = "1.2.826.0.1.3680043.9.7433"  # UIDs: ROOT.<kind>.<study>.<series>
PIXELS = bytes(range(256)) * 1  # 16 x 16, 8 bit


@dataclass(frozen=True)
class Patient:
    """One generated patient."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str


def patients(rng: random.Random, count: int) -> list[Patient]:
    """count patients with varied, realistic demographics."""
    out = []
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(SURNAMES))]
    for i in range(count):
        sex = rng.choices("FMO", (50, 49, 1))[0]
        given = rng.choice(GIVEN_F if sex == "F" else GIVEN_M)
        family = rng.choices(SURNAMES, weights)[0]
        middle = f"^{rng.choice('ABCDEFGHJKLMNPRSTW')}" if rng.random() < 0.3 else ""
        name = f"{family}^{given}{middle}"
        if rng.random() < 0.15:  # some senders use mixed case
            name = name.title()
        birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(85 * 365))
        issuer = rng.choices(["CLINIC", "MEMORIAL", "OUTSIDE"], (80, 15, 5))[0]
        out.append(Patient(f"MRN{i:07d}", issuer, name, f"{birth:%Y%m%d}", sex))
    return out


def datasets(count: int, seed: int = 7) -> Iterator[Dataset]:
    """The instances of count studies (one per series), the same for the same count and seed."""
    rng = random.Random(seed)
    people = patients(rng, max(1, int(count / 2.5)))
    kinds, weights = zip(*[(m, w) for m, w, _ in MODALITIES], strict=True)
    descriptions = {m: d for m, _, d in MODALITIES}
    for study in range(count):
        patient = rng.choice(people)
        modalities = rng.choices(kinds, weights)[0]
        day = dt.date(2005, 1, 1) + dt.timedelta(days=rng.randrange(21 * 365))
        when = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        description = rng.choice(descriptions[modalities])
        accession = f"A{rng.randrange(10**9):09d}"
        referring = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN_M + GIVEN_F)}"
        for number, modality in enumerate(modalities, start=1):
            yield _instance(
                patient, study, number, modality, day, when, description, accession, referring
            )


def _instance(
    patient: Patient,
    study: int,
    series: int,
    modality: str,
    day: dt.date,
    when: str,
    description: str,
    accession: str,
    referring: str,
) -> Dataset:
    """One small instance (16 x 16 pixels) of a generated study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = f"{ROOT}.3.{study}.{series}"
    ds.StudyInstanceUID = f"{ROOT}.1.{study}"
    ds.SeriesInstanceUID = f"{ROOT}.2.{study}.{series}"
    ds.PatientID, ds.IssuerOfPatientID = patient.patient_id, patient.issuer
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = (
        patient.name,
        patient.birth_date,
        patient.sex,
    )
    ds.StudyDate, ds.StudyTime = f"{day:%Y%m%d}", when
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, when
    ds.AccessionNumber, ds.StudyID = accession, f"S{study}"
    ds.StudyDescription, ds.SeriesDescription = description, f"{modality} series {series}"
    ds.ReferringPhysicianName = referring
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series, 1
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = PIXELS
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def load_hub(data_dir: Path, count: int) -> float:
    """Index count generated studies through the core (no files); return the seconds taken."""
    settings = Settings(data_dir=data_dir, storage_min_free_bytes=0)
    data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    hub = Hub.open(settings)
    start = time.perf_counter()
    items = datasets(count)
    try:
        while batch := [ds for _, ds in zip(range(2000), items, strict=False)]:
            with hub.db.write() as s:
                for ds in batch:
                    keys = extract_keys(ds)
                    stored = StoredFile(
                        sop_instance_uid=keys.instance.sop_instance_uid,
                        sop_class_uid=keys.instance.sop_class_uid,
                        study_uid=keys.study.study_uid,
                        series_uid=keys.series.series_uid,
                        path=f"bench/{keys.instance.sop_instance_uid}.dcm",
                        size=1,
                        sha256=hashlib.sha256(keys.instance.sop_instance_uid.encode()).hexdigest(),
                        transfer_syntax_uid=str(ExplicitVRLittleEndian),
                        source="bench",
                    )
                    s.add(stored)
                    s.flush()
                    index_keys(s, keys, stored, max_attempts=1)
    finally:
        hub.close()
    return time.perf_counter() - start


def write_files(directory: Path, count: int) -> None:
    """Write the generated instances as Part 10 files (for Orthanc)."""
    directory.mkdir(parents=True)
    for i, ds in enumerate(datasets(count)):
        sub = directory / f"{i // 1000:04d}"
        sub.mkdir(exist_ok=True)
        ds.save_as(sub / f"{i}.dcm", enforce_file_format=True)


def queries(count: int) -> dict[str, dict[str, str]]:
    """The issue's queries, with values that exist in the generated data (limit 100 unless
    paging, as viewers ask: Orthanc otherwise answers every match)."""
    some = next(ds for i, ds in enumerate(datasets(count)) if i == count // 3)
    return {
        "PatientID exact": {"PatientID": str(some.PatientID), "limit": "100"},
        "PatientName DOE*": {"PatientName": "DOE*", "limit": "100"},
        "StudyDate one month": {"StudyDate": "20190301-20190331", "limit": "100"},
        "ModalitiesInStudy=MR": {"ModalitiesInStudy": "MR", "limit": "100"},
        "limit=50 offset=5000": {"limit": "50", "offset": "5000"},
        "no filter limit=100": {"limit": "100"},
        # Not among the targets: worst cases, for the record.
        "(rare name prefix WIŚ*)": {"PatientName": "WIŚ*", "limit": "100"},
        "(OHIF-style *ROSS*)": {"PatientName": "*ROSS*", "limit": "100"},
        "(fuzzy 'jane doe')": {"PatientName": "jane doe", "fuzzymatching": "true", "limit": "100"},
    }


def timed(server: Server, params: dict[str, str], repeat: int) -> tuple[list[float], int]:
    """Latencies (ms) of repeat searches, after two warm-up runs, and the result count."""
    # Wild cards and ^ go literally: Orthanc does not decode %2A or %5E in query values.
    query = "&".join(f"{k}={quote(v, safe='*^,-')}" for k, v in params.items())
    with httpx.Client(headers=server.headers, timeout=600) as client:
        url = f"{server.dicomweb}/studies?{query}"
        times = []
        found = 0
        for i in range(repeat + 2):
            start = time.perf_counter()
            answer = client.get(url, headers={"Accept": "application/dicom+json"})
            elapsed = (time.perf_counter() - start) * 1000
            answer.raise_for_status()
            found = len(answer.json()) if answer.content else 0
            if i >= 2:
                times.append(elapsed)
    return times, found


def p95(times: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(times)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def report(count: int, results: dict[str, dict[str, tuple[list[float], int]]]) -> None:
    """Print one size's table."""
    print(f"\n{count} studies: median / p95 ms (results)")
    names = list(next(iter(results.values())))
    peers = list(results)
    print(f"{'query':<24}" + "".join(f"{p:>26}" for p in peers) + "   hub speed-up (p95)")
    for name in names:
        row = f"{name:<24}"
        for peer in peers:
            times, found = results[peer][name]
            row += f"{statistics.median(times):>12.1f} /{p95(times):>7.1f} ({found:>3})"
        if "Orthanc" in results:
            row += f"   {p95(results['Orthanc'][name][0]) / p95(results['hub'][name][0]):>6.1f}x"
        print(row)


def main() -> None:
    """Load, measure and print every requested size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, action="append")
    parser.add_argument("--orthanc-max", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--orthanc-repeat", type=int, help="repeats for Orthanc (default --repeat)")
    parser.add_argument(
        "--keep", type=Path, help="keep the loaded data under this directory and reuse it"
    )
    args = parser.parse_args()
    for count in args.studies or [10000]:
        with tempfile.TemporaryDirectory(prefix="bench-qido-") as tmp:
            work = (args.keep / str(count)) if args.keep else Path(tmp)
            repeats = (args.repeat, args.orthanc_repeat or args.repeat)
            run(work, count, args.orthanc_max, repeats)


def run(work: Path, count: int, orthanc_max: int, repeats: tuple[int, int]) -> None:
    """Load (unless loaded by an earlier run with --keep) and measure one size."""
    results: dict[str, dict[str, tuple[list[float], int]]] = {}
    if not (work / "hub-loaded").exists():
        shutil.rmtree(work / "hub", ignore_errors=True)
        seconds = load_hub(work / "hub", count)
        (work / "hub-loaded").touch()
        print(f"hub: indexed {count} studies in {seconds:.0f} s")
    with hub_api(work / "hub", work / "hub-api.log") as hub:
        results["hub"] = {n: timed(hub, q, repeats[0]) for n, q in queries(count).items()}
    if count <= orthanc_max:
        loaded = (work / "orthanc-loaded").exists()
        if not loaded:
            shutil.rmtree(work / "orthanc", ignore_errors=True)
            shutil.rmtree(work / "files", ignore_errors=True)
            write_files(work / "files", count)
        with orthanc(work / "orthanc") as peer:
            assert peer.dicom_port is not None
            if not loaded:
                sent = storescu_dir(peer.dicom_port, work / "files", "ORTHANC")
                (work / "orthanc-loaded").touch()
                print(f"Orthanc: stored {count} studies in {sent:.0f} s")
            asked = queries(count).items()
            results["Orthanc"] = {n: timed(peer, q, repeats[1]) for n, q in asked}
    report(count, results)


if __name__ == "__main__":
    main()
