"""A bare pynetdicom storage SCP for bench/receive.py: the ceiling of any pynetdicom receiver.

It accepts every storage SOP class in the uncompressed syntaxes, with no PDU size limit, and
writes each received dataset's bytes to a file (no fsync, no index, no checks). Several of it
may share one port (SO_REUSEPORT), as the hub's receiver processes do.

    python bench/pynetdicom_receiver.py PORT OUT_DIR
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer


class SharedPortServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, bound with SO_REUSEPORT."""

    def server_bind(self) -> None:
        """Bind with SO_REUSEPORT."""
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def main() -> None:
    """Serve until killed."""
    port, out = int(sys.argv[1]), Path(sys.argv[2])
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
        server_class=SharedPortServer,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
