"""Request dependencies: the hub of the running app and a read session on its index."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from imaging_hub.hub import Hub

__all__ = ["HubDep", "ReadSession", "get_hub", "read_session"]


def get_hub(request: Request) -> Hub:
    """The hub the app opened at startup."""
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


def read_session(hub: HubDep) -> Iterator[Session]:
    """A read-only session on the index for one request, rolled back afterwards."""
    with hub.db.read() as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session)]
