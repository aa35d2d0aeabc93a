"""Tests of the sans-IO multipart/related parser."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from dicomslide.errors import ProtocolError
from dicomslide.sources.multipart import (
    MultipartParser,
    Part,
    boundary_from_content_type,
    parse_content_type,
    transfer_syntax_from_content_type,
)

BOUNDARY = "0b5e3c6f9a2d4e7f8c1b0a9d8e7f6c5b4a3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
JPEG_TYPE = "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"


def build(
    bodies: list[bytes],
    *,
    boundary: str = BOUNDARY,
    content_length: bool = True,
    newline: bytes = b"\r\n",
    preamble: bytes = b"",
    epilogue: bytes = b"",
    padding: bytes = b"",
    close: bool = True,
) -> bytes:
    """Encode a multipart/related body the way Orthanc does (optionally varied)."""
    out = bytearray(preamble)
    dash = b"--" + boundary.encode()
    for number, body in enumerate(bodies, 1):
        if out:
            out += newline
        out += dash + padding + newline
        out += f"Content-Location: http://x/frames/{number}".encode() + newline
        out += f"Content-Type: {JPEG_TYPE}".encode() + newline
        if content_length:
            out += f"Content-Length: {len(body)}".encode() + newline
        out += b"MIME-Version: 1.0" + newline + newline + body
    if close:
        if out:
            out += newline
        out += dash + b"--" + newline + epilogue
    return bytes(out)


def parse(data: bytes, cuts: list[int], **kwargs: int | bool) -> list[Part]:
    parser = MultipartParser(BOUNDARY, **kwargs)
    parts: list[Part] = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        parts.extend(parser.feed(data[previous:cut]))
        previous = cut
    parser.close()
    assert parser.finished
    assert parser.parts_seen == len(parts)
    return parts


def feed_many(parser: MultipartParser, chunk: bytes, times: int) -> None:
    for _ in range(times):
        parser.feed(chunk)


# Bodies that contain near-misses of the delimiter, line breaks and dashes.
_TRICKY = [
    b"\r\n",
    b"\n",
    b"\r",
    b"--",
    b"\r\n--",
    b"\n--",
    ("\r\n--" + BOUNDARY[:-1]).encode(),
    ("\n--" + BOUNDARY[:10]).encode(),
    ("--" + BOUNDARY).encode(),  # not at a line start: content
    ("\r\n--" + BOUNDARY + "X").encode(),  # boundary followed by other bytes: content
    ("\r\n--" + BOUNDARY + "-X").encode(),
]
body_strategy = st.lists(
    st.one_of(st.binary(max_size=40), st.sampled_from(_TRICKY)), max_size=6
).map(b"".join)


def holds_no_delimiter(body: bytes, newline: bytes) -> bool:
    """Whether `body`, followed by a delimiter line, contains no delimiter of its own."""
    text = body + newline
    needle = b"\n--" + BOUNDARY.encode()
    at = text.find(needle)
    while at >= 0:
        after = text[at + len(needle) : at + len(needle) + 2]
        if after == b"--" or after[:1] in (b"", b" ", b"\t", b"\r", b"\n"):
            return False
        at = text.find(needle, at + 1)
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(body_strategy, max_size=5),
    content_length=st.booleans(),
    lf_only=st.booleans(),
    preamble=st.sampled_from([b"", b"preamble text", b"junk\r\nmore junk\r\n"]),
    padding=st.sampled_from([b"", b" ", b" \t "]),
    data=st.data(),
)
def test_random_parts_any_chunking(
    bodies: list[bytes],
    content_length: bool,
    lf_only: bool,
    preamble: bytes,
    padding: bytes,
    data: st.DataObject,
) -> None:
    newline = b"\n" if lf_only else b"\r\n"
    if not content_length:
        # Without a length the message is unambiguous only if no body holds a delimiter.
        assume(all(holds_no_delimiter(body, newline) for body in bodies))
    message = build(
        bodies,
        content_length=content_length,
        newline=newline,
        preamble=preamble,
        padding=padding,
        epilogue=b"epilogue \r\n--" + BOUNDARY.encode() + b"\r\n garbage",
    )
    cuts = data.draw(st.lists(st.integers(0, len(message)), max_size=12))
    parts = parse(message, cuts)
    assert [part.body for part in parts] == bodies
    for number, part in enumerate(parts, 1):
        assert part.content_type == JPEG_TYPE
        assert part.content_location == f"http://x/frames/{number}"
        assert part.headers["mime-version"] == "1.0"


@pytest.mark.parametrize("content_length", [True, False])
@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_split_at_every_byte(content_length: bool, newline: bytes) -> None:
    bodies = [b"\xff\xd8 frame one \r\n--" + BOUNDARY[:5].encode(), b"", b"two\r\n\r\n\xff\xd9"]
    message = build(bodies, content_length=content_length, newline=newline, preamble=b"pre")
    for cut in range(len(message) + 1):
        assert [part.body for part in parse(message, [cut])] == bodies, cut
    byte_by_byte = parse(message, list(range(len(message))))
    assert [part.body for part in byte_by_byte] == bodies


def test_parts_are_returned_as_soon_as_complete() -> None:
    message = build([b"a" * 100, b"b" * 100])
    parser = MultipartParser(BOUNDARY)
    second_start = message.index(b"b" * 100)
    first = parser.feed(message[:second_start])
    assert [part.body for part in first] == [b"a" * 100]
    assert parser.parts_seen == 1
    assert not parser.finished
    assert [part.body for part in parser.feed(message[second_start:])] == [b"b" * 100]
    assert parser.finished
    parser.close()


def test_orthanc_style_response() -> None:
    content_type = (
        f'multipart/related; type="{JPEG_TYPE}"; boundary={BOUNDARY}'  # as Orthanc sends it
    )
    boundary = boundary_from_content_type(content_type)
    assert boundary == BOUNDARY
    assert transfer_syntax_from_content_type(content_type) == "1.2.840.10008.1.2.4.50"
    message = build([b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"] * 3)
    parts = parse(message, [17, 4000])
    assert len(parts) == 3
    assert parts[0].headers["content-length"] == str(len(parts[0].body))
    assert transfer_syntax_from_content_type(parts[0].content_type or "") == (
        "1.2.840.10008.1.2.4.50"
    )


@pytest.mark.parametrize("content_length", [True, False])
def test_truncated_body_raises_at_close(content_length: bool) -> None:
    message = build([b"x" * 50, b"y" * 50], content_length=content_length)
    end = message.rindex(b"--\r\n")  # the close delimiter is complete only after its "--"
    for cut in range(end + 1):
        parser = MultipartParser(BOUNDARY)
        parser.feed(message[:cut])
        with pytest.raises(ProtocolError, match="complete part"):
            parser.close()
    parser = MultipartParser(BOUNDARY)
    parser.feed(message[: message.index(b"y" * 50)])
    with pytest.raises(ProtocolError, match=r"after \d+ bytes and 1 complete part "):
        parser.close()


def test_empty_input_is_truncated() -> None:
    parser = MultipartParser(BOUNDARY)
    assert parser.feed(b"") == []
    with pytest.raises(ProtocolError, match="0 complete parts"):
        parser.close()


def test_zero_parts() -> None:
    assert parse(f"--{BOUNDARY}--".encode(), []) == []


@pytest.mark.parametrize("content_length", [True, False])
def test_oversize_part(content_length: bool) -> None:
    message = build([b"z" * 1000], content_length=content_length)
    with pytest.raises(ProtocolError, match="max_part_size"):
        parse(message, list(range(0, len(message), 64)), max_part_size=999)
    assert [part.body for part in parse(message, [], max_part_size=1000)] == [b"z" * 1000]


def test_oversize_part_is_not_buffered() -> None:
    # Without Content-Length the parser must give up once max_part_size bytes are buffered,
    # not wait for a delimiter that never comes.
    parser = MultipartParser(BOUNDARY, max_part_size=10_000)
    parser.feed(build([], close=False) + f"--{BOUNDARY}\r\n\r\n".encode())
    with pytest.raises(ProtocolError, match="max_part_size"):
        feed_many(parser, b"q" * 1000, 11)  # 11000 bytes: past the limit plus a delimiter
    with pytest.raises(ProtocolError, match="earlier error"):
        parser.feed(b"more")


def test_content_length_mismatch() -> None:
    message = build([b"0123456789"]).replace(b"Content-Length: 10", b"Content-Length: 8")
    with pytest.raises(ProtocolError, match="Content-Length 8"):
        parse(message, [])
    longer = build([b"0123456789"]).replace(b"Content-Length: 10", b"Content-Length: 12")
    with pytest.raises(ProtocolError, match="Content-Length 12"):
        parse(longer, [])


@pytest.mark.parametrize(
    "header",
    [b"No colon here", b": empty name", b"Bad Name: x", b"Content-Length: ten"],
)
def test_malformed_headers(header: bytes) -> None:
    message = f"--{BOUNDARY}\r\n".encode() + header + b"\r\n\r\nbody\r\n--" + BOUNDARY.encode()
    with pytest.raises(ProtocolError, match="multipart part 1"):
        parse(message + b"--", [])


def test_header_block_without_end_is_bounded() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(f"--{BOUNDARY}\r\n".encode())
    with pytest.raises(ProtocolError, match="end of headers"):
        feed_many(parser, b"X-Long: " + b"a" * 1000 + b"\r\n", 66)  # just past 64 KiB


def test_garbage_after_boundary() -> None:
    # Without a length, a boundary string followed by other bytes is body content, so this
    # body never ends; with a length, the parser knows a delimiter must be there.
    junk = f"--{BOUNDARY}\r\n\r\nbody\r\n--{BOUNDARY}  x\r\n".encode()
    with pytest.raises(ProtocolError, match="inside the body of a part"):
        parse(junk, [])
    with_length = junk.replace(b"\r\n\r\nbody", b"\r\nContent-Length: 4\r\n\r\nbody")
    with pytest.raises(ProtocolError, match="does not follow"):
        parse(with_length, [])


def test_headers_folding_duplicates_and_no_headers() -> None:
    message = (
        f"--{BOUNDARY}\r\nX-A: one\r\n  two\r\nX-B: 1\r\nx-b: 2\r\n\r\nfirst\r\n"
        f"--{BOUNDARY}\r\n\r\nsecond\r\n--{BOUNDARY}--"
    ).encode()
    first, second = parse(message, [])
    assert first.headers == {"x-a": "one two", "x-b": "1, 2"}
    assert first.content_type is None
    assert second == Part({}, b"second")


def test_preamble_is_not_buffered() -> None:
    parser = MultipartParser(BOUNDARY)
    for _ in range(1000):
        parser.feed(b"p" * 1000 + b"\r\n")
    assert len(parser._buf) < 200  # white-box: the preamble is dropped as it arrives
    parser.feed(f"\r\n--{BOUNDARY}\r\n\r\nok\r\n--{BOUNDARY}--".encode())
    assert parser.finished


def test_large_body_in_small_chunks() -> None:
    # Speed is measured in benchmarks/, not asserted here; this checks the bytes survive.
    body = bytes(range(256)) * 32768  # 8 MiB
    for content_length in (True, False):
        message = build([body], content_length=content_length)
        parts = parse(message, list(range(0, len(message), 4096)))
        assert parts[0].body == body


def test_invalid_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="boundary"):
        MultipartParser("")
    with pytest.raises(ValueError, match="boundary"):
        MultipartParser("a\r\nb")
    with pytest.raises(ValueError, match="max_part_size"):
        MultipartParser("a", max_part_size=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("image/jpeg", ("image/jpeg", {})),
        ("Image/JPEG ; Transfer-Syntax=1.2.3", ("image/jpeg", {"transfer-syntax": "1.2.3"})),
        (
            'multipart/related; type="image/jpeg; transfer-syntax=1.2"; boundary="a;b"',
            ("multipart/related", {"type": "image/jpeg; transfer-syntax=1.2", "boundary": "a;b"}),
        ),
        ('text/plain; x="a\\"b"; y', ("text/plain", {"x": 'a"b'})),
        ("text/plain; x=1; x=2", ("text/plain", {"x": "1"})),
    ],
)
def test_parse_content_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(
    ("value", "boundary"),
    [
        ("multipart/related; boundary=abc", "abc"),
        ('multipart/related; type="application/octet-stream"; boundary="a b:c"', "a b:c"),
        ("Multipart/Related;boundary=xyz;type=image/jpeg", "xyz"),
    ],
)
def test_boundary_from_content_type(value: str, boundary: str) -> None:
    assert boundary_from_content_type(value) == boundary


@pytest.mark.parametrize(
    "value",
    [
        "application/dicom+json",
        "multipart/mixed; boundary=abc",
        "multipart/related",
        'multipart/related; boundary=""',
    ],
)
def test_boundary_from_content_type_errors(value: str) -> None:
    with pytest.raises(ProtocolError):
        boundary_from_content_type(value)


@pytest.mark.parametrize(
    ("value", "uid"),
    [
        (f'multipart/related; type="{JPEG_TYPE}"; boundary=x', "1.2.840.10008.1.2.4.50"),
        (
            'multipart/related; type="image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"',
            "1.2.840.10008.1.2.4.90",
        ),
        (
            'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50',
            "1.2.840.10008.1.2.4.50",
        ),
        ("application/octet-stream; transfer-syntax=1.2.840.10008.1.2", "1.2.840.10008.1.2"),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', None),
        ("image/jpeg", None),
        ('image/jpeg; type="x; transfer-syntax=1.2"', None),
    ],
)
def test_transfer_syntax_from_content_type(value: str, uid: str | None) -> None:
    assert transfer_syntax_from_content_type(value) == uid


def test_line_break_style_decides_what_belongs_to_the_body() -> None:
    # The CR before a delimiter belongs to the delimiter in CRLF messages only.
    bodies = [b"ends in CR\r", b"\r"]
    lf_message = build(bodies, content_length=False, newline=b"\n")
    assert [part.body for part in parse(lf_message, [])] == bodies
    crlf_message = build(bodies, content_length=False)
    assert [part.body for part in parse(crlf_message, [])] == bodies


def test_early_part_is_returned_before_its_delimiter() -> None:
    message = build([b"first body", b"second"])
    end_of_first = message.index(b"first body") + len(b"first body")
    for early, expected in ((False, []), (True, [b"first body"])):
        parser = MultipartParser(BOUNDARY, early=early)
        assert [p.body for p in parser.feed(message[:end_of_first])] == expected
        assert parser.unconfirmed is early
        rest = [p.body for p in parser.feed(message[end_of_first:])]
        assert rest == ([b"second"] if early else [b"first body", b"second"])
        parser.close()
        assert not parser.unconfirmed
        assert not parser.rejected_part


@pytest.mark.parametrize("close", [False, True])
def test_early_part_not_followed_by_delimiter_is_rejected(close: bool) -> None:
    message = build([b"0123456789", b"second"], close=False)
    end_of_first = message.index(b"0123456789") + 10
    parser = MultipartParser(BOUNDARY, early=True)
    assert [p.body for p in parser.feed(message[:end_of_first])] == [b"0123456789"]
    assert not parser.rejected_part
    if close:  # the body is cut right after the part: truncated, but the part is whole
        assert parser.feed(b"\r") == []
        with pytest.raises(ProtocolError, match="ended right after the body of a part"):
            parser.close()
        assert not parser.rejected_part
    else:
        with pytest.raises(ProtocolError, match="part 1 declares Content-Length 10"):
            parser.feed(b"junk" + message[end_of_first:])
        assert parser.rejected_part


@given(
    bodies=st.lists(st.binary(max_size=64), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8),
)
def test_early_parts_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    message = build(bodies)
    parts = parse(message, [c for c in cuts if c <= len(message)], early=True)
    assert [p.body for p in parts] == bodies
