"""The receiver's listening socket: idle timeouts on every connection, and optional DICOM TLS.

pynetdicom's own server reads a started PDU without a timeout and does the TLS handshake in
its accepting thread, so one silent peer could hold an association forever or stop every new
connection. Here each accepted socket gets the idle timeout, and the TLS handshake happens
in the connection's own thread (OpenSSL performs it on the first read), under that timeout.
A P-DATA-TF PDU longer than the maximum length the hub offered (PS3.8 D.1) drops the
connection before its body is read (any dataset it was part of is quarantined as truncated);
before a PDU of a C-STORE dataset is read, the spool's free space is checked (dicom_scp.spooling).
DICOM TLS follows PS3.15 B.1 (BCP 195): TLS 1.2 or newer, optionally with client certificates.
Receiver processes that share one listening socket leave each new connection to the least busy
of them (HubAssociationServer.get_request).
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import sys
import threading
import time
from typing import Any, cast

import pynetdicom.association
import structlog
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicom_scp.spooling import guard_spool, start_writeback
from imaging_hub.config import Settings
from imaging_hub.errors import ConfigError
from imaging_hub.supervisor import inherited_listener

__all__ = ["HubAssociationServer", "LimitedAssociationSocket", "serve", "tls_context"]

log = structlog.get_logger(__name__)

#: PDU type of P-DATA-TF (PS3.8 9.3.5).
P_DATA_TF = 0x04
#: Seconds a connection's reactor waits in select() for data before it looks at its queues.
READY_WAIT = 0.0005
#: The reactor's own sleep between loops with nothing to do (pynetdicom's default: 1 ms).
REACTOR_DELAY = 0.00002


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context from the settings, or None when TLS is off."""
    if settings.dicom_tls_cert is None or settings.dicom_tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"HUB_DICOM_TLS_CERT / HUB_DICOM_TLS_KEY cannot be used: {exc}") from exc
    if settings.dicom_tls_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.dicom_tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"HUB_DICOM_TLS_CA cannot be used: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class LimitedAssociationSocket(AssociationSocket):
    """An association socket that refuses a P-DATA-TF PDU longer than the offered maximum."""

    _header: bytes = b""

    def recv(self, nr_bytes: int) -> bytearray:
        """Read nr_bytes; pynetdicom reads each PDU's 6-byte header, then its announced body."""
        header, self._header = self._header, b""
        limit = self.assoc.acceptor.maximum_length
        if header[:1] == bytes([P_DATA_TF]):
            if limit and nr_bytes > limit:
                log.info("pdu_too_long", bytes=nr_bytes, limit=limit)
                # pynetdicom treats a failed read as a closed connection (Evt17) and aborts.
                raise OSError(f"a P-DATA-TF PDU of {nr_bytes} bytes exceeds the maximum {limit}")
            server = self.assoc._server
            floor = getattr(server, "min_free_bytes", 0)
            max_bytes = getattr(server, "max_dataset_bytes", sys.maxsize)
            message = self.assoc.dimse.message
            guard_spool(message, nr_bytes, floor, max_bytes)
            start_writeback(message)
        data = super().recv(nr_bytes)
        if nr_bytes == 6:
            self._header = bytes(data)
        return data

    @property
    def ready(self) -> bool:
        """True if data can be read, waiting up to READY_WAIT for it.

        pynetdicom's reactor sleeps 1 ms whenever it finds nothing to do, so every PDU waited
        up to that long after it arrived (several per C-STORE). With REACTOR_DELAY the wait
        happens here, in select(): data is read as soon as it arrives, and an idle association
        still wakes only about 2000 times a second.
        """
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes already buffered, which select() cannot see
        try:
            readable, _, _ = select.select([sock], [], [], READY_WAIT)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # the transport connection closed
            return False
        return bool(readable)


class _WakingQueue(queue.Queue[Any]):
    """An association's DIMSE message queue that wakes the association's reactor on put."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Queue a decoded message and wake the reactor."""
        super().put(item, block, timeout)
        self.wake.set()


