"""Sans-IO construction of DICOMweb (WADO-RS, QIDO-RS) URLs, query parameters and headers.

Only strings are built here; sending them is the job of the DICOMweb source. Keeping the rules
apart makes them testable without a server: how frame lists are split so URLs stay below what
servers accept (Orthanc took ~3300 frame numbers, about 15 KB of URL, and refused 3500), which
``Accept`` header asks for frames as stored, and how URLs are stripped of credentials before they
appear in error messages.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from dicomslide import _syntaxes as ts
from dicomslide._docs import borrowed_doc
from dicomslide.errors import ArgumentError, RegionError

__all__ = [
    "ACCEPT_STORED_FRAMES",
    "MEDIA_TYPED_SYNTAXES",
    "accept_for_transfer_syntax",
    "chunk_frame_numbers",
    "frames_url",
    "instance_metadata_url",
    "is_credential_name",
    "qido_params",
    "qido_url",
    "redact_url",
    "series_metadata_url",
]

ACCEPT_STORED_FRAMES: Final = (
    'multipart/related; type="application/octet-stream"; transfer-syntax=*'
)
"""``Accept`` header asking for frames in whatever transfer syntax they are stored in."""

# Media types of compressed pixel data per PS3.18 Table 8.7.3-5 (the image-pixel and
# video-pixel productions of Section 8.7.3.5).
_MEDIA_TYPE_BY_TRANSFER_SYNTAX: Final[dict[str, str]] = {
    ts.JPEG_BASELINE: "image/jpeg",
    ts.JPEG_EXTENDED: "image/jpeg",
    ts.JPEG_LOSSLESS: "image/jpeg",
    ts.JPEG_LOSSLESS_SV1: "image/jpeg",
    ts.RLE_LOSSLESS: "image/dicom-rle",
    ts.JPEG_LS_LOSSLESS: "image/jls",
    ts.JPEG_LS_NEAR_LOSSLESS: "image/jls",
    ts.J2K_LOSSLESS: "image/jp2",
    ts.J2K: "image/jp2",
    ts.J2K_PART2_LOSSLESS: "image/jpx",
    ts.J2K_PART2: "image/jpx",
    ts.HTJ2K_LOSSLESS: "image/jphc",
    ts.HTJ2K_LOSSLESS_RPCL: "image/jphc",
    ts.HTJ2K: "image/jphc",
    ts.JPEG_XL_LOSSLESS: "image/jxl",
    ts.JPEG_XL_RECOMPRESSION: "image/jxl",
    ts.JPEG_XL: "image/jxl",
    ts.MPEG2_MAIN_ML: "video/mpeg",
    ts.MPEG2_MAIN_HL: "video/mpeg",
    ts.MPEG4_HP41: "video/mp4",
    ts.MPEG4_HP41_BD: "video/mp4",
    ts.MPEG4_HP42_2D: "video/mp4",
    ts.MPEG4_HP42_3D: "video/mp4",
    ts.MPEG4_HP42_STEREO: "video/mp4",
    ts.HEVC_MAIN: "video/H265",
    ts.HEVC_MAIN10: "video/H265",
}

MEDIA_TYPED_SYNTAXES: Final = frozenset(_MEDIA_TYPE_BY_TRANSFER_SYNTAX)
"""Transfer syntaxes that PS3.18 gives a media type of their own (``image/jpeg``, ...)."""

# Native frame bytes do not depend on how the data set around them is encoded, and PS3.18
# Section 8.7.3 forbids Implicit VR Little Endian and Explicit VR Big Endian in web services,
# so every native syntax is asked for as Explicit VR Little Endian.
_NATIVE_TRANSFER_SYNTAXES: Final = ts.NATIVE

# A query parameter name marks its value as a secret if it contains one of these...
_CREDENTIAL_SUBSTRINGS: Final = (
    "token",
    "secret",
    "password",
    "signature",
    "credential",
    "apikey",
    "api_key",
    "api-key",
)
# ...or has one of these as a whole word (as substrings they would hit harmless names).
_CREDENTIAL_WORDS: Final = frozenset({"key", "sig", "auth", "authorization", "pwd", "passwd"})
_WORD_SPLIT_RE: Final = re.compile(r"[^a-z0-9]+")


def _root(root: str) -> str:
    if not root:
        raise ArgumentError("a DICOMweb root URL must not be empty")
    return root.rstrip("/")


def _uid(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ArgumentError(f"{name} must be a non-empty string, not {value!r}")
    # UIDs are digits and dots; quoting is a no-op for them and keeps anything else from
    # changing the path structure.
    return quote(value, safe="")


def _frame_list(frame_numbers: Sequence[int]) -> str:
    if len(frame_numbers) == 0:
        raise RegionError("at least one frame number is needed")
    for number in frame_numbers:
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise RegionError(f"frame numbers are integers from 1, not {number!r}")
    return ",".join(map(str, frame_numbers))


def frames_url(
    wado_root: str, study: str, series: str, sop: str, frame_numbers: Sequence[int]
) -> str:
    """Return the WADO-RS URL retrieving frames of one instance.

    Parameters
    ----------
    wado_root: str
        Base URL of the WADO-RS service (a trailing ``/`` is ignored)
    study: str
        Study Instance UID
    series: str
        Series Instance UID
    sop: str
        SOP Instance UID
    frame_numbers: Sequence[int]
        One-based frame numbers, in the order the parts should come back

    Returns
    -------
    str
        ``{wado_root}/studies/{study}/series/{series}/instances/{sop}/frames/1,5,9``

    Raises
    ------
    ArgumentError
        If a UID is empty
    RegionError
        If `frame_numbers` is empty or holds a number below 1
    """
    return (
        f"{_root(wado_root)}/studies/{_uid('study', study)}/series/{_uid('series', series)}"
        f"/instances/{_uid('sop', sop)}/frames/{_frame_list(frame_numbers)}"
    )


def chunk_frame_numbers(
    frame_numbers: Sequence[int],
    *,
    max_frames: int,
    max_url_length: int,
    url_prefix_length: int,
) -> list[list[int]]:
    """Split frame numbers into consecutive groups that each fit one frames request.

    Parameters
    ----------
    frame_numbers: Sequence[int]
        Frame numbers in request order (order and duplicates are kept)
    max_frames: int
        Most frame numbers in one group
    max_url_length: int
        Longest URL allowed, in characters
    url_prefix_length: int
        Length of the URL before the frame list, i.e. up to and including ``frames/``

    Returns
    -------
    list[list[int]]
        Groups in order; concatenated they equal `frame_numbers`. Each has at most
        `max_frames` numbers and ``url_prefix_length + len("a,b,c")`` is at most
        `max_url_length`. Empty input gives an empty list.

    Raises
    ------
    ArgumentError
        If `max_frames` is below 1, or a single frame number does not fit the URL limit
    """
    if max_frames < 1:
        raise ArgumentError(f"max_frames must be at least 1, not {max_frames}")
    budget = max_url_length - url_prefix_length
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for number in frame_numbers:
        width = len(str(number))
        if width > budget:
            raise ArgumentError(
                f"frame number {number} does not fit a URL of at most {max_url_length} "
                f"characters after a {url_prefix_length}-character prefix"
            )
        # A comma precedes every number but the first of a group.
        extra = width + 1 if current else width
        if current and (len(current) >= max_frames or used + extra > budget):
            chunks.append(current)
            current, used, extra = [], 0, width
        current.append(number)
        used += extra
    if current:
        chunks.append(current)
    return chunks


def series_metadata_url(wado_root: str, study: str, series: str) -> str:
    """Return the WADO-RS URL of the metadata of all instances of a series.

    Parameters
    ----------
    wado_root: str
        Base URL of the WADO-RS service
    study: str
        Study Instance UID
    series: str
        Series Instance UID

    Returns
    -------
    str
        ``{wado_root}/studies/{study}/series/{series}/metadata``

    Raises
    ------
    ArgumentError
        If a UID is empty
    """
    return (
        f"{_root(wado_root)}/studies/{_uid('study', study)}"
        f"/series/{_uid('series', series)}/metadata"
    )


@borrowed_doc(
    series_metadata_url,
    {"{series}/metadata": "{series}/instances/{sop}/metadata"},
    at_end="sop: str\n    SOP Instance UID",
)
def instance_metadata_url(wado_root: str, study: str, series: str, sop: str) -> str:
    """Return the WADO-RS URL of the metadata of one instance."""
    return (
        f"{_root(wado_root)}/studies/{_uid('study', study)}/series/{_uid('series', series)}"
        f"/instances/{_uid('sop', sop)}/metadata"
    )


def qido_url(
    qido_root: str,
    level: Literal["studies", "series", "instances"],
    study: str | None = None,
    series: str | None = None,
) -> str:
    """Return the QIDO-RS search URL for a query level, optionally scoped to a study/series.

    Parameters
    ----------
    qido_root: str
        Base URL of the QIDO-RS service
    level: {"studies", "series", "instances"}
        What to search for
    study: str | None, optional
        Study Instance UID to search in (``series`` and ``instances`` levels)
    series: str | None, optional
        Series Instance UID to search in (``instances`` level, needs `study`)

    Returns
    -------
    str
        E.g. ``{qido_root}/studies/{study}/series/{series}/instances``

    Raises
    ------
    ArgumentError
        If `level` is unknown or the UIDs given do not scope that level
    """
    root = _root(qido_root)
    if level not in ("studies", "series", "instances"):
        raise ArgumentError(f"QIDO level must be studies, series or instances, not {level!r}")
    if series is not None and (level != "instances" or study is None):
        raise ArgumentError("a series UID scopes only an instances search within a study")
    if study is not None and level == "studies":
        raise ArgumentError("a studies search cannot be scoped to a study")
    path = root
    if study is not None:
        path += f"/studies/{_uid('study', study)}"
    if series is not None:
        path += f"/series/{_uid('series', series)}"
    return f"{path}/{level}"


def _query_value(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ArgumentError(f"QIDO filter {key!r} cannot take a boolean value")
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y%m%d%H%M%S")
    if isinstance(value, datetime.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, datetime.time):
        return value.strftime("%H%M%S")
    if isinstance(value, Sequence):
        # A list means "any of these": QIDO-RS UID list matching joins values with commas.
        return ",".join(_query_value(key, item) for item in value)
    return str(value)


def qido_params(
    search_filters: Mapping[str, Any] | None,
    *,
    fields: Sequence[str] = (),
    limit: int | None = None,
    offset: int | None = None,
    fuzzy: bool = False,
) -> list[tuple[str, str]]:
    """Return QIDO-RS query parameters as ordered pairs (for ``httpx`` ``params=``).

    Parameters
    ----------
    search_filters: Mapping[str, Any] | None
        Attribute → value to match; keys are passed as given (a DICOM keyword such as
        ``"Modality"`` or a tag such as ``"00080060"``). Strings pass unchanged, ``None`` becomes
        an empty value (return the attribute, match anything), dates and times use DICOM
        ``DA``/``TM``/``DT`` formats, and lists or tuples are comma-joined (match any)
    fields: Sequence[str], optional
        Attributes to include in the results: one ``includefield`` pair each
    limit: int | None, optional
        Most results to return
    offset: int | None, optional
        Results to skip
    fuzzy: bool, optional
        Ask for fuzzy matching of person names

    Returns
    -------
    list[tuple[str, str]]
        Filters first, in mapping order, then ``includefield``, ``limit``, ``offset``,
        ``fuzzymatching``

    Raises
    ------
    ArgumentError
        If a key is empty, a value is a boolean, or `limit`/`offset` is negative
    """
    params: list[tuple[str, str]] = []
    for key, value in (search_filters or {}).items():
        if not isinstance(key, str) or not key:
            raise ArgumentError(f"QIDO filter keys must be non-empty strings, not {key!r}")
        params.append((key, _query_value(key, value)))
    for field in fields:
        if not field:
            raise ArgumentError("QIDO includefield entries must not be empty")
        params.append(("includefield", field))
    for name, number in (("limit", limit), ("offset", offset)):
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ArgumentError(f"QIDO {name} must be a non-negative integer, not {number!r}")
        params.append((name, str(number)))
    if fuzzy:
        params.append(("fuzzymatching", "true"))
    return params


def accept_for_transfer_syntax(transfer_syntax_uid: str) -> str:
    """Return an ``Accept`` header asking for frames in one explicit transfer syntax.

    For servers that refuse ``transfer-syntax=*`` (:data:`ACCEPT_STORED_FRAMES`): the media type
    is the one PS3.18 Table 8.7.3-5 pairs with the syntax. Native syntaxes are asked for as
    Explicit VR Little Endian (``application/octet-stream``), since PS3.18 excludes the others
    from web services and native frame bytes are the same. Syntaxes without a listed media type
    fall back to ``application/octet-stream`` with the UID.

    Parameters
    ----------
    transfer_syntax_uid: str
        Transfer Syntax UID the frames are stored in

    Returns
    -------
    str
        E.g. ``'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'``

    Raises
    ------
    ArgumentError
        If `transfer_syntax_uid` is not a UID
    """
    uid = transfer_syntax_uid.strip()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid):
        raise ArgumentError(f"not a transfer syntax UID: {transfer_syntax_uid!r}")
    if uid in _NATIVE_TRANSFER_SYNTAXES:
        media_type, uid = "application/octet-stream", ts.EXPLICIT_VR_LITTLE_ENDIAN
    else:
        media_type = _MEDIA_TYPE_BY_TRANSFER_SYNTAX.get(uid, "application/octet-stream")
    return f'multipart/related; type="{media_type}"; transfer-syntax={uid}'


def is_credential_name(name: str) -> bool:
    """Whether a query parameter or header name marks its value as a secret.

    Parameters
    ----------
    name: str
        The name, possibly percent-encoded (``access_token``, ``X-Amz-Signature``, ``key``)

    Returns
    -------
    bool
        True when the value must be kept out of messages and logs
    """
    lowered = unquote_plus(name).lower()
    if any(marker in lowered for marker in _CREDENTIAL_SUBSTRINGS):
        return True
    return any(word in _CREDENTIAL_WORDS for word in _WORD_SPLIT_RE.split(lowered))


def redact_url(url: str) -> str:
    """Return `url` without what may be credentials, for error messages and logs.

    Drops the user information (``user:password@``) and every query parameter whose name
    contains a credential word (``token``, ``key``, ``access_token``, ``signature``,
    ``X-Amz-Signature``, ``password``, ...). Other parameters keep their original spelling.

    Parameters
    ----------
    url: str
        Any URL

    Returns
    -------
    str
        The redacted URL (unchanged if there is nothing to strip)
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (e.g. a bad IPv6 host): show nothing that could be a secret.
        return url.split("?", 1)[0].rpartition("@")[2]
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        piece
        for piece in parts.query.split("&")
        if piece and not is_credential_name(piece.partition("=")[0])
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
