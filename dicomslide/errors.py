"""The one error hierarchy of dicomslide.

Every exception raised on purpose by this package derives from :class:`DicomSlideError`, and
from the builtin a user would catch without knowing this package (``ValueError`` for bad
arguments, ``LookupError`` for things that are not there, ``TimeoutError`` for timeouts).
Messages say what was asked and what was wrong. Every exception class of :mod:`dicomslide`
and :mod:`dicomslide_sync` is defined in this module; the tree (builtin bases in brackets)::

    DicomSlideError
    ├── UsageError [RuntimeError]
    │   └── ClosedHandleError [ctypes.ArgumentError]    (OpenSlide layer: closed handle)
    ├── SyncTimeoutError [TimeoutError]       (a blocking call outlived its timeout)
    ├── ArgumentError [ValueError]            (a bad argument that is not a region)
    ├── RegionError [ValueError]              (level, channel, plane, region; as in 0.7)
    │   ├── IndexRangeError [IndexError, KeyError]
    │   └── CacheArgumentError [ctypes.ArgumentError]   (OpenSlide layer: cache capacity)
    ├── NotFoundError [LookupError]
    ├── SourceError
    │   ├── TransportError
    │   │   └── RequestTimeoutError [TimeoutError]
    │   ├── DicomWebError
    │   │   ├── ServerError                   (a 5xx status)
    │   │   └── NotAcceptableError            (406, or 400 for media types)
    │   ├── FramesRefusedError                (internal: frames come from the whole instance)
    │   └── ProtocolError
    │       └── ResponseTooLargeError         (a body over its byte budget)
    ├── InvalidDataError [ValueError]
    │   └── NotDicomError                     (bytes without the Part 10 "DICM" prefix)
    ├── UnsupportedError [NotImplementedError]
    │   ├── MissingCodecError [ImportError]
    │   └── DaskNotInstalledError [ImportError]
    ├── DecodeError [ValueError]
    ├── InvalidClientError [TypeError]
    ├── NotACacheError [TypeError]            (OpenSlide layer: set_cache argument)
    └── PrefetchBudgetError

Warnings are not errors and stay next to their code (``PrefetchBudgetWarning`` in
:mod:`dicomslide.bulk`).
"""

from __future__ import annotations

import ctypes

__all__ = [
    "DicomSlideError",
    "UsageError",
    "ArgumentError",
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
    "NotDicomError",
    "InvalidClientError",
    "IndexRangeError",
    "DaskNotInstalledError",
    "PrefetchBudgetError",
    "ClosedHandleError",
    "CacheArgumentError",
    "NotACacheError",
    "ServerError",
    "NotAcceptableError",
    "FramesRefusedError",
    "SyncTimeoutError",
    "ResponseTooLargeError",
]


class DicomSlideError(Exception):
    """Root of every error raised by dicomslide."""


class UsageError(DicomSlideError, RuntimeError):
    """An object was used in a way it cannot be (closed, wrong event loop, re-entrant call)."""


class ArgumentError(DicomSlideError, ValueError):
    """A bad argument that is not a region: a chunk shape, a budget, a URL, a retry count."""


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


class FramesRefusedError(SourceError):
    """The server will not serve this instance's frames; they are cut from the whole instance.

    A signal inside the DICOMweb client: the read goes on from the whole instance, and callers
    never see it.
    """


class ProtocolError(SourceError):
    """A response or file broke its format (multipart, DICOM JSON, offset tables)."""


class InvalidDataError(DicomSlideError, ValueError):
    """Stored data contradicts itself (metadata vs. pixel data, truncated file, bad frame)."""


class NotDicomError(InvalidDataError):
    """The bytes are not a DICOM Part 10 file (no ``DICM`` prefix after the preamble)."""


class UnsupportedError(DicomSlideError, NotImplementedError):
    """A valid DICOM feature that this package does not support."""


class MissingCodecError(UnsupportedError, ImportError):
    """A transfer syntax needs an optional package that is not installed."""


class DaskNotInstalledError(UnsupportedError, ImportError):
    """Dask is not installed; ``pip install 'dicomslide[dask]'`` installs it."""


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


class PrefetchBudgetError(DicomSlideError):
    """A strict prefetch found that the level does not fit into the frame-cache budget."""


# The OpenSlide layer's own errors: openslide-python raises ctypes.ArgumentError for these,
# so code written for it catches that too.


class ClosedHandleError(UsageError, ctypes.ArgumentError):
    """The OpenSlide object was closed; like openslide-python, also a ``ctypes.ArgumentError``."""


class CacheArgumentError(RegionError, ctypes.ArgumentError):
    """A cache capacity that is not a non-negative integer (openslide-python: ArgumentError)."""


class NotACacheError(DicomSlideError, TypeError):
    """``set_cache`` was given something that is not an :class:`OpenSlideCache`."""


class ServerError(DicomWebError):
    """The server answered with a 5xx status."""


class NotAcceptableError(DicomWebError):
    """The server cannot give the representation asked for (406, or 400 for media types)."""


class SyncTimeoutError(DicomSlideError, TimeoutError):
    """A blocking call of :mod:`dicomslide_sync` ran out of its ``timeout`` and was cancelled."""


class ResponseTooLargeError(ProtocolError):
    """A response body (or one part of it) exceeded its byte budget, counted after decoding.

    The budget is counted on the decoded bytes, so a gzip or deflate bomb stops at the same
    size as a plain body.

    Parameters
    ----------
    message: str
        What was read and which budget it exceeded
    url: str
        URL of the request, never with credentials (empty where the reader does not know it,
        e.g. the sans-IO multipart parser)
    limit: int
        The budget in bytes
    """

    def __init__(self, message: str, url: str, limit: int) -> None:
        super().__init__(message)
        self.url = url
        self.limit = limit
