"""multipart/related (RFC 2387) for DICOMweb: streamed encoding, and decoding parts to temp files.

Neither direction holds a whole body in memory: responses are generators over parts, and a
received body is written part by part to files (python-multipart's streaming parser does the
splitting; it handles any multipart type given the boundary).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError

from imaging_hub.errors import TooLarge

__all__ = [
    "MalformedBody",
    "ReceivedPart",
    "RelatedReader",
    "files_length",
    "media_type",
    "multipart_content_type",
    "new_boundary",
    "stream_files",
    "stream_parts",
]


class MalformedBody(ValueError):
    """A multipart body that cannot be split into parts (HTTP 400)."""


def new_boundary() -> str:
    """A fresh boundary that cannot occur in DICOM data by chance."""
    return f"imaging-hub-{uuid.uuid4().hex}"


def _split_params(value: str) -> list[str]:
    """Split a header value on semicolons that are not inside quoted strings."""
    items, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items]


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """Parse a media type (RFC 9110 8.3.1) into its lower-case type and parameters."""
    head, *params = _split_params(value)
    parsed: dict[str, str] = {}
    for param in params:
        name, sep, raw = param.partition("=")
        if sep:
            parsed[name.strip().lower()] = raw.strip().strip('"')
    return head.lower(), parsed


def multipart_content_type(part_type: str, boundary: str) -> str:
    """The Content-Type of a multipart/related response whose parts are part_type."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def _part_head(content_type: str, boundary: str) -> bytes:
    """The delimiter and headers that open one part."""
    return f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def files_length(parts: Iterable[tuple[str, int]], boundary: str) -> int:
    """The length of the body ``stream_files`` makes of (content type, file size) parts."""
    total = len(f"--{boundary}--\r\n")
    for content_type, size in parts:
        total += len(_part_head(content_type, boundary)) + size + 2
    return total


def _read_whole(parts: list[tuple[str, Path]], boundary: str) -> bytes:
    """Several small files as consecutive parts, read in one go."""
    chunks = []
    for content_type, path in parts:
        chunks += [_part_head(content_type, boundary), path.read_bytes(), b"\r\n"]
    return b"".join(chunks)


async def stream_files(
    parts: Iterable[tuple[str, Path, int]], boundary: str, *, chunk: int = 8 * 1024 * 1024
) -> AsyncIterator[bytes]:
    """Encode (content type, file, size) triples as a multipart body, reading in a thread.

    Files up to chunk bytes are read together, up to chunk bytes per thread call (a call costs
    more than reading a file from the page cache); larger files chunk by chunk. Memory stays
    bounded by about chunk bytes whatever the number and sizes of the files.
    """
    pending = list(parts)
    i = 0
    while i < len(pending):
        batch: list[tuple[str, Path]] = []
        total = 0
        while i < len(pending) and pending[i][2] <= chunk and total + pending[i][2] <= chunk:
            batch.append(pending[i][:2])
            total += pending[i][2]
            i += 1
        if batch:
            yield await anyio.to_thread.run_sync(_read_whole, batch, boundary)
            continue
        content_type, path, _ = pending[i]
        i += 1
        yield _part_head(content_type, boundary)
        with path.open("rb") as fh:
            while data := await anyio.to_thread.run_sync(fh.read, chunk):
                yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def stream_parts(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """Encode (content type, body chunks) pairs as a multipart body, lazily."""
    for content_type, body in parts:
        yield _part_head(content_type, boundary)
        yield from body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


@dataclass
class ReceivedPart:
    """One decoded part: its headers (lower-case names) and the file holding its body."""

    path: Path
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0

    @property
    def content_type(self) -> str:
        """The part's media type without parameters ('' when absent)."""
        return media_type(self.headers.get("content-type", ""))[0]


class RelatedReader:
    """Feed a multipart/related body chunk by chunk; each part lands in a file under directory."""

    def __init__(self, boundary: str, directory: Path, *, max_bytes: int) -> None:
        if not boundary or len(boundary) > 70:
            raise MalformedBody("the multipart boundary must be 1 to 70 characters (RFC 2046)")
        self.directory = directory
        self.max_bytes = max_bytes
        self.parts: list[ReceivedPart] = []
        self.received = 0
        self._ended = False
        self._out: BinaryIO | None = None
        self._field = bytearray()
        self._value = bytearray()
        self._parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        path = self.directory / f"part-{len(self.parts):05d}.dcm"
        self.parts.append(ReceivedPart(path=path))
        self._out = path.open("wb")

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self.parts[-1].headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._out is not None
        self._out.write(data[start:end])
        self.parts[-1].size += end - start

    def _part_end(self) -> None:
        assert self._out is not None
        self._out.close()
        self._out = None

    def _end(self) -> None:
        self._ended = True

    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the body (TooLarge past max_bytes, MalformedBody)."""
        self.received += len(chunk)
        if self.received > self.max_bytes:
            self.close()
            raise TooLarge(f"the request body exceeds the limit of {self.max_bytes} bytes")
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.close()
            raise MalformedBody(f"malformed multipart body: {exc}") from None

    def finish(self) -> list[ReceivedPart]:
        """End of body: the parts received (MalformedBody when truncated or empty)."""
        with contextlib.suppress(MultipartParseError):
            self._parser.finalize()
        self.close()
        if not self._ended:
            raise MalformedBody("the multipart body ends before its closing boundary")
        if not self.parts:
            raise MalformedBody("the multipart body has no parts")
        return self.parts

    def close(self) -> None:
        """Close a part file left open by an interrupted body."""
        if self._out is not None:
            self._out.close()
            self._out = None
