"""Sans-IO incremental parser for ``multipart/related`` response bodies (RFC 2046, RFC 2387).

DICOMweb servers answer frame and bulk data requests with ``multipart/related`` bodies; the
parser turns the byte stream, fed in chunks of any size, into :class:`Part` objects as soon as
each part is complete, so the caller can hand frames to decoders while the rest of the response
is still on the wire. It knows nothing about sockets or event loops.

Leniency
--------
Servers differ (Orthanc, Google Healthcare, dcm4chee, ...), so the parser accepts, where the
meaning is unambiguous:

* a preamble before the first delimiter, and an epilogue after the close delimiter (ignored);
* LF-only line breaks instead of CRLF (decided per message from the first delimiter line);
* transport padding (spaces and tabs) after a delimiter;
* parts with or without ``Content-Length``. With it, the body is taken by length and only the
  delimiter right after it is checked (no scan through the body); without it, the body is
  scanned for the next delimiter.

It is strict where being lenient would silently corrupt frames: a ``Content-Length`` that is not
followed by a delimiter, malformed header lines, parts larger than ``max_part_size`` and bodies
that end before the close delimiter all raise :class:`dicomslide.errors.ProtocolError`.

Memory
------
Unconsumed bytes live in one ``bytearray``; consumed bytes are dropped from its front once per
:meth:`MultipartParser.feed` (CPython does that without moving the rest), searches resume where
the previous one stopped, and each body is copied exactly once, into its :class:`Part`. Bytes of
the preamble and the epilogue are discarded as they arrive, so nothing is buffered without a
bound.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Final

from dicomslide.errors import ProtocolError, ResponseTooLargeError

__all__ = [
    "MultipartParser",
    "Part",
    "boundary_from_content_type",
    "parse_content_type",
    "transfer_syntax_from_content_type",
]

# Headers of one part are a handful of short lines; a larger header block means we are not
# reading what we think we are reading, and must not buffer it without a bound.
_MAX_HEADER_BYTES: Final = 64 * 1024
# RFC 2046 allows "transport padding" (linear white space) after a delimiter; a few bytes are
# plausible, kilobytes are not.
_MAX_PADDING: Final = 1024

_LWSP: Final = b" \t"
# End of the header block: the line break ending the last header line, then an empty line.
_HEADER_END_RE: Final = re.compile(rb"\n\r?\n")
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Part:
    """One body part of a ``multipart/related`` message.

    Parameters
    ----------
    headers: dict[str, str]
        Header fields of the part, names lower-cased, values stripped; repeated fields are
        joined with ``", "``
    body: bytes
        Content of the part, without the line break that belongs to the next delimiter
    """

    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str | None:
        """Value of the part's ``Content-Type`` header, or ``None`` if it has none."""
        return self.headers.get("content-type")

    @property
    def content_location(self) -> str | None:
        """Value of the part's ``Content-Location`` header, or ``None`` if it has none."""
        return self.headers.get("content-location")


class _State(enum.Enum):
    PREAMBLE = enum.auto()
    DELIMITER_TAIL = enum.auto()
    HEADERS = enum.auto()
    BODY = enum.auto()
    CHECK = enum.auto()  # a part was returned early; its delimiter has not arrived yet
    EPILOGUE = enum.auto()
    FAILED = enum.auto()


class _NeedMore(Exception):
    """Internal: the buffer ends before the current step can decide."""


