"""Who may talk to the hub: known nodes by AE title (and host), unknown AEs by policy.

DESIGN invariant 6: DICOM peers are allowed by AE title and optionally host; an unknown calling
AE may at most C-ECHO and C-STORE (``store``, the default), is refused (``refuse``, done by the
AE's ``require_calling_aet``), or may do everything (``all``). A known node with a ``host`` must
connect from that host, or its association is rejected (A-ASSOCIATE-RJ, calling AE title not
recognised).
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

import structlog
from pynetdicom.events import Event

from imaging_hub.config import DicomNode, NodeService, Settings, UnknownAetPolicy

__all__ = ["Access", "check_calling_node"]

log = structlog.get_logger(__name__)

#: A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised.
REJECT_CALLING_AET = (0x01, 0x01, 0x03)


@lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    """The IP addresses a configured host stands for (itself when it is an IP literal)."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset()


def _host_matches(node: DicomNode, address: str) -> bool:
    """Tell whether a peer at address may act as node (a node without host may be anywhere)."""
    return node.host is None or node.host == address or address in _addresses(node.host)


class Access:
    """The hub's access rules for DICOM peers, built from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.policy = settings.dicom_unknown_aets
        self.nodes = list(settings.dicom_nodes)

    def _known(self, aet: str) -> list[DicomNode]:
        """The configured nodes with this AE title."""
        title = aet.strip()
        return [n for n in self.nodes if n.aet == title]

    def admits(self, aet: str, address: str) -> bool:
        """Tell whether an association from aet at address may be accepted."""
        known = self._known(aet)
        if known:
            return any(_host_matches(n, address) for n in known)
        return self.policy != UnknownAetPolicy.REFUSE

    def may(self, aet: str, address: str, service: NodeService) -> bool:
        """Tell whether aet at address may use service (C-ECHO needs no service)."""
        known = self._known(aet)
        if known:
            return any(service in n.services for n in known if _host_matches(n, address))
        if self.policy == UnknownAetPolicy.ALL:
            return True
        return self.policy == UnknownAetPolicy.STORE and service == NodeService.STORE


def check_calling_node(event: Event, access: Access) -> None:
    """On EVT_REQUESTED: reject (A-ASSOCIATE-RJ) a known node calling from another host."""
    assoc = event.assoc
    calling = str(assoc.requestor.primitive.calling_ae_title).strip()
    address = assoc.requestor.address
    if not access.admits(calling, address):
        log.info("association_rejected", calling_aet=calling, address=address)
        assoc.acse.send_reject(*REJECT_CALLING_AET)
        assoc.kill()  # waits for the A-ASSOCIATE-RJ to go out, as pynetdicom's own rejections do
