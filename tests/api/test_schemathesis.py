"""Bad input never gives a server error (DESIGN invariant 4): schemathesis over /openapi.json.

Every operation of the app's OpenAPI document gets requests generated from its schema, with an
admin's bearer token (so that they pass the access check and reach the route): valid and
invalid ones with the UIDs and ids of real data in the path (so that query parameters and
bodies reach the code behind the lookups), and invalid ones with made-up path values. It runs
on PostgreSQL, the stricter database (no NUL in a text, 64-bit integers). Any 5xx answer fails
the test, listed with a curl command that repeats the request.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from imaging_hub.hub import Hub
from tests.api.helpers import sign_in
from tests.api.test_records import PDF_BYTES
from tests.api.test_shares import first_instance

#: Examples per operation and kind of request: about 40 s on an idle machine, 90 s on a busy one.
EXAMPLES = 6
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same requests on every run: a failure is reproducible
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _real_values(hub: Hub, client: TestClient, admin: dict[str, str], corpus: dict[str, str]):
    """Path parameter values that name real data (a study and its parts, a record, a link…)."""
    study = corpus["A"]
    series, sop = first_instance(hub, study)
    mrn = client.get(f"/api/studies/{study}", headers=admin).json()["patient_mrn"]
    record = client.post(
        "/api/records/pdf",
        files={"file": ("r.pdf", PDF_BYTES, "application/pdf")},
        data={"title": "Report", "mrn": mrn},
        headers=admin,
    ).json()["record_id"]
    referral = client.post(
        "/api/referrals",
        json={"mrn": mrn, "to_specialty": "pain-medicine", "reason": "r", "study_uids": [study]},
        headers=admin,
    ).json()["referral_id"]
    link = client.post("/api/share-links", json={"study_uid": study}, headers=admin).json()
    token = client.post("/api/tokens", json={"name": "n", "scopes": ["read"]}, headers=admin)
    return {
        "link_id": link["link_id"],
        "token_id": token.json()["token_id"],
        "study": study,
        "study_uid": study,
        "series": series,
        "instance": sop,
        "sop_uid": sop,
        "frames": "1",
        "path": "7FE00010",
        "kind": "thumbnail",
        "mrn": mrn,
        "record_id": record,
        "referral_id": referral,
        "username": "dr.grey",
    }


def _fuzz(
    operation: Any, strategy: Any, headers: dict[str, str], errors: dict, answered: set
) -> None:
    """Send an operation the strategy's examples; note the first request of each 5xx answer.

    An exception the app lets out counts as a 500 (a server would answer one). Operations that
    answered a request with success go into answered.
    """

    @_SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            status = case.call(headers=headers).status_code
            reason = ""
        except Exception as exc:  # the in-process client re-raises what the app did not answer
            status, reason = 500, f"{type(exc).__name__}: {str(exc)[:200]}\n"
        if status < 300:
            answered.add((operation.method.upper(), operation.path))
        if status >= 500:
            key = (operation.method.upper(), operation.path, status)
            errors.setdefault(key, reason + case.as_curl_command(headers=headers))

    run()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_no_operation_answers_a_server_error(hub: Hub, client: TestClient, corpus) -> None:
    admin = sign_in(hub, "fuzz-admin-q7", "admin")  # a name the fuzzer will not disable
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    values = _real_values(hub, client, admin, corpus)
    errors: dict[tuple[str, str, int], str] = {}
    answered: set[tuple[str, str]] = set()
    started, operations = time.monotonic(), 0

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        names = [p.name for p in operation.path_parameters]
        real = {n: values[n] for n in names if n in values} or None
        # Valid and invalid requests on real data; invalid ones also with made-up path values.
        runs = [(GenerationMode.POSITIVE, real), (GenerationMode.NEGATIVE, real)]
        if real:
            runs.append((GenerationMode.NEGATIVE, None))
        for mode, path_parameters in runs:
            strategy = operation.as_strategy(mode, headers=admin, path_parameters=path_parameters)
            with contextlib.suppress(Unsatisfiable):  # nothing to make invalid
                _fuzz(operation, strategy, admin, errors, answered)

    elapsed = time.monotonic() - started
    print(f"schemathesis: {operations} operations, {len(answered)} answered 2xx, {elapsed:.0f} s")
    assert operations >= 60
    # The requests got past the access check and into the routes (not all refused).
    assert len(answered) >= 0.7 * operations, sorted(answered)
    assert errors == {}, "\n".join(f"{k}: {v}" for k, v in errors.items())


def test_the_document_names_every_route(anonymous: TestClient) -> None:
    """Every route under /api, /dicomweb and /wado is in the OpenAPI document, so fuzzed above."""
    from tests.api.test_auth import every_route

    document = anonymous.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    routes = {
        (method, path.replace(":path}", "}"))
        for path, methods, _ in every_route(anonymous.app)
        if path.startswith(("/api/", "/dicomweb/", "/wado"))
        for method in methods
    }
    assert routes <= documented, routes - documented


# -- What the fuzzing found, pinned (each was a 500) ---------------------------------------------


def test_a_nul_character_is_bad_input_on_every_database(hub: Hub, client: TestClient) -> None:
    """PostgreSQL takes no NUL in a text: the answer is 400, not a database error (500)."""
    admin = sign_in(hub, "root", "admin")
    on_postgres = hub.db.engine.dialect.name == "postgresql"
    searched = client.get("/api/admin/audit", params={"actor": "a\x00b"}, headers=admin)
    assert searched.status_code == (400 if on_postgres else 200), searched.text
    referred = client.post(
        "/api/referrals", json={"mrn": "H\x001", "to_specialty": "chiropractic", "reason": "r"}
    )
    listed = client.get("/api/referrals", params={"mrn": "H\x001"})
    for response in (referred, listed):
        assert response.status_code in ((400,) if on_postgres else (200, 404)), response.text
    if on_postgres:
        assert "NUL character" in referred.json()["detail"]
    assert client.get("/api/referrals").status_code == 200  # the API keeps serving


def test_job_ids_beyond_64_bits_are_422(hub: Hub, client: TestClient) -> None:
    admin = sign_in(hub, "root", "admin")
    for ids in ([2**63], [0], [-1]):
        response = client.post("/api/admin/jobs/retry", json={"job_ids": ids}, headers=admin)
        assert response.status_code == 422, (ids, response.text)
    fine = client.post("/api/admin/jobs/retry", json={"job_ids": [1]}, headers=admin)
    assert fine.status_code == 200 and fine.json() == {"requeued": 0}