class MultipartParser:
    """Incremental parser of a ``multipart/related`` body.

    Feed the body in chunks of any size with :meth:`feed`, which returns the parts completed by
    each chunk in message order; call :meth:`close` at the end of the body to detect truncated
    responses.

    Parameters
    ----------
    boundary: str
        Boundary parameter of the response's ``Content-Type``
        (see :func:`boundary_from_content_type`)
    max_part_size: int, optional
        Largest body of one part accepted, in bytes; a larger part raises
        :class:`~dicomslide.errors.ProtocolError` before it is buffered
    early: bool, optional
        Return a part with ``Content-Length`` as soon as that many body bytes are in, before
        the delimiter after it; the delimiter is still checked, by a later :meth:`feed` or
        :meth:`close`, and :attr:`rejected_part` tells when that check failed

    Raises
    ------
    ValueError
        If `boundary` is empty or contains a line break, or `max_part_size` is not positive
    """

    def __init__(
        self, boundary: str, *, max_part_size: int = 1 << 30, early: bool = False
    ) -> None:
        if not boundary or "\r" in boundary or "\n" in boundary:
            raise ValueError(f"invalid multipart boundary {boundary!r}")
        if max_part_size < 1:
            raise ValueError(f"max_part_size must be positive, not {max_part_size}")
        try:
            dash_boundary = b"--" + boundary.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"multipart boundary {boundary!r} is not ASCII") from None
        self._boundary = boundary
        self._max_part_size = max_part_size
        self._dash_boundary: bytes = dash_boundary
        # Every delimiter after the first starts with a line break; searching for the LF form
        # finds both CRLF and LF-only messages.
        self._delimiter: bytes = b"\n" + dash_boundary
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buf
        self._scan_pos = 0  # where the next search in _buf may start
        self._at_stream_start = True
        self._crlf = True  # line-break style, decided by the first delimiter line
        self._state = _State.PREAMBLE
        self._headers: dict[str, str] = {}
        self._content_length: int | None = None
        self._parts_seen = 0
        self._bytes_fed = 0
        self._early = early
        self._check_length = 0  # Content-Length of the part returned before its delimiter
        self._rejected = False

    @property
    def parts_seen(self) -> int:
        """Number of complete parts returned so far."""
        return self._parts_seen

    @property
    def unconfirmed(self) -> bool:
        """Whether the last part returned still waits for the delimiter that must follow it."""
        return self._state is _State.CHECK

    @property
    def rejected_part(self) -> bool:
        """Whether a part already returned turned out not to be followed by a delimiter.

        Its bytes are wrong (the ``Content-Length`` lied): whoever kept them must drop them.
        """
        return self._rejected

    @property
    def finished(self) -> bool:
        """Whether the close delimiter has been seen."""
        return self._state is _State.EPILOGUE

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Part]:
        """Consume the next bytes of the body.

        Parameters
        ----------
        chunk: bytes | bytearray | memoryview
            Next bytes of the body, of any length (may split a delimiter or header anywhere)

        Returns
        -------
        list[Part]
            Parts completed by this chunk, in message order (often empty)

        Raises
        ------
        ProtocolError
            If the body is malformed or a part exceeds `max_part_size`; the parser cannot be
            used after that
        """
        if self._state is _State.FAILED:
            raise ProtocolError("multipart parser used after an earlier error")
        if self._state is _State.EPILOGUE or not chunk:
            return []
        self._bytes_fed += len(chunk)
        self._buf += chunk
        parts: list[Part] = []
        try:
            self._run(parts)
        except ProtocolError:
            self._state = _State.FAILED
            raise
        self._compact()
        return parts

    def close(self) -> None:
        """Declare the end of the body.

        Raises
        ------
        ProtocolError
            If the close delimiter has not been seen (truncated or not a multipart body)
        """
        if self._state is _State.EPILOGUE:
            return
        where = {
            _State.PREAMBLE: "before the first boundary",
            _State.DELIMITER_TAIL: "inside a boundary line",
            _State.HEADERS: "inside the headers of a part",
            _State.BODY: "inside the body of a part",
            _State.CHECK: "right after the body of a part",
            _State.FAILED: "after a parse error",
        }[self._state]
        # In CHECK state the last part is whole by its Content-Length and nothing contradicts
        # it (rejected_part stays False): the body was cut after it.
        raise ProtocolError(
            f"multipart body ended {where} without the closing '--{self._boundary}--' "
            f"delimiter after {self._bytes_fed} bytes and {self._parts_seen} complete "
            f"part{'s' if self._parts_seen != 1 else ''} (truncated response?)"
        )

    # -- internals -----------------------------------------------------------------------

    def _compact(self) -> None:
        if self._pos:
            # Deleting from the front of a bytearray only moves its start pointer in CPython.
            del self._buf[: self._pos]
            self._scan_pos -= self._pos
            self._pos = 0

    def _run(self, parts: list[Part]) -> None:
        while True:
            try:
                if self._state is _State.PREAMBLE:
                    self._step_preamble()
                elif self._state is _State.DELIMITER_TAIL:
                    self._step_delimiter_tail()
                elif self._state is _State.HEADERS:
                    self._step_headers()
                elif self._state is _State.BODY:
                    part = self._step_body()
                    if part is not None:
                        parts.append(part)
                elif self._state is _State.CHECK:
                    self._step_check()
                else:
                    # Epilogue: whatever follows the close delimiter is ignored.
                    self._pos = len(self._buf)
                    return
            except _NeedMore:
                return

    def _step_preamble(self) -> None:
        buf = self._buf
        if self._at_stream_start:
            # Only at the very start of the body may the first delimiter lack a line break.
            dash = self._dash_boundary
            if len(buf) < len(dash) and dash.startswith(buf):
                raise _NeedMore
            if buf.startswith(dash) and self._looks_like_delimiter_tail(len(dash)):
                self._at_stream_start = False
                self._pos = len(dash)
                self._state = _State.DELIMITER_TAIL
                return
            self._at_stream_start = False
        while True:
            idx = buf.find(self._delimiter, self._scan_pos)
            if idx < 0:
                # Preamble text is meaningless: drop it, keeping what could start a delimiter.
                keep_from = max(self._pos, len(buf) - len(self._delimiter) + 1)
                self._pos = self._scan_pos = keep_from
                raise _NeedMore
            end = idx + len(self._delimiter)
            try:
                is_delimiter = self._looks_like_delimiter_tail(end)
            except _NeedMore:
                self._pos = self._scan_pos = idx
                raise
            if is_delimiter:
                self._pos = end
                self._state = _State.DELIMITER_TAIL
                return
            self._scan_pos = idx + 1

    def _looks_like_delimiter_tail(self, at: int) -> bool:
        """Whether the bytes after a boundary string make it a delimiter (or close delimiter).

        RFC 2046 forbids the boundary as the prefix of any body line, but a server may not know
        that a body happens to contain it followed by other bytes; that is body content.
        """
        buf = self._buf
        n = len(buf)
        i = at
        if i >= n:
            raise _NeedMore
        if buf[i] == 0x2D:  # "-"
            if i + 1 >= n:
                raise _NeedMore
            return buf[i + 1] == 0x2D
        while i < n and buf[i] in _LWSP:
            i += 1
            if i - at > _MAX_PADDING:
                return False
        if i >= n:
            raise _NeedMore
        if buf[i] == 0x0A:
            return True
        if buf[i] == 0x0D:
            if i + 1 >= n:
                raise _NeedMore
            return buf[i + 1] == 0x0A
        return False

    def _step_delimiter_tail(self) -> None:
        """Consume what follows a boundary string: ``--`` or padding and a line break."""
        buf = self._buf
        n = len(buf)
        i = self._pos
        if i + 2 > n:
            raise _NeedMore
        if buf[i] == 0x2D and buf[i + 1] == 0x2D:
            self._state = _State.EPILOGUE
            self._pos = n
            return
        while i < n and buf[i] in _LWSP:
            i += 1
            if i - self._pos > _MAX_PADDING:
                raise ProtocolError(
                    f"more than {_MAX_PADDING} bytes of padding after multipart boundary"
                )
        if i >= n:
            raise _NeedMore
        if buf[i] == 0x0D:
            if i + 1 >= n:
                raise _NeedMore
            if buf[i + 1] != 0x0A:
                raise self._bad_delimiter(i)
            crlf, i = True, i + 2
        elif buf[i] == 0x0A:
            crlf, i = False, i + 1
        else:
            raise self._bad_delimiter(i)
        if self._parts_seen == 0:
            self._crlf = crlf
        self._pos = self._scan_pos = i
        self._state = _State.HEADERS

    def _bad_delimiter(self, at: int) -> ProtocolError:
        excerpt = bytes(self._buf[at : at + 16])
        return ProtocolError(
            f"multipart boundary '--{self._boundary}' followed by {excerpt!r} instead of a "
            "line break or '--'"
        )

    def _step_headers(self) -> None:
        buf = self._buf
        start = self._pos
        n = len(buf)
        # A part may have no headers at all: the empty line follows the delimiter line.
        if n - start < 2:
            if n > start and buf[start] == 0x0A:
                self._finish_headers(start, start + 1)
                return
            raise _NeedMore
        if buf[start] == 0x0A:
            self._finish_headers(start, start + 1)
            return
        if buf[start] == 0x0D and buf[start + 1] == 0x0A:
            self._finish_headers(start, start + 2)
            return
        match = _HEADER_END_RE.search(buf, max(start, self._scan_pos))
        if match is None:
            if n - start > _MAX_HEADER_BYTES:
                raise ProtocolError(
                    f"multipart part {self._parts_seen + 1} has no end of headers within "
                    f"{_MAX_HEADER_BYTES} bytes"
                )
            # The two-or-three-byte end marker may straddle the next chunk.
            self._scan_pos = max(start, n - 2)
            raise _NeedMore
        self._finish_headers(match.start() + 1, match.end())

    def _finish_headers(self, block_end: int, body_start: int) -> None:
        raw = bytes(self._buf[self._pos : block_end])
        headers = _parse_header_block(raw, self._parts_seen + 1)
        content_length: int | None = None
        value = headers.get("content-length")
        if value is not None:
            if not value.isdigit() or not value.isascii():
                raise ProtocolError(
                    f"multipart part {self._parts_seen + 1} has invalid Content-Length {value!r}"
                )
            content_length = int(value)
            if content_length > self._max_part_size:
                raise self._too_large(content_length)
        self._headers = headers
        self._content_length = content_length
        self._pos = self._scan_pos = body_start
        self._state = _State.BODY

    def _too_large(self, size: int) -> ProtocolError:
        return ResponseTooLargeError(
            f"multipart part {self._parts_seen + 1} is larger than max_part_size "
            f"({size} > {self._max_part_size} bytes)",
            "",
            self._max_part_size,
        )

    def _step_body(self) -> Part | None:
        if self._content_length is not None:
            return self._step_body_with_length(self._content_length)
        return self._step_body_scan()

    def _step_body_with_length(self, length: int) -> Part:
        start = self._pos
        end = start + length
        if len(self._buf) < end:
            raise _NeedMore
        try:
            after = self._delimiter_after(end, length, self._parts_seen + 1)
        except _NeedMore:
            if not self._early:
                raise
            # Hand the body on now (its decoding overlaps the rest of the transfer); the
            # delimiter that must follow is checked when it arrives (_step_check).
            part = self._emit(start, end, end)
            self._state = _State.CHECK
            self._check_length = length
            return part
        return self._emit(start, end, after)

    def _step_check(self) -> None:
        try:
            after = self._delimiter_after(self._pos, self._check_length, self._parts_seen)
        except ProtocolError:
            self._rejected = True
            raise
        self._pos = self._scan_pos = after
        self._state = _State.DELIMITER_TAIL

    def _delimiter_after(self, end: int, length: int, part_number: int) -> int:
        """Position after the delimiter that must start at `end` (after a CR, if any)."""
        buf = self._buf
        if len(buf) <= end:
            raise _NeedMore
        tail = end + 1 if buf[end] == 0x0D else end
        delimiter = self._delimiter
        seen = buf[tail : tail + len(delimiter)]
        # Fail as soon as the bytes after the body cannot be a delimiter, not only when the
        # whole delimiter could have arrived.
        if not delimiter.startswith(seen):
            raise self._length_mismatch(length, part_number)
        if len(seen) < len(delimiter):
            raise _NeedMore
        if not self._looks_like_delimiter_tail(tail + len(delimiter)):
            raise self._length_mismatch(length, part_number)
        return tail + len(delimiter)

    def _length_mismatch(self, length: int, part_number: int) -> ProtocolError:
        return ProtocolError(
            f"multipart part {part_number} declares Content-Length {length} but the "
            f"boundary '--{self._boundary}' does not follow that many bytes"
        )

    def _step_body_scan(self) -> Part | None:
        buf = self._buf
        start = self._pos
        delimiter = self._delimiter
        while True:
            idx = buf.find(delimiter, self._scan_pos)
            if idx < 0:
                # Bytes that could begin a delimiter (and its CR) are not yet known to be body.
                resume = max(start, len(buf) - len(delimiter) + 1)
                body_so_far = resume - start - 1
                if body_so_far > self._max_part_size:
                    raise self._too_large(body_so_far)
                self._scan_pos = resume
                raise _NeedMore
            after = idx + len(delimiter)
            try:
                is_delimiter = self._looks_like_delimiter_tail(after)
            except _NeedMore:
                self._scan_pos = idx
                raise
            if not is_delimiter:
                self._scan_pos = idx + 1
                continue
            end = idx
            if self._crlf and end > start and buf[end - 1] == 0x0D:
                end -= 1
            if end - start > self._max_part_size:
                raise self._too_large(end - start)
            return self._emit(start, end, after)

    def _emit(self, start: int, end: int, next_pos: int) -> Part:
        with memoryview(self._buf) as view:
            body = bytes(view[start:end])
        part = Part(self._headers, body)
        self._parts_seen += 1
        self._headers = {}
        self._content_length = None
        self._pos = self._scan_pos = next_pos
        self._state = _State.DELIMITER_TAIL
        return part


