"""The small async protocol every source of DICOM data implements.

Domain objects (:class:`dicomslide.Slide` and friends) only ever talk to a :class:`Source`.
The local folder client, the DICOMweb client and the adapter for foreign
``dicomweb_client.DICOMClient`` objects implement it, and so do test fakes.

Conventions
-----------
* Search results and metadata are :class:`pydicom.Dataset` objects without Pixel Data.
* Frame numbers are one-based, as in DICOM.
* Each source owns a :class:`~dicomslide.sources.runtime.SourceRuntime` (its caches and one
  frame service per event loop), built from its constructor options.
* :meth:`Source.iter_frames` yields frames as soon as each is available (in any order), so that
  decoding can start before a large multipart response has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from pydicom import Dataset

if TYPE_CHECKING:
    from dicomslide.sources.runtime import SourceRuntime

__all__ = ["EncodedFrame", "Source"]


class EncodedFrame(NamedTuple):
    """One frame as stored, with the transfer syntax that tells how to decode it.

    Attributes
    ----------
    data: bytes
        Encoded (or native) bytes of exactly one frame
    transfer_syntax_uid: str
        Transfer Syntax UID of ``data``
    """

    data: bytes
    transfer_syntax_uid: str


@runtime_checkable
class Source(Protocol):
    """Async access to studies, series, instances, metadata, frames and bulk data."""

    async def search_for_studies(
        self, search_filters: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        """Search for studies.

        Parameters
        ----------
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords (e.g. ``"PatientID"``) mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            One dataset per matching study with study-level attributes
        """
        ...

    async def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for series, optionally within one study.

        Parameters
        ----------
        study_instance_uid: str | None, optional
            Study Instance UID
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords (e.g. ``"Modality"``) mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            One dataset per matching series (with StudyInstanceUID and SeriesInstanceUID)
        """
        ...

    async def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for instances, optionally within one study or series.

        Parameters
        ----------
        study_instance_uid: str | None, optional
            Study Instance UID
        series_instance_uid: str | None, optional
            Series Instance UID
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            One dataset per matching instance (with the Study, Series and SOP Instance UIDs
            and SOP Class UID)
        """
        ...

    async def retrieve_series_metadata(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[Dataset]:
        """Retrieve the metadata of every instance of a series.

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID

        Returns
        -------
        list[pydicom.Dataset]
            Metadata of each instance, without Pixel Data
        """
        ...

    async def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """Retrieve the metadata of one instance.

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID
        sop_instance_uid: str
            SOP Instance UID

        Returns
        -------
        pydicom.Dataset
            Metadata without Pixel Data
        """
        ...

    def iter_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        """Retrieve frames of one instance, yielding each as soon as it is available.

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID
        sop_instance_uid: str
            SOP Instance UID
        frame_numbers: Sequence[int]
            One-based frame numbers, without duplicates

        Returns
        -------
        AsyncIterator[tuple[int, dicomslide.sources.EncodedFrame]]
            Pairs of one-based frame number and encoded frame, one per requested frame
        """
        ...

    async def retrieve_bulkdata(self, url: str) -> bytes:
        """Retrieve bulk data (e.g. an ICC profile) referenced by a BulkDataURI.

        Parameters
        ----------
        url: str
            Bulk data URI as found in the metadata

        Returns
        -------
        bytes
            The bulk data
        """
        ...

    async def aclose(self) -> None:
        """Release connections, file handles and thread pools."""
        ...

    @property
    def runtime(self) -> SourceRuntime:
        """dicomslide.sources.runtime.SourceRuntime: This source's caches and frame services."""
        ...
