"""The DICOM node: a pynetdicom AE for C-ECHO, C-STORE (every storage class and syntax), C-FIND,
C-MOVE and C-GET."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import structlog
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    evt,
)
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom_scp.access import Access
from dicom_scp.find import FIND_MODELS, handle_find
from dicom_scp.get import GET_MODELS, handle_get
from dicom_scp.handlers import handle_conn_close, handle_echo
from dicom_scp.metrics import ReceiverObserver
from dicom_scp.move import MOVE_MODELS, handle_move
from dicom_scp.negotiation import handle_requested
from dicom_scp.retrieve import install_retrieve_service
from dicom_scp.transport import serve
from imaging_hub.config import Settings, UnknownAetPolicy
from imaging_hub.hub import Hub

__all__ = ["build_ae", "configure_pynetdicom", "release_spool", "spool_dir", "start"]

log = structlog.get_logger(__name__)

#: Transfer syntaxes accepted for query identifiers (no pixel data: the uncompressed ones).
QUERY_TRANSFER_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


def configure_pynetdicom(settings: Settings) -> None:
    """Process-wide pynetdicom options: receive and send from disk, never log identifiers (PHI)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    # C-MOVE/C-GET sub-operations send a stored file's dataset as it is on disk, byte for byte.
    _config.STORE_SEND_CHUNKED_DATASET = True
    install_retrieve_service()
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    # Received datasets are spooled next to the store, so large files never sit in memory.
    spool = spool_dir(settings)
    _remove_stale_spools(spool)
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)


def spool_dir(settings: Settings) -> Path:
    """This process's own spool folder, ``incoming/<hostname>-<pid>`` (data dirs may be shared)."""
    return settings.data_dir / "incoming" / f"{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove_stale_spools(spool: Path) -> None:
    """Delete the spool folders of dead receivers of this host (left by a crash)."""
    if not spool.parent.is_dir():
        return
    host, _ = spool.name.rsplit("-", 1)
    for folder in spool.parent.iterdir():
        owner_host, _, pid = folder.name.rpartition("-")
        if owner_host != host or not pid.isdigit() or folder == spool or not folder.is_dir():
            continue
        if not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("stale_spool_removed", folder=folder.name)


def release_spool(settings: Settings) -> None:
    """Remove this process's spool folder at a clean shutdown (after the server stopped)."""
    shutil.rmtree(spool_dir(settings), ignore_errors=True)


#: Longest wait, in seconds, for a new connection's A-ASSOCIATE-RQ (and for an A-RELEASE-RP).
ACSE_TIMEOUT = 30.0


def build_ae(settings: Settings) -> AE:
    """An AE with the hub's title, limits and supported contexts."""
    ae = AE(ae_title=settings.dicom_aet)
    ae.maximum_pdu_size = settings.dicom_max_pdu
    ae.maximum_associations = settings.dicom_max_associations
    ae.network_timeout = settings.dicom_idle_timeout
    # A connection that never asks for an association is dropped like an idle one, or sooner.
    ae.acse_timeout = min(ACSE_TIMEOUT, settings.dicom_idle_timeout)
    ae.dimse_timeout = settings.dicom_idle_timeout
    ae.require_called_aet = True
    if settings.dicom_unknown_aets == UnknownAetPolicy.REFUSE:
        # An empty list would mean "anyone"; a refusing hub with no known node refuses all.
        ae.require_calling_aet = [n.aet for n in settings.dicom_nodes] or ["\x00"]
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        # Role selection accepted either way: a C-GET peer is the Storage SCP of its contexts.
        ae.add_supported_context(
            context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    for find_model in FIND_MODELS:
        ae.add_supported_context(find_model, QUERY_TRANSFER_SYNTAXES)
    for retrieve_model in [*MOVE_MODELS, *GET_MODELS]:
        ae.add_supported_context(retrieve_model, QUERY_TRANSFER_SYNTAXES)
    return ae


def start(
    hub: Hub, *, block: bool = True, listen_fd: int | None = None
) -> ThreadedAssociationServer | None:
    """Listen for associations; returns the server when not blocking.

    listen_fd: accept on this inherited listening socket (shared by several receiver
    processes, see imaging_hub.supervisor.shared_listener) instead of binding the port.
    """
    settings = hub.settings
    configure_pynetdicom(settings)
    ae = build_ae(settings)
    access = Access(settings)
    observer = ReceiverObserver(hub)
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, handle_requested, [access]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_FIND, handle_find, [hub, access]),
        (evt.EVT_C_MOVE, handle_move, [hub, access]),
        (evt.EVT_C_GET, handle_get, [hub, access]),
        *observer.handlers(access),  # C-STORE (through handle_store), counts, one log line
        (evt.EVT_CONN_CLOSE, handle_conn_close, [hub]),
    ]
    log.info(
        "scp_listening",
        aet=settings.dicom_aet,
        host=settings.dicom_host,
        port=settings.dicom_port,
        tls=settings.dicom_tls,
        pid=os.getpid(),
        shared_listener=listen_fd is not None,
    )
    if block:
        observer.watch(lambda: True)
        try:
            return serve(ae, settings, handlers, block=True, listen_fd=listen_fd)
        finally:
            observer.close()
    server = serve(ae, settings, handlers, block=False, listen_fd=listen_fd)
    assert server is not None
    observer.watch(lambda: server.socket is not None and server.socket.fileno() != -1)
    return server
