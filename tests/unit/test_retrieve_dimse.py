"""The core of C-MOVE/C-GET: retrieve identifiers, what to propose, how each instance goes out."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from imaging_hub.ingest import store_instance
from imaging_hub.qr import IdentifierMismatch, Level, Model
from imaging_hub.retrieve import Delivery
from imaging_hub.retrieve_dimse import (
    FALLBACK_SYNTAXES,
    MAX_CONTEXTS,
    RetrieveItem,
    TooManyMatches,
    can_fall_back,
    choose_delivery,
    parse_retrieve_identifier,
    proposed_contexts,
    resolve,
)
from tests.support import make_study

CT = "1.2.840.10008.5.1.4.1.1.2"


def ident(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def item(sop_class: str = CT, syntax: str = ExplicitVRLittleEndian) -> RetrieveItem:
    return RetrieveItem("1.2.3", sop_class, str(syntax), "k", "1.2", 1)


def test_only_unique_keys_match() -> None:
    query = parse_retrieve_identifier(
        ident("SERIES", StudyInstanceUID="1.2", SeriesInstanceUID=["1.3", "1.4"], Modality="CT"),
        Model.STUDY_ROOT,
    )
    assert query.level == Level.SERIES
    assert query.values == {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.3\\1.4"}


def test_a_malformed_other_key_is_ignored() -> None:
    query = parse_retrieve_identifier(
        ident("STUDY", StudyInstanceUID="1.2", StudyDate="not a date"), Model.STUDY_ROOT
    )
    assert query.values == {"StudyInstanceUID": "1.2"}


@pytest.mark.parametrize(
    ("identifier", "model"),
    [
        (ident("STUDY", StudyInstanceUID="1.2*"), Model.STUDY_ROOT),
        (ident("STUDY"), Model.STUDY_ROOT),
        (ident("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.3"), Model.STUDY_ROOT),
        (ident("STUDY", StudyInstanceUID="1.2"), Model.PATIENT_ROOT),  # no PatientID
        (ident("PATIENT", PatientID="P?"), Model.PATIENT_ROOT),
        (ident("PATIENT", PatientID="P1"), Model.STUDY_ROOT),
    ],
)
def test_bad_identifiers(identifier: Dataset, model: Model) -> None:
    with pytest.raises(IdentifierMismatch):
        parse_retrieve_identifier(identifier, model)


@pytest.mark.parametrize(
    ("syntax", "allowed"),
    [
        (ExplicitVRLittleEndian, True),
        (ImplicitVRLittleEndian, True),
        (ExplicitVRBigEndian, True),
        (DeflatedExplicitVRLittleEndian, True),
        (RLELossless, True),  # pydicom decodes RLE itself
        ("1.2.840.10008.1.2.4.100", False),  # MPEG2: nothing here decodes it
    ],
)
def test_fallback_only_for_native_or_decodable(syntax: str, allowed: bool) -> None:
    assert can_fall_back(str(syntax)) is allowed


def test_choose_delivery() -> None:
    stored = str(JPEGBaseline8Bit)
    assert choose_delivery(stored, {stored, ExplicitVRLittleEndian}) == Delivery.AS_STORED
    assert choose_delivery(stored, {ImplicitVRLittleEndian}) == Delivery.TRANSCODE
    assert choose_delivery(stored, {RLELossless}) is None
    assert choose_delivery("1.2.840.10008.1.2.4.100", {ExplicitVRLittleEndian}) is None


def test_proposed_contexts() -> None:
    contexts = proposed_contexts(
        [item(), item(), item(syntax=JPEGBaseline8Bit), item(syntax="1.2.840.10008.1.2.4.100")]
    )
    assert contexts == [
        (CT, [ExplicitVRLittleEndian]),
        (CT, [JPEGBaseline8Bit]),
        (CT, ["1.2.840.10008.1.2.4.100"]),
        (CT, list(FALLBACK_SYNTAXES)),
    ]
    many = [item(sop_class=f"1.2.840.10008.5.1.4.1.1.{n}") for n in range(200)]
    assert len(proposed_contexts(many)) == MAX_CONTEXTS


def test_resolve_in_order_and_limited(hub: Hub, tmp_path: Path) -> None:
    paths = make_study(tmp_path, 3, PatientID="P-R")
    for path in paths:
        index_stored_file(hub, store_instance(hub, path, source="test").stored_file_id)
    study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    query = parse_retrieve_identifier(ident("PATIENT", PatientID="P-R"), Model.PATIENT_ROOT)
    with hub.db.read() as session:
        found = resolve(session, query)
        assert [i.sop_instance_uid for i in found.items] == [
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths
        ]
        assert found.study_uids == [study_uid]
        assert {i.transfer_syntax_uid for i in found.items} == {ExplicitVRLittleEndian}
        with pytest.raises(TooManyMatches):
            resolve(session, query, limit=2)
