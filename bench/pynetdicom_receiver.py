"""A bare pynetdicom storage SCP for bench/receive.py: the ceiling of any pynetdicom receiver.

It accepts every storage SOP class in the uncompressed syntaxes, with no PDU size limit, and
writes each received dataset's bytes to a file (no fsync, no index, no checks). Several of it
may accept on one inherited listening socket, as the hub's receiver processes do.

    python bench/pynetdicom_receiver.py PORT OUT_DIR [LISTEN_FD]
"""

from __future__ import annotations

import sys
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from imaging_hub.supervisor import inherited_listener


class SharedListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server accepting on an inherited listening socket, if given one."""

    listen_fd: int | None = None

    def server_bind(self) -> None:
        """Bind, or take over the inherited (non-blocking) listening socket."""
        if self.listen_fd is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()
        self.socket = inherited_listener(self.listen_fd)
        self.server_address = self.socket.getsockname()


def main() -> None:
    """Serve until killed."""
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    SharedListenerServer.listen_fd = int(sys.argv[3]) if len(sys.argv) > 3 else None
    out.mkdir(parents=True, exist_ok=True)

    def store(event: Event) -> int:
        name = str(event.request.AffectedSOPInstanceUID)
        (out / name).write_bytes(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 64
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=[(evt.EVT_C_STORE, store)],
        server_class=SharedListenerServer,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