def _parse_header_block(raw: bytes, part_number: int) -> dict[str, str]:
    # Header values are ASCII by the RFCs; latin-1 never fails and keeps every byte visible.
    text = raw.decode("latin-1")
    headers: dict[str, str] = {}
    last: str | None = None
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line:
            continue
        if line[0] in " \t":
            # Obsolete line folding: continuation of the previous field's value.
            if last is None:
                raise ProtocolError(
                    f"multipart part {part_number} starts its headers with a continuation "
                    f"line {line[:60]!r}"
                )
            headers[last] = f"{headers[last]} {line.strip()}".strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise ProtocolError(
                f"multipart part {part_number} has a malformed header line {line[:60]!r}"
            )
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
        last = key
    return headers


def _split_params(text: str) -> list[str]:
    """Split at ``;`` outside quoted strings."""
    pieces: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif in_quotes and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == ";" and not in_quotes:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return re.sub(r"\\(.)", r"\1", inner) if "\\" in inner else inner
    if value.startswith('"'):
        # Unterminated quote: keep what is there rather than fail on a cosmetic defect.
        return value[1:]
    return value


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a ``Content-Type`` (or single ``Accept`` media range) into type and parameters.

    Parameters
    ----------
    value: str
        Header value, e.g. ``'multipart/related; type="image/jpeg; transfer-syntax=1.2"'``

    Returns
    -------
    tuple[str, dict[str, str]]
        Media type, lower-cased and stripped, and parameters with lower-cased names and
        unquoted values (a ``;`` inside a quoted value does not split it). Parameters without
        ``=`` are ignored; of repeated parameters the first wins.

    Examples
    --------
    >>> parse_content_type('Multipart/Related; type="image/jpeg; a=b"; boundary=xyz')
    ('multipart/related', {'type': 'image/jpeg; a=b', 'boundary': 'xyz'})
    """
    pieces = _split_params(value)
    media_type = pieces[0].strip().lower()
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        params.setdefault(name, _unquote(raw.strip()))
    return media_type, params


def boundary_from_content_type(value: str) -> str:
    """Return the boundary of a ``multipart/related`` ``Content-Type``.

    Parameters
    ----------
    value: str
        ``Content-Type`` header value of a response

    Returns
    -------
    str
        The boundary parameter, unquoted

    Raises
    ------
    ProtocolError
        If the media type is not ``multipart/related`` or there is no usable boundary
    """
    media_type, params = parse_content_type(value)
    if media_type != "multipart/related":
        raise ProtocolError(
            f"expected a multipart/related response, got Content-Type {value[:200]!r}"
        )
    boundary = params.get("boundary", "")
    if not boundary or "\r" in boundary or "\n" in boundary or not boundary.isascii():
        raise ProtocolError(
            f"multipart/related response without a valid boundary: {value[:200]!r}"
        )
    return boundary


# Every part of a frames response carries the same Content-Type: parse it once.
@functools.lru_cache(maxsize=64)
def transfer_syntax_from_content_type(value: str) -> str | None:
    """Return the Transfer Syntax UID a ``Content-Type`` declares, if any.

    Looks at the ``transfer-syntax`` parameter of the value itself and, for
    ``multipart/related``, also inside its quoted ``type`` parameter (Orthanc puts it there:
    ``multipart/related; type="image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"``).

    Parameters
    ----------
    value: str
        ``Content-Type`` of a response or of one part

    Returns
    -------
    str | None
        The UID, or ``None`` if none is declared (a wildcard ``*`` counts as none)
    """
    media_type, params = parse_content_type(value)
    uid = params.get("transfer-syntax", "").strip()
    if uid and uid != "*":
        return uid
    inner = params.get("type")
    if media_type.startswith("multipart/") and inner:
        _, inner_params = parse_content_type(inner)
        uid = inner_params.get("transfer-syntax", "").strip()
        if uid and uid != "*":
            return uid
    return None
