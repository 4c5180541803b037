"""Presentation context negotiation: among the syntaxes the hub supports, the peer's order wins.

pynetdicom accepts, for each proposed context, the first of the acceptor's own transfer
syntaxes that the peer lists. The hub accepts the first one in the peer's order instead (the
acceptor's choice, PS3.8 9.3.3.2): a modality that proposes its compressed syntax first sends
its file as it is and the hub keeps it so (no transcoding on either side), and a C-GET peer
preferring a stored compressed syntax gets the stored bytes.

A peer may propose one SOP class in several contexts (dcmtk's ``storescu`` proposes one per
syntax group); its order is the order of first mention over all of them, so each context still
gets the peer's preferred syntax among the ones it lists.
"""

from __future__ import annotations

from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from dicom_scp.access import Access, check_calling_node

__all__ = ["handle_requested", "prefer_peer_syntaxes"]


def _peer_orders(event: Event) -> dict[str, list[str]]:
    """Each proposed SOP class's transfer syntaxes in the order the peer first lists them."""
    orders: dict[str, list[str]] = {}
    for cx in event.assoc.requestor.primitive.presentation_context_definition_list:
        order = orders.setdefault(str(cx.abstract_syntax), [])
        order.extend(str(s) for s in cx.transfer_syntax if str(s) not in order)
    return orders


def prefer_peer_syntaxes(event: Event) -> None:
    """Order the hub's syntaxes of each proposed SOP class as the peer does (before negotiation)."""
    assoc = event.assoc
    orders = _peer_orders(event)
    contexts: list[PresentationContext] = []
    for cx in assoc.acceptor.supported_contexts:
        ours = [str(s) for s in cx.transfer_syntax]
        first = [s for s in orders.get(str(cx.abstract_syntax), []) if s in ours]
        if not first or first == ours[: len(first)]:
            contexts.append(cx)  # not proposed, or already in the peer's order
            continue
        ordered = build_context(cx.abstract_syntax, first + [s for s in ours if s not in first])
        ordered.scu_role, ordered.scp_role = cx.scu_role, cx.scp_role
        contexts.append(ordered)
    assoc.acceptor.supported_contexts = contexts


def handle_requested(event: Event, access: Access) -> None:
    """EVT_REQUESTED: the calling node's check (dicom_scp.access), then the peer's syntax order."""
    check_calling_node(event, access)
    if not (event.assoc.is_rejected or event.assoc.is_aborted):
        prefer_peer_syntaxes(event)
