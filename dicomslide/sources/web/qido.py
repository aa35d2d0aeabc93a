"""JSON requests of the DICOMweb client: QIDO-RS searches (paged) and metadata parsing.

A search is paged with ``limit``/``offset`` (``page_size`` per page); a short page ends it
unless the server's ``Warning`` says more results can be requested, and a server that ignores
``offset`` is noticed and not asked for ever. A server that rejects the filters (400) is asked
again without them, and the results are filtered here with the same matcher as the local
folder client (:mod:`dicomslide.sources.qido_match`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydicom import Dataset

from dicomslide.errors import DicomWebError
from dicomslide.sources.dicomjson import datasets_from_json, parse_json_bytes
from dicomslide.sources.dicomweb_urls import qido_params, qido_url
from dicomslide.sources.qido_match import dataset_matches
from dicomslide.sources.web.transport import Transport

__all__ = ["QidoSearch", "json_items", "to_datasets"]


async def json_items(
    transport: Transport, url: str, params: Sequence[tuple[str, str]] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Items of a DICOM JSON response, and whether the server says it holds back more.

    Parameters
    ----------
    transport: Transport
        Sends the request
    url: str
        The URL
    params: Sequence[tuple[str, str]] | None, optional
        Query parameters

    Returns
    -------
    tuple[list[dict[str, Any]], bool]
        The items, and whether a ``Warning`` says more results can be requested
    """
    response = await transport.send(url, accept="application/dicom+json", params=params)
    # PS3.18 8.3.4.4: a server that returns fewer results than matched says so with
    # "Warning: 299 <agent>: There are additional results that can be requested".
    warning = " ".join(response.headers.get_list("warning")).lower()
    more = "additional results" in warning
    if response.status_code == 204 or not response.content:
        return [], more
    # Series metadata of sparse images runs to megabytes: parse it off the loop.
    return await asyncio.to_thread(parse_json_bytes, response.content), more


async def to_datasets(items: list[dict[str, Any]]) -> list[Dataset]:
    """Data sets of DICOM JSON items, pixel data values dropped (parsed off the loop if many).

    Parameters
    ----------
    items: list[dict[str, Any]]
        DICOM JSON objects

    Returns
    -------
    list[pydicom.Dataset]
        One per item
    """
    _drop_inline_pixel_values(items)
    if len(items) > 50:
        return await asyncio.to_thread(datasets_from_json, items)
    return datasets_from_json(items)


class QidoSearch:
    """QIDO-RS searches of one client, all pages.

    Parameters
    ----------
    transport: Transport
        Sends the requests
    qido_root: str
        QIDO-RS root URL
    """

    def __init__(self, transport: Transport, qido_root: str) -> None:
        self._transport = transport
        self._qido_root = qido_root
        #: QIDO-RS ``limit`` of one page of search results.
        self.page_size = 1000

    async def search(
        self,
        level: Literal["studies", "series", "instances"],
        study_instance_uid: str | None,
        series_instance_uid: str | None,
        search_filters: Mapping[str, Any] | None,
    ) -> list[Dataset]:
        """Every result of a search.

        Parameters
        ----------
        level: Literal["studies", "series", "instances"]
            What is searched for
        study_instance_uid: str | None
            Study to search in
        series_instance_uid: str | None
            Series to search in (with a study)
        search_filters: Mapping[str, Any] | None
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            The results
        """
        url = qido_url(self._qido_root, level, study_instance_uid, series_instance_uid)
        filters = dict(search_filters or {})
        try:
            items = await self._paged(url, filters)
        except DicomWebError as exc:
            if exc.status_code != 400 or not filters:
                raise
            # Some stores reject filters on attributes they do not index: ask without them
            # and filter here.
            items = await self._paged(url, {})
            datasets = await to_datasets(items)
            return [ds for ds in datasets if dataset_matches(ds, filters)]
        return await to_datasets(items)

    async def _paged(self, url: str, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        page_size = self.page_size
        out: list[dict[str, Any]] = []
        offset = 0
        previous_first: Any = None
        while True:
            params = qido_params(filters, limit=page_size, offset=offset)
            page, more = await json_items(self._transport, url, params)
            if not page or page[0] == previous_first:
                break  # the server ignores offset: do not loop for ever
            out.extend(page)
            # A full page may be followed by more; so may a short one if the server capped
            # it below our limit and said so.
            if len(page) < page_size and not more:
                break
            if len(page) > page_size:
                break  # the server ignores limit: this was everything
            previous_first = page[0]
            offset += len(page)
        return out


_PIXEL_DATA_TAGS: Final = ("7FE00008", "7FE00009", "7FE00010")


def _drop_inline_pixel_values(items: list[dict[str, Any]]) -> None:
    """Keep pixel data elements of metadata as markers, without a value.

    Orthanc sends Float Pixel Data as ``{"vr": "OF", "Value": [0]}`` (likewise Double Float
    Pixel Data), which is not valid DICOM JSON for a binary VR. Metadata never carries pixel
    values, so whatever value a pixel data element has is dropped; the element stays (empty,
    as for a ``BulkDataURI``) because it tells which kind of pixel data the instance has.
    """
    for item in items:
        if not isinstance(item, dict):
            continue
        for tag in _PIXEL_DATA_TAGS:
            element = item.get(tag)
            if isinstance(element, dict) and "Value" in element:
                item[tag] = {k: v for k, v in element.items() if k != "Value"}
