"""The embedded broker: kombu's file transport, with messages that appear whole or not at all.

kombu's file transport writes a message in place; a consumer polling the folder can open it
while it is still empty and stop with a decoding error. Here a message is written to a staging
folder and renamed into the queue folder, so consumers only ever see complete files.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

__all__ = ["AtomicFilesystemTransport"]


class AtomicChannel(filesystem.Channel):
    """A file-transport channel whose messages are published by an atomic rename."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Write the message under a staging name, then rename it into the queue folder."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staging = self.transport_options["staging_folder"]
        temp = os.path.join(staging, name)
        try:
            with open(temp, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(temp, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"cannot add message {name} to the queue folder") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    """kombu's file transport with atomic message publication."""

    Channel = AtomicChannel
