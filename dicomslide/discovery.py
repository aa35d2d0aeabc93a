"""Discovery: finding a source's slides and grouping their images (async).

:func:`find_slides` searches a source for series of slide microscopy images (and derived
images), fetches their metadata and groups the images into slides by the policy of
:mod:`dicomslide.grouping`, then builds one :class:`dicomslide.Slide` per group. Kept apart from
the slide class: this module asks the source questions, the slide only reads what it is given.
:func:`find_slides` stays importable from :mod:`dicomslide.slide`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydicom import Dataset

from dicomslide._gc import collector_paused
from dicomslide._tags import (
    CONTAINER_IDENTIFIER as _CONTAINER_IDENTIFIER,
    SERIES_INSTANCE_UID as _SERIES_INSTANCE_UID,
    SOP_CLASS_UID as _SOP_CLASS_UID,
    STUDY_INSTANCE_UID as _STUDY_INSTANCE_UID,
)
from dicomslide.errors import DicomSlideError, InvalidDataError
from dicomslide.grouping import (
    describe,
    frames_of_reference as _frames_of_reference,
    merge_split_pyramids,
    pyramid_images,
    slide_key,
    split_duplicate_series,
)
from dicomslide.perframe import get_value
from dicomslide.runtime import as_source
from dicomslide.slide import Slide, validate_image_metadata
from dicomslide.sources.protocol import Source
from dicomslide.sources.qido_match import dataset_matches
from dicomslide.utils import (
    DERIVED_SOP_CLASS_UIDS as _DERIVED_SOP_CLASSES,
    VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID,
    does_specimen_description_item_match,
    is_tiled_image,
)

__all__ = ["find_slides"]

_WSI_SOP_CLASS = VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID

# The logger find_slides has always warned on (its docstring names it).
logger = logging.getLogger("dicomslide.slide")


def _image_matches(
    ds: Dataset,
    specimen_stains: Sequence[Any] | None,
    optical_path_ids: Sequence[str] | None,
) -> bool:
    if str(get_value(ds, _SOP_CLASS_UID, "")) != _WSI_SOP_CLASS:
        return True
    if specimen_stains:
        items = list(ds.get("SpecimenDescriptionSequence", []))
        if not any(
            does_specimen_description_item_match(item, stain)
            for stain in specimen_stains
            for item in items
        ):
            return False
    if optical_path_ids:
        ids = {
            str(it.get("OpticalPathIdentifier", "")) for it in ds.get("OpticalPathSequence", [])
        }
        if not ids & {str(i) for i in optical_path_ids}:
            return False
    return True


def _referenced_series(ds: Dataset) -> set[tuple[str, str]]:
    """(study, series) UIDs a derived image names in its Common Instance Reference module."""
    study = str(ds.get("StudyInstanceUID", ""))
    refs = {
        (study, str(it.get("SeriesInstanceUID", "")))
        for it in ds.get("ReferencedSeriesSequence", [])
    }
    for other in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        other_study = str(other.get("StudyInstanceUID", ""))
        refs |= {
            (other_study, str(it.get("SeriesInstanceUID", "")))
            for it in other.get("ReferencedSeriesSequence", [])
        }
    return refs


async def _search_instances(
    source: Source,
    study_instance_uid: str | None,
    keyword: str,
    wanted: str,
) -> list[Dataset] | None:
    """Instance-level search on one attribute, or None where the source cannot do it.

    Parameters
    ----------
    source: dicomslide.sources.protocol.Source
        Source to ask
    study_instance_uid: str | None
        Study to search in, or None for all studies
    keyword: str
        Attribute keyword to filter on
    wanted: str
        Value the attribute must have

    Returns
    -------
    list[pydicom.Dataset] | None
        Matching instances; None when the search failed or found nothing. The caller then
        falls back to reading the metadata of every candidate series, because some stores
        answer searches on attributes they do not index with an error or an empty list.
    """
    try:
        found = await source.search_for_instances(
            study_instance_uid=study_instance_uid, search_filters={keyword: wanted}
        )
    except (DicomSlideError, NotImplementedError):
        return None
    # A store that ignores the filter returns too much; drop what is visibly wrong.
    found = [ds for ds in found if keyword not in ds or str(ds.get(keyword, "")) == wanted]
    return found or None


def _series_of(datasets: Sequence[Dataset]) -> set[tuple[str, str]]:
    return {
        (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        for ds in datasets
        if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds
    }


async def _retrieve_metadata(
    source: Source, refs: Sequence[tuple[str, str]], fail_on_error: bool
) -> list[list[Dataset]]:
    results = await asyncio.gather(
        *(source.retrieve_series_metadata(st, se) for st, se in refs),
        return_exceptions=True,
    )
    out: list[list[Dataset]] = []
    for result in results:
        if isinstance(result, BaseException):
            if fail_on_error or not isinstance(result, DicomSlideError):
                raise result
            continue
        out.append(result)
    return out


def _collector_paused_throughout(
    function: Callable[..., Coroutine[Any, Any, list[Slide]]],
) -> Callable[..., Coroutine[Any, Any, list[Slide]]]:
    """Run a local search with the cyclic collector paused (see dicomslide._gc).

    Searching, reading the metadata of and building thousands of slides is one burst of
    allocation: each full collection on the way walks every object made so far (at 5,000
    local slides, 1.2 s of a 2.8 s search went to 7 of them). The pause is process-wide, so
    it spans the awaits only of sources that declare them short (the local folder's worker
    thread hops); a search waiting on a server pauses only around its synchronous bursts.
    """

    @functools.wraps(function)
    async def paused(client: Any, *args: Any, **kwargs: Any) -> list[Slide]:
        if not getattr(as_source(client), "_search_in_one_burst", False):
            return await function(client, *args, **kwargs)
        with collector_paused():
            return await function(client, *args, **kwargs)

    return paused


@_collector_paused_throughout
async def find_slides(
    client: Any,
    study_instance_uid: str | None = None,
    patient_id: str | None = None,
    study_id: str | None = None,
    container_id: str | None = None,
    max_frame_cache_size: int = 6,
    pyramid_tolerance: float = 0.1,
    fail_on_error: bool = True,
    include_derived: bool = True,
    specimen_stains: Sequence[Any] | None = None,
    optical_path_ids: Sequence[str] | None = None,
    *,
    correct_color: bool = True,
) -> list[Slide]:
    """Find slides.

    All given criteria must match. Series of slide microscopy images (Modality SM, and SEG and
    OT for derived images) matching the study-level filters (``study_instance_uid``,
    ``patient_id``, ``study_id``) are found with one search per modality. With a
    ``container_id``, one instance-level search on Container Identifier narrows them down to
    the series holding that slide, so that only their metadata is fetched; derived images of
    the slide are then found by an instance-level search on its Frame of Reference UID. When a
    source rejects these searches (or they find nothing), the metadata of every candidate series
    is fetched and filtered here instead. Metadata is fetched concurrently, one request per
    series, and images are grouped into slides (see the module notes and
    :mod:`dicomslide.grouping`). The search returns the slides it can build: groups of images
    without a VOLUME or THUMBNAIL image are skipped, with a warning on the ``dicomslide.slide``
    logger naming their study and series. Series of one group that hold the same level twice
    (copies of one slide) become one slide each, with a warning naming them.

    ``specimen_stains`` and ``optical_path_ids`` are checked on the metadata: a slide
    microscopy image is kept if its specimen description lists *any* of the stains (coded
    concepts compared by coding scheme designator and code value) and if it has *any* of the
    optical paths. Derived images are attached to the slides whose Frame of Reference UID they
    share; a slide without a Frame of Reference UID gets the derived images that reference
    its series in their Referenced Series Sequence.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    study_instance_uid: str | None, optional
        Study Instance UID
    patient_id: str | None, optional
        Patient ID
    study_id: str | None, optional
        Study ID
    container_id: str | None, optional
        Container Identifier of the slide
    max_frame_cache_size: int, optional
        Accepted for compatibility with dicomslide 0.7 (see :class:`Slide`)
    pyramid_tolerance: float, optional
        Largest tolerated distance (mm) between image centres of different levels
    fail_on_error: bool, optional
        Whether an error fetching the metadata of one series or building one slide is raised;
        if False that series or slide is skipped and a warning names it. Images that cannot
        form a slide (a LABEL or OVERVIEW without VOLUME images beside it) are not an error:
        they are skipped with a warning either way
    include_derived: bool, optional
        Whether Segmentations (label maps included) and Parametric Maps become channels of the
        slides they belong to
    specimen_stains: Sequence[pydicom.sr.coding.Code | highdicom.sr.CodedConcept] | None
        Only images whose specimen description lists one of these stains
    optical_path_ids: Sequence[str] | None, optional
        Only images with one of these optical path identifiers
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB

    Returns
    -------
    list[dicomslide.Slide]
        Slides, ordered by study, container and frame of reference

    Raises
    ------
    ValueError
        When a stain is not a coded concept
    """
    source = as_source(client)
    for stain in specimen_stains or ():
        does_specimen_description_item_match(Dataset(), stain)  # validates the argument
    filters: dict[str, Any] = {}
    if patient_id is not None:
        filters["PatientID"] = patient_id
    if study_id is not None:
        filters["StudyID"] = study_id
    # With a container, the instance search on it comes first: its series are the slide
    # microscopy candidates, and the series search over every slide of an archive (thousands
    # of results) is not made. Study-level filters are then checked on the metadata.
    container_series: list[tuple[str, str]] | None = None
    if container_id is not None:
        hits = await _search_instances(
            source, study_instance_uid, "ContainerIdentifier", container_id
        )
        if hits is not None:
            container_series = sorted(
                _series_of([ds for ds in hits if str(ds.get("Modality", "SM")) == "SM"])
            )
    modalities = ["SM", "SEG", "OT"] if include_derived else ["SM"]
    if container_series is not None:
        modalities.remove("SM")
    series_lists = await asyncio.gather(
        *(
            source.search_for_series(
                study_instance_uid=study_instance_uid,
                search_filters={**filters, "Modality": modality},
            )
            for modality in modalities
        )
    )
    candidates: dict[str, list[tuple[str, str]]] = {}
    seen: set[tuple[str, str]] = set()
    for modality, series_list in zip(modalities, series_lists, strict=True):
        for s in series_list:
            # By tag, from the raw bytes: thousands of series in an archive (see get_value).
            study, series = get_value(s, _STUDY_INSTANCE_UID), get_value(s, _SERIES_INSTANCE_UID)
            ref = (
                str(s.StudyInstanceUID if study is None else study),
                str(s.SeriesInstanceUID if series is None else series),
            )
            if ref not in seen:
                seen.add(ref)
                candidates.setdefault(modality, []).append(ref)
    derived_refs = [*candidates.get("SEG", []), *candidates.get("OT", [])]
    pushed_down = container_series is not None
    if container_series is not None:
        sm_refs = [ref for ref in container_series if ref not in seen]
    else:
        sm_refs = candidates.get("SM", [])
    metadata_lists = await _retrieve_metadata(
        source, sm_refs if pushed_down else [*sm_refs, *derived_refs], fail_on_error
    )
    if pushed_down and include_derived and derived_refs:
        frames_of_reference = sorted(
            {
                str(ds.get("FrameOfReferenceUID", ""))
                for metadata in metadata_lists
                for ds in metadata
                if ds.get("FrameOfReferenceUID")
            }
        )
        without_frame = any(
            not ds.get("FrameOfReferenceUID")
            for metadata in metadata_lists
            for ds in metadata
            if str(ds.get("SOPClassUID", "")) == _WSI_SOP_CLASS
            and str(ds.get("ContainerIdentifier", "")) == container_id
        )
        derived_wanted: set[tuple[str, str]] = set()
        if without_frame:
            # Derived images of a slide without a frame of reference are known only by the
            # references in their own metadata: read every candidate.
            derived_wanted = set(derived_refs)
        for uid in [] if without_frame else frames_of_reference:
            hits = await _search_instances(source, study_instance_uid, "FrameOfReferenceUID", uid)
            if hits is None:
                derived_wanted = set(derived_refs)
                break
            derived_wanted |= _series_of(hits)
        metadata_lists += await _retrieve_metadata(
            source, [ref for ref in derived_refs if ref in derived_wanted], fail_on_error
        )
    # Grouping and building slides allocates a burst of objects and never awaits: the
    # collector is paused for it (see dicomslide._gc).
    with collector_paused():
        groups: dict[tuple[str, ...], list[Dataset]] = {}
        derived: list[Dataset] = []
        for metadata in metadata_lists:
            for ds in metadata:
                if not is_tiled_image(ds):
                    _log_unusable_wsi(ds)
                    continue
                sop_class = str(get_value(ds, _SOP_CLASS_UID, ""))
                if sop_class in _DERIVED_SOP_CLASSES:
                    if include_derived:
                        derived.append(ds)
                    continue
                if sop_class != _WSI_SOP_CLASS:
                    continue
                if (
                    container_id is not None
                    and str(get_value(ds, _CONTAINER_IDENTIFIER, "")) != container_id
                ):
                    continue
                if not _image_matches(ds, specimen_stains, optical_path_ids):
                    continue
                if pushed_down and not dataset_matches(ds, filters):
                    continue
                groups.setdefault(slide_key(ds), []).append(ds)
        groups, notes = split_duplicate_series(merge_split_pyramids(groups, pyramid_tolerance))
        for note in notes:
            logger.warning("find_slides: %s.", note)
        for key in sorted(groups):
            if not pyramid_images(groups[key]):
                # A label or overview without its slide: nothing to build a pyramid from.
                logger.warning(
                    "find_slides skips %s: no VOLUME or THUMBNAIL image to form a slide with.",
                    describe(groups.pop(key)),
                )
        # Slides by frame of reference and by series, so that attaching derived images costs a
        # look-up each, not a pass over every slide (linear, not quadratic, in the archive).
        by_frame: dict[str, list[tuple[str, ...]]] = {}
        by_series: dict[tuple[str, str], list[tuple[str, ...]]] = {}
        order = {k: i for i, k in enumerate(groups)}
        for k, images in groups.items():
            if k[0] == "FOR":
                for uid in _frames_of_reference(images):
                    by_frame.setdefault(uid, []).append(k)
            elif k[0] == "SERIES":
                by_series.setdefault((k[1], k[2]), []).append(k)
        for ds in derived:
            key = slide_key(ds)
            targets: list[tuple[str, ...]] = []
            if key[0] == "FOR":
                same_frame = by_frame.get(key[1], [])
                # Prefer the slide with the same container when the derived image names one.
                same_container = [k for k in same_frame if k[2] == key[2]]
                targets = same_container or same_frame
            if not targets:
                # Slides without a Frame of Reference UID take the derived images that name their
                # series as a source.
                targets = sorted(
                    {k for ref in _referenced_series(ds) for k in by_series.get(ref, [])},
                    key=order.__getitem__,
                )
            for target in targets:
                groups[target].append(ds)
        slides: list[Slide] = []
        for key in sorted(groups):
            try:
                slides.append(
                    Slide(
                        client,
                        groups[key],
                        max_frame_cache_size=max_frame_cache_size,
                        pyramid_tolerance=pyramid_tolerance,
                        correct_color=correct_color,
                    )
                )
            except DicomSlideError as error:
                if fail_on_error:
                    raise
                logger.warning("find_slides skips %s: %s", describe(groups[key]), error)
    return slides


def _log_unusable_wsi(ds: Dataset) -> None:
    """Name a whole-slide image left out for unusable size attributes (levels shift without it)."""
    if str(get_value(ds, _SOP_CLASS_UID, "")) != _WSI_SOP_CLASS:
        return
    try:
        validate_image_metadata(ds)
    except InvalidDataError as error:
        logger.warning("find_slides skips an image: %s", error)
    else:
        logger.warning(
            "find_slides skips image %s: it lacks Bits Allocated and Samples per Pixel.",
            ds.get("SOPInstanceUID", "(no SOP Instance UID)"),
        )
