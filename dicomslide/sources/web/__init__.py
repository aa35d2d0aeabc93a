"""The DICOMweb source: :class:`DICOMwebClient` and its parts.

* :mod:`.client`: the client, frames requests and the transfer-syntax rules;
* :mod:`.transport`: requests, credentials, redirects and retries;
* :mod:`.negotiation`: what the client learnt about each instance;
* :mod:`.qido`: QIDO-RS searches and DICOM JSON;
* :mod:`.instance`: the whole-instance fallback.

The names users and tests import from ``dicomslide.sources.web`` stay importable here.
"""

from dicomslide.errors import NotAcceptableError, ServerError
from dicomslide.sources.dicomweb_urls import ACCEPT_STORED_FRAMES
from dicomslide.sources.web.client import DEFAULT_MAX_FRAME_BYTES, DICOMwebClient
from dicomslide.sources.web.instance import ACCEPT_INSTANCE, DEFAULT_MAX_INSTANCE_BYTES
from dicomslide.sources.web.transport import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    RetryPolicy,
)

__all__ = [
    "ACCEPT_INSTANCE",
    "ACCEPT_STORED_FRAMES",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_INSTANCE_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "DICOMwebClient",
    "NotAcceptableError",
    "RetryPolicy",
    "ServerError",
]
