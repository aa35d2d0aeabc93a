"""JSON requests of the DICOMweb client: QIDO-RS searches (paged) and metadata parsing.

A search is paged with ``limit``/``offset`` (``page_size`` per page); a short page ends it
unless the server's ``Warning`` says more results can be requested. A server that ignores
``offset`` is not asked for ever: items already seen on an earlier page are dropped (and
logged), a page that brings nothing new ends the search, and so does the page cap
(``max_pages``, 1,000 pages; logged). The whole search shares one deadline. A server that
rejects the filters (400) is asked again without them, and the results are filtered here
with the same matcher as the local folder client (:mod:`dicomslide.sources.qido_match`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydicom import Dataset

from dicomslide.errors import DicomWebError
from dicomslide.sources.dicomjson import datasets_from_json, parse_json_bytes
from dicomslide.sources.dicomweb_urls import qido_params, qido_url
from dicomslide.sources.qido_match import dataset_matches
from dicomslide.sources.web.transport import OperationClock, Transport

__all__ = ["DEFAULT_MAX_PAGES", "QidoSearch", "json_items", "to_datasets"]

#: Most pages one search asks for; a server that keeps sending full pages is stopped here.
DEFAULT_MAX_PAGES: Final = 1000

logger = logging.getLogger(__name__)


async def json_items(
    transport: Transport,
    url: str,
    params: Sequence[tuple[str, str]] | None = None,
    clock: OperationClock | None = None,
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
    clock: OperationClock | None, optional
        Deadline of the operation (default: one for this request)

    Returns
    -------
    tuple[list[dict[str, Any]], bool]
        The items, and whether a ``Warning`` says more results can be requested
    """
    response = await transport.send(
        url, accept="application/dicom+json", params=params, clock=clock
    )
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
        #: Most pages one search asks for.
        self.max_pages = DEFAULT_MAX_PAGES

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
        clock = self._transport.clock(f"QIDO-RS search {self._transport.shown(url)}")
        try:
            items = await self._paged(url, filters, clock)
        except DicomWebError as exc:
            if exc.status_code != 400 or not filters:
                raise
            # Some stores reject filters on attributes they do not index: ask without them
            # and filter here.
            items = await self._paged(url, {}, clock)
            datasets = await to_datasets(items)
            return [ds for ds in datasets if dataset_matches(ds, filters)]
        finally:
            clock.close()
        return await to_datasets(items)

    async def _paged(
        self, url: str, filters: Mapping[str, Any], clock: OperationClock
    ) -> list[dict[str, Any]]:
        page_size = self.page_size
        out: list[dict[str, Any]] = []
        seen: set[bytes] = set()
        offset = 0
        shown = self._transport.shown(url)
        for page_number in range(1, self.max_pages + 1):
            params = qido_params(filters, limit=page_size, offset=offset)
            page, more = await json_items(self._transport, url, params, clock)
            fresh = [item for item in page if _remember_new(item, seen)]
            if len(fresh) < len(page):
                # A server that ignores offset, or pages that overlap: items already seen are
                # dropped, and a page without news ends the search.
                logger.warning(
                    "QIDO-RS %s: page %d (offset %d) repeated %d of its %d items; %s.",
                    shown,
                    page_number,
                    offset,
                    len(page) - len(fresh),
                    len(page),
                    "dropped them" if fresh else "the search stops here",
                )
            if not fresh:
                break
            out.extend(fresh)
            # A full page may be followed by more; so may a short one if the server capped
            # it below our limit and said so.
            if len(page) < page_size and not more:
                break
            if len(page) > page_size:
                break  # the server ignores limit: this was everything
            offset += len(page)
        else:
            logger.warning(
                "QIDO-RS %s: stopped after %d pages (%d results); results beyond offset %d "
                "were not requested.",
                shown,
                self.max_pages,
                len(out),
                offset,
            )
        return out


def _remember_new(item: Any, seen: set[bytes]) -> bool:
    """Whether ``item`` was not seen before on this search (and remember it)."""
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(item)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    if digest in seen:
        return False
    seen.add(digest)
    return True


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
