"""A batch's multipart body, read as it streams: one entry per file part, whatever it is.

Starlette's form parser keeps a part without a file name as text (the batch then dropped it),
spools every file whole before anyone can look at its size, and fails the whole body on a part
header over 4 KiB (a long file name). Here each ``files`` part becomes an ``Upload``: spooled
up to the per-photo limit and no further (past it the rest of its bytes are read, since the
next parts follow them, but never stored, and it is rejected as too large), rejected with its
reason when its file name is over ``NAME_LIMIT`` characters. A ``files`` part without a file
name (a text part) and any other field are a 422 naming the part; the number of parts is
bounded by the batch's file limit (413 past it).
"""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from fruitstream.entrypoints.api.problems import TooManyFilesError
from fruitstream.pipeline import OpenFile, Upload

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# The longest file name taken (characters): no file system keeps a longer one.
NAME_LIMIT = 255
# The most bytes of one part's headers kept; past it the part is rejected.
HEADER_LIMIT = 16 * 1024
# A part's bytes are kept in memory up to this, then in a temporary file.
SPOOL_BYTES = 1024 * 1024
# Other parts (fields) than files a body may carry before it is refused as not a batch.
MAX_FIELDS = 8


def _invalid(where: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", where), "msg": message}])


@dataclass
class _Part:
    """One part as it arrives."""

    headers: bytearray = field(default_factory=bytearray)  # Content-Disposition, up to the cap
    headers_cut: bool = False
    name: str = ""
    filename: str | None = None
    file: SpooledTemporaryFile[bytes] | None = None
    size: int = 0  # bytes received, kept or not
    refused: str | None = None


@dataclass
class BatchForm:
    """The parts of a batch body, in order, as uploads for ``FruitService.submit``."""

    uploads: list[Upload]
    files: list[SpooledTemporaryFile[bytes]]
    # Bytes of photo data received and bytes kept (spooled): what the limit spared.
    received: int = 0
    kept: int = 0

    async def close(self) -> None:
        for file in self.files:
            file.close()


class _Reader:
    def __init__(self, max_files: int, max_file_bytes: int) -> None:
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.parts: list[_Part] = []
        self.fields = 0
        self.pending: list[tuple[SpooledTemporaryFile[bytes], bytes]] = []
        self.header_name = bytearray()
        self.files: list[SpooledTemporaryFile[bytes]] = []

    @property
    def part(self) -> _Part:
        return self.parts[-1]

    def on_part_begin(self) -> None:
        self.parts.append(_Part())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end][:HEADER_LIMIT]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        if self.header_name.lower() != b"content-disposition":
            return
        room = HEADER_LIMIT - len(self.part.headers)
        chunk = data[start:end]
        if len(chunk) > room:
            self.part.headers_cut = True
        self.part.headers += chunk[: max(room, 0)]

    def on_header_end(self) -> None:
        self.header_name.clear()

    def on_headers_finished(self) -> None:
        part = self.part
        _kind, options = parse_options_header(bytes(part.headers))
        if b"name" not in options:
            raise _invalid("", "a part without a name (Content-Disposition: form-data; name=...)")
        part.name = options[b"name"].decode("utf-8", "replace")
        if part.name != "files":
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise _invalid(part.name, "unknown form field: only 'files' parts")
            return
        if sum(p.name == "files" for p in self.parts) > self.max_files:
            limit = self.max_files
            raise TooManyFilesError(f"too many files: over the limit of {limit} per batch")
        raw = options.get(b"filename")
        if part.headers_cut:
            part.refused = f"its part headers are over {HEADER_LIMIT:,} bytes"
            if raw is not None:
                part.filename = raw.decode("utf-8", "replace")[:NAME_LIMIT]
        elif raw is None:
            # A text part: its bytes are not a file's (curl's -F files=<a.jpg, or a typo).
            # Refused at once, naming it: the request is wrong, not the photo.
            index = sum(p.name == "files" for p in self.parts) - 1
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "files", index),
                        "msg": "a files part without a file name: send it as a file "
                        '(Content-Disposition: form-data; name="files"; filename="...")',
                    }
                ]
            )
        else:
            name = raw.decode("utf-8", "replace")
            part.filename = name[:NAME_LIMIT]
            if len(name) > NAME_LIMIT:
                part.refused = (
                    f"file name is {len(name):,} characters, over the limit of {NAME_LIMIT}"
                )
        if part.refused is None:
            part.file = SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed by BatchForm)
            self.files.append(part.file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        if part.file is None:
            return  # a field, or a part refused already: counted, not kept
        if part.size > self.max_file_bytes:
            # Over the per-photo limit: drop what was kept, keep only its size (the pipeline
            # rejects it as too large, with the same reason as any other).
            self.pending = [(f, b) for f, b in self.pending if f is not part.file]
            part.file.close()
            self.files.remove(part.file)
            part.file = None
            return
        self.pending.append((part.file, data[start:end]))


async def read_batch(
    stream: AsyncIterator[bytes], content_type: str, max_files: int, max_file_bytes: int
) -> BatchForm:
    """The uploads of a multipart batch body, read from ``stream`` as it arrives. A part over
    ``max_file_bytes`` is never kept past that many bytes; its entry is rejected as too large."""
    _kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _invalid("", "no boundary in the multipart Content-Type")
    reader = _Reader(max_files, max_file_bytes)
    callbacks: MultipartCallbacks = {
        "on_part_begin": reader.on_part_begin,
        "on_header_field": reader.on_header_field,
        "on_header_value": reader.on_header_value,
        "on_header_end": reader.on_header_end,
        "on_headers_finished": reader.on_headers_finished,
        "on_part_data": reader.on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        # Headers are capped here per part (HEADER_LIMIT), not by the parser, which would fail
        # the whole body on one long file name; the guard bounds the body.
        parser.max_header_size = sys.maxsize
        parser.max_header_count = 64
        async for chunk in stream:
            parser.write(chunk)
            for file, data in reader.pending:
                await run_in_threadpool(file.write, data)
            reader.pending.clear()
        parser.finalize()
        for file in reader.files:
            file.seek(0)
    except BaseException as exc:
        for file in reader.files:
            file.close()
        if isinstance(exc, FormParserError):
            raise _invalid("", f"invalid multipart data: {exc}") from exc
        raise
    unknown = [p.name for p in reader.parts if p.name != "files"]
    if unknown:
        for file in reader.files:
            file.close()
        raise _invalid(unknown[0], "unknown form field: only 'files' parts")
    uploads = []
    for i, part in enumerate(reader.parts):
        name = part.filename or f"photo-{i}"
        source = OpenFile(part.file or io.BytesIO(), part.size)
        uploads.append(Upload(name, source, refused=part.refused))
    received = sum(p.size for p in reader.parts)
    kept = sum(p.size for p in reader.parts if p.file is not None)
    return BatchForm(uploads, reader.files, received, kept)