class _ReactorTime:
    """The time module as pynetdicom.association sees it, with a sleep that ends early.

    An association's reactor naps 1 ms between looks at its message queue, so each C-STORE
    waited up to that long after its last fragment arrived. In a thread of an association
    made by HubRequestHandler, sleep ends as soon as a message is queued.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """Sleep, or wait until the current association has a message queued."""
        wake = getattr(threading.current_thread(), "_hub_wake", None)
        if wake is None:
            time.sleep(seconds)
            return
        wake.wait(seconds)
        wake.clear()


class HubRequestHandler(RequestHandler):
    """pynetdicom's request handler, with a LimitedAssociationSocket for each association."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # Only recv() and ready differ, and the subclass adds no state of its own to set up.
        assoc.dul.socket.__class__ = LimitedAssociationSocket
        assoc.dul._run_loop_delay = REACTOR_DELAY  # the socket's ready waits instead
        wake = threading.Event()
        assoc._hub_wake = wake  # type: ignore[attr-defined]
        assoc.dimse.msg_queue = _WakingQueue(wake)
        return assoc


#: On a shared listening socket, seconds a receiver waits before accepting, per connection it
#: has open (see HubAssociationServer.get_request), and at most.
ACCEPT_DELAY_PER_CONNECTION = 0.005
MAX_ACCEPT_DELAY = 0.05


class SharedContexts(list[PresentationContext]):
    """The supported contexts, handed to each association as they are instead of deep-copied.

    pynetdicom deep-copies them for every association: with every storage SOP class and every
    transfer syntax that takes about 100 ms of CPU per association. Negotiation only reads
    them, and the hub replaces the list of an association (dicom_scp.negotiation), never a
    context in it.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)


class HubAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-connection timeouts and a deferred TLS handshake."""

    def __init__(
        self,
        *args: Any,
        idle_timeout: float,
        min_free_bytes: int = 0,
        max_dataset_bytes: int = sys.maxsize,
        listen_fd: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.min_free_bytes = min_free_bytes
        self.max_dataset_bytes = max_dataset_bytes
        self.listen_fd = listen_fd
        self._starting = 0  # connections accepted whose association thread has not started
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)

    def server_bind(self) -> None:
        """Bind the port, or take over the inherited listening socket listen_fd."""
        if self.listen_fd is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()
        self.socket = inherited_listener(self.listen_fd)
        self.server_address = self.socket.getsockname()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; never block this (accepting) thread on the peer."""
        assert self.socket is not None
        if self.listen_fd is not None:
            # Every receiver sharing the socket wakes for a new connection and the first to
            # accept gets it. One with connections open waits a little first, so that a less
            # busy sibling takes it: each process runs on one CPU at most (the GIL).
            with self._open_lock:
                starting = self._starting
            # A connection closed before it asked for an association keeps its thread for a
            # while (pynetdicom waits out the ACSE timeout); its reactor has stopped.
            open_now = starting + sum(1 for a in self.active_associations if a.dul.is_alive())
            if open_now:
                time.sleep(min(ACCEPT_DELAY_PER_CONNECTION * open_now, MAX_ACCEPT_DELAY))
        client, address = self.socket.accept()  # shared: BlockingIOError if a sibling took it
        with self._open_lock:
            self._starting += 1
        client.settimeout(self.idle_timeout)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Start a connection's association (in a thread of its own, which serves it)."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._starting -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a connection's failure (e.g. a refused TLS handshake) without a traceback."""
        log.info("connection_failed", address=str(client_address[0]))


def serve(
    ae: AE,
    settings: Settings,
    handlers: list[Any],
    *,
    block: bool,
    listen_fd: int | None = None,
) -> HubAssociationServer | None:
    """Start the receiver like ``AE.start_server``, on HubAssociationServer."""
    if not isinstance(pynetdicom.association.time, _ReactorTime):
        pynetdicom.association.time = _ReactorTime()  # type: ignore[assignment]
    made = ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        evt_handlers=handlers,
        ssl_context=tls_context(settings),
        server_class=HubAssociationServer,
        request_handler=HubRequestHandler,
        idle_timeout=settings.dicom_idle_timeout,
        min_free_bytes=settings.storage_min_free_bytes,
        max_dataset_bytes=settings.ingest_max_bytes,
        listen_fd=listen_fd,
    )
    server = cast(HubAssociationServer, made)
    ae._servers.append(server)  # AssociationServer.shutdown() removes it from this list
    if block:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.shutdown()
        return None
    thread = threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True)
    thread.start()
    return server
