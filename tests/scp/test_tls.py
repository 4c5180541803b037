"""DICOM TLS (PS3.15 B.1) with dcmtk's echoscu and storescu as the peers.

A CA, the receiver's certificate and client certificates are made with the ``openssl`` command
for each test session; a second, unrelated CA signs a client certificate the hub must refuse.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging_hub.config import load_settings
from imaging_hub.db.models import StoredFile
from imaging_hub.errors import ConfigError
from imaging_hub.hub import Hub
from tests.processes import Deployment
from tests.scp.helpers import receiver_settings, receiving, stored_count
from tests.support import testdata, wait_for_port

pytestmark = pytest.mark.dcmtk

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class Pki:
    """The files of a test PKI."""

    ca: Path
    hub_cert: Path
    hub_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", key, "-out", cert,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return key, cert


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", key, "-out", csr, cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial",
        "-days", "2", "-extfile", ext, "-out", cert, cwd=folder,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, and a rogue CA's client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca = _ca(folder, "clinic-ca")
    rogue_ca = _ca(folder, "rogue-ca")
    server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    client_ext = "extendedKeyUsage=clientAuth\n"
    hub_key, hub_cert = _leaf(folder, "hub", ca, server_ext)
    client_key, client_cert = _leaf(folder, "xray-room1", ca, client_ext)
    rogue_key, rogue_cert = _leaf(folder, "intruder", rogue_ca, client_ext)
    return Pki(ca[1], hub_cert, hub_key, client_cert, client_key, rogue_cert, rogue_key)


@pytest.fixture
def tls_hub(tmp_path: Path, pki: Pki) -> Iterator[Hub]:
    """A receiver speaking TLS, without client certificate verification."""
    settings = receiver_settings(tmp_path, dicom_tls_cert=pki.hub_cert, dicom_tls_key=pki.hub_key)
    with receiving(settings) as hub:
        yield hub


@pytest.fixture
def verifying_hub(tmp_path: Path, pki: Pki) -> Iterator[Hub]:
    """A receiver speaking TLS that requires client certificates signed by the clinic CA."""
    settings = receiver_settings(
        tmp_path, dicom_tls_cert=pki.hub_cert, dicom_tls_key=pki.hub_key, dicom_tls_ca=pki.ca
    )
    with receiving(settings) as hub:
        yield hub


def _dcmtk(
    tool: str, hub: Hub, *options: str | Path, files: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run echoscu or storescu (with files) against the hub on 127.0.0.1."""
    address = ["127.0.0.1", str(hub.settings.dicom_port)]
    return subprocess.run(
        [tool, "-aec", hub.settings.dicom_aet, *map(str, options), *address, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        env=DCMTK_ENV,
    )


def test_tls_echo_and_store(tls_hub: Hub, pki: Pki) -> None:
    echo = _dcmtk("echoscu", tls_hub, "+tla", "+cf", pki.ca)  # anonymous client, server checked
    assert echo.returncode == 0, echo.stderr
    src = testdata("CT_small.dcm")
    client = ("+tls", pki.client_key, pki.client_cert, "+cf", pki.ca)
    store = _dcmtk("storescu", tls_hub, *client, files=(src,))
    assert store.returncode == 0, store.stderr
    with tls_hub.db.read() as s:
        key = s.execute(select(StoredFile.path)).scalar_one()
    assert dcmread(tls_hub.store.local_path(key)).PixelData == dcmread(src).PixelData


def test_plain_tcp_to_the_tls_port_fails_and_the_server_goes_on(tls_hub: Hub, pki: Pki) -> None:
    plain = _dcmtk("echoscu", tls_hub)
    assert plain.returncode != 0
    store = _dcmtk("storescu", tls_hub, files=(testdata("CT_small.dcm"),))
    assert store.returncode != 0
    assert stored_count(tls_hub) == 0
    again = _dcmtk("echoscu", tls_hub, "+tla", "+cf", pki.ca)
    assert again.returncode == 0, again.stderr


def test_silent_connection_does_not_hold_up_others(tls_hub: Hub, pki: Pki) -> None:
    """A peer that connects and never starts the handshake blocks no one else."""
    with socket.create_connection(("127.0.0.1", tls_hub.settings.dicom_port)):
        started = time.monotonic()
        echo = _dcmtk("echoscu", tls_hub, "+tla", "+cf", pki.ca)
        assert echo.returncode == 0, echo.stderr
        assert time.monotonic() - started < 10


def test_client_that_does_not_trust_the_hub_refuses_it(tls_hub: Hub, pki: Pki) -> None:
    """dcmtk checks the hub's certificate: without the clinic CA it does not connect."""
    untrusting = _dcmtk("echoscu", tls_hub, "+tla", "+cf", pki.rogue_cert)
    assert untrusting.returncode != 0


def test_verification_admits_clinic_certificates_only(verifying_hub: Hub, pki: Pki) -> None:
    client = ("+tls", pki.client_key, pki.client_cert, "+cf", pki.ca)
    assert _dcmtk("echoscu", verifying_hub, *client).returncode == 0
    store = _dcmtk("storescu", verifying_hub, *client, files=(testdata("CT_small.dcm"),))
    assert store.returncode == 0, store.stderr
    assert stored_count(verifying_hub) == 1

    anonymous = _dcmtk("echoscu", verifying_hub, "+tla", "+cf", pki.ca)
    assert anonymous.returncode != 0  # no client certificate
    rogue = ("+tls", pki.rogue_key, pki.rogue_cert, "+cf", pki.ca)
    assert _dcmtk("echoscu", verifying_hub, *rogue).returncode != 0  # another CA's certificate
    refused = _dcmtk("storescu", verifying_hub, *rogue, files=(testdata("MR_small.dcm"),))
    assert refused.returncode != 0
    assert stored_count(verifying_hub) == 1
    assert _dcmtk("echoscu", verifying_hub, *client).returncode == 0  # still serving


def test_tls_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[dicom]\ntls_cert = "{pki.hub_cert}"\n')
    with pytest.raises(ConfigError, match="dicom_tls_cert and dicom_tls_key"):
        load_settings(config)
    config.write_text(f'[dicom]\ntls_ca = "{pki.ca}"\n')
    with pytest.raises(ConfigError, match="dicom_tls_ca needs"):
        load_settings(config)
    config.write_text(
        f'[dicom]\ntls_cert = "{pki.hub_cert}"\ntls_key = "{pki.hub_key}"\ntls_ca = "{pki.ca}"\n'
    )
    assert load_settings(config).dicom_tls


def test_unusable_tls_files_stop_the_receiver_at_start(tmp_path: Path, pki: Pki) -> None:
    settings = receiver_settings(tmp_path, dicom_tls_cert=pki.hub_cert, dicom_tls_key=pki.ca)
    with pytest.raises(ConfigError, match="HUB_DICOM_TLS_CERT"), receiving(settings):
        pass


def test_scp_command_speaks_tls_from_environment_settings(
    deploy: Callable[..., Deployment], pki: Pki
) -> None:
    """`imaging-hub scp` as a process, TLS configured by HUB_DICOM_TLS_* variables."""
    d = deploy(None, None)
    d.env.update(
        HUB_DICOM_PROCESSES="1",
        HUB_DICOM_TLS_CERT=str(pki.hub_cert),
        HUB_DICOM_TLS_KEY=str(pki.hub_key),
        HUB_DICOM_TLS_CA=str(pki.ca),
    )
    d.start("scp")
    wait_for_port(d.settings.dicom_port, timeout=30)
    port = str(d.settings.dicom_port)
    client = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
    src = str(testdata("CT_small.dcm"))
    store = subprocess.run(
        ["storescu", *client, "-aec", "IMAGING_HUB", "127.0.0.1", port, src],
        capture_output=True,
        text=True,
        timeout=60,
        env=DCMTK_ENV,
    )
    assert store.returncode == 0, store.stderr + d.logs()
    plain = subprocess.run(
        ["echoscu", "-aec", "IMAGING_HUB", "127.0.0.1", port], capture_output=True, timeout=60
    )
    assert plain.returncode != 0
    hub = d.hub()
    try:
        assert stored_count(hub) == 1
    finally:
        hub.close()
