"""The one error hierarchy of dicomslide.

Every exception raised on purpose by this package derives from :class:`DicomSlideError`, and
from the builtin a user would catch without knowing this package (``ValueError`` for bad
arguments, ``LookupError`` for things that are not there, ``TimeoutError`` for timeouts).
Messages say what was asked and what was wrong.
"""

from __future__ import annotations

__all__ = [
    "DicomSlideError",
    "UsageError",
    "RegionError",
    "NotFoundError",
    "SourceError",
    "TransportError",
    "RequestTimeoutError",
    "DicomWebError",
    "ProtocolError",
    "UnsupportedError",
    "MissingCodecError",
    "DecodeError",
    "InvalidDataError",
    "InvalidClientError",
    "IndexRangeError",
]


class DicomSlideError(Exception):
    """Root of every error raised by dicomslide."""


class UsageError(DicomSlideError, RuntimeError):
    """An object was used in a way it cannot be (closed, wrong event loop, re-entrant call)."""


class RegionError(DicomSlideError, ValueError):
    """A bad argument: level, channel, focal plane, region or index out of its valid range."""


class IndexRangeError(RegionError, IndexError, KeyError):
    """A level, channel, focal plane, tile or region index (or Z offset) that does not exist.

    Also an :class:`IndexError` and a :class:`KeyError`: dicomslide 0.7 raised one or the other
    for these (depending on the call), and code written for it catches them.
    """

    # KeyError's __str__ would quote the message.
    __str__ = Exception.__str__


class NotFoundError(DicomSlideError, LookupError):
    """A study, series, instance, frame or file that was asked for does not exist."""


class SourceError(DicomSlideError):
    """A source (local folder, DICOMweb server, foreign client) could not answer."""


class TransportError(SourceError):
    """The connection failed or timed out before the server answered."""


class RequestTimeoutError(TransportError, TimeoutError):
    """A request did not complete within its time limit."""


class DicomWebError(SourceError):
    """A DICOMweb server answered with an error status.

    Parameters
    ----------
    message: str
        What was asked and what went wrong
    status_code: int
        HTTP status code of the response
    url: str
        URL of the request (never with credentials)
    """

    def __init__(self, message: str, status_code: int, url: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url


class ProtocolError(SourceError):
    """A response or file broke its format (multipart, DICOM JSON, offset tables)."""


class InvalidDataError(DicomSlideError, ValueError):
    """Stored data contradicts itself (metadata vs. pixel data, truncated file, bad frame)."""


class UnsupportedError(DicomSlideError, NotImplementedError):
    """A valid DICOM feature that this package does not support."""


class MissingCodecError(UnsupportedError, ImportError):
    """A transfer syntax needs an optional package that is not installed."""


class DecodeError(DicomSlideError, ValueError):
    """An encoded frame could not be decoded.

    Parameters
    ----------
    message: str
        What went wrong
    sop_instance_uid: str | None
        SOP Instance UID of the image the frame belongs to
    frame_number: int | None
        One-based frame number
    """

    def __init__(
        self,
        message: str,
        sop_instance_uid: str | None = None,
        frame_number: int | None = None,
    ) -> None:
        super().__init__(message)
        self.sop_instance_uid = sop_instance_uid
        self.frame_number = frame_number


class InvalidClientError(DicomSlideError, TypeError):
    """An object given as a client is neither a dicomslide source nor a DICOMClient."""


class SyncTimeoutError(DicomSlideError, TimeoutError):
    """A blocking call of :mod:`dicomslide_sync` ran out of its ``timeout`` and was cancelled."""
