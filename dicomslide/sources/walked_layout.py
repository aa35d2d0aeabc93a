"""Frames of encapsulated pixel data without an offset table, located as reads need them.

Without a Basic or Extended Offset Table a frame is found only by walking the fragment item
headers before it. The walk over the 100,000 frames of a sparse image reads the whole 75 MB
file and cost about a quarter of opening it and reading its first region, although that
region needed the first few thousand frames. :class:`WalkedLayout` walks only as far as the
frames asked for, and further when later reads ask for later frames.

The answer stays that of the exact scan (:func:`dicomslide.sources.part10.build_frame_layout`):
a frame is taken to be one fragment only while every fragment walked starts a codestream
(the rule the exact scan uses when fragments and frames differ in number, which gives the
same answer when they do not), and frame *k* is handed out only once fragment *k + 1* is
seen to start a codestream too (or the walk reached the sequence delimiter after the last
frame). Anything else - a fragment that does not start a codestream, more or fewer
fragments than frames - hands over to the exact scan. A file that does not end with the
sequence delimiter (truncated, or with elements after the pixel data) is scanned exactly
from the start. The one difference: a file whose fault lies past the frames read so far
(more fragments than frames, say) reports it when a read walks that far.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Final

import numpy as np

from dicomslide.errors import InvalidDataError
from dicomslide.sources.part10 import (
    EMPTY_ITEM,
    FRAME_START_MARKERS,
    PIXEL_DATA,
    SEQUENCE_DELIMITER_ITEM,
    FragmentRun,
    FrameLayout,
    Part10Header,
    ReadAt,
    build_encapsulated_layout,
    build_frame_layout,
    fragment_runs,
)

__all__ = ["WalkedLayout", "open_frame_layout"]

#: What the walk yields when the generator of runs is gone without reaching the delimiter
#: (it raised: an I/O error, say), so that this is never taken for the end of the frames.
_GONE: Final = object()


class WalkedLayout(FrameLayout):
    """A layout of one fragment per frame whose frames are located on demand.

    Build with :func:`open_frame_layout`. :meth:`span` answers for located frames only;
    call :meth:`locate` (in a worker thread: it reads the file) first.

    Parameters
    ----------
    number_of_frames: int
        Number of Frames
    file_size: int
        Size of the file in bytes
    value_offset: int
        Absolute offset of the Pixel Data value (its empty Basic Offset Table item)
    transfer_syntax_uid: str
        A transfer syntax with codestream start markers
    """

    __slots__ = (
        "_error",
        "_file_size",
        "_lock",
        "_read_at",
        "_runs",
        "_seen",
        "_syntax",
        "_value_offset",
        "known",
    )

    def __init__(
        self, number_of_frames: int, file_size: int, value_offset: int, transfer_syntax_uid: str
    ) -> None:
        super().__init__(
            np.zeros(number_of_frames, dtype=np.int64),
            np.zeros(number_of_frames, dtype=np.int64),
            encapsulated=True,
        )
        self.known = 0
        self._seen = 0
        self._file_size = file_size
        self._value_offset = value_offset
        self._syntax = transfer_syntax_uid
        self._lock = threading.Lock()
        self._error: InvalidDataError | None = None
        self._read_at: ReadAt | None = None
        self._runs: Iterator[FragmentRun | None] | None = _until_delimiter(
            fragment_runs(
                self._read,
                file_size,
                value_offset + len(EMPTY_ITEM),
                FRAME_START_MARKERS[transfer_syntax_uid],
            )
        )

    @property
    def complete(self) -> bool:
        """bool: Whether every frame is located."""
        return self._runs is None and self._error is None

    def locate(self, frame_number: int, read_at: ReadAt) -> bool:
        """Walk the fragments until frame ``frame_number`` is located (see FrameLayout).

        ``read_at`` reads the file the layout was built from, which the caller checked has
        not changed. Returns whether this call located the last frames. A broken file raises
        :class:`dicomslide.errors.InvalidDataError` (what the exact scan says) when the walk
        reaches the fault, and on every call after.
        """
        with self._lock:
            if self._error is not None:
                # A new exception each time: the stored one is shared by every thread.
                raise InvalidDataError(str(self._error)) from self._error
            if self._runs is None or frame_number <= self.known:
                return False
            self._read_at = read_at
            try:
                self._walk(frame_number)
            except InvalidDataError as exc:
                self._error, self._runs = exc, None
                raise
            finally:
                self._read_at = None
            return self._runs is None

    def span(self, frame_number: int) -> tuple[int, int]:
        """As :meth:`FrameLayout.span`, for a located frame only (else IndexError)."""
        if frame_number > self.known:
            raise IndexError(f"frame {frame_number} is not located yet (call locate first)")
        return super().span(frame_number)

    def _read(self, offset: int, size: int) -> bytes:
        assert self._read_at is not None  # only called from _walk
        return self._read_at(offset, size)

    def _walk(self, frame_number: int) -> None:
        assert self._runs is not None
        n = self.number_of_frames
        while self.known < frame_number:
            run = next(self._runs, _GONE)
            if run is _GONE:  # an earlier walk raised in the middle of a run
                self._exact()
                return
            if run is None:  # the sequence delimiter
                if self._seen != n:
                    self._exact()
                    return
                self.known, self._runs = n, None
                return
            assert isinstance(run, tuple)
            starts, sizes, marked = run
            assert marked is not None
            if self._seen + starts.size > n or not bool(marked.all()):
                self._exact()  # frames of several fragments, or a broken file
                return
            stop = self._seen + starts.size
            self.starts[self._seen : stop] = starts
            self.stops[self._seen : stop] = starts + 8 + sizes
            # The last fragment seen ends its frame only if the next one starts a frame.
            self._seen, self.known = stop, stop - 1

    def _exact(self) -> None:
        """Locate every frame with the exact scan (its error, if the file is broken)."""
        assert self._read_at is not None
        exact = build_encapsulated_layout(
            self._read_at,
            file_size=self._file_size,
            value_offset=self._value_offset,
            number_of_frames=self.number_of_frames,
            transfer_syntax_uid=self._syntax,
        )
        self.starts[:] = exact.starts
        self.stops[:] = exact.stops
        self.known, self._runs = self.number_of_frames, None


def _until_delimiter(runs: Iterator[FragmentRun]) -> Iterator[FragmentRun | None]:
    """The runs, then None once they reached the sequence delimiter (and not if they raised)."""
    yield from runs
    yield None


def open_frame_layout(header: Part10Header, read_at: ReadAt, file_size: int) -> FrameLayout:
    """A walked layout when the frames can be located on demand, else the exact one.

    Parameters
    ----------
    header: dicomslide.sources.part10.Part10Header
        The file's header, read with at least the ``LAYOUT_TAGS`` and with Pixel Data
    read_at: ReadAt
        Random access to the file
    file_size: int
        Size of the file

    Returns
    -------
    FrameLayout
        A :class:`WalkedLayout` with no frame located yet, or the layout
        :func:`~dicomslide.sources.part10.build_frame_layout` builds (and its errors)
    """
    dataset, pixel_data, syntax = header.dataset, header.pixel_data, header.transfer_syntax_uid
    if dataset is None or pixel_data is None:
        raise InvalidDataError("no Pixel Data element")
    try:
        number_of_frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        number_of_frames = 0  # the exact build says what is wrong
    walkable = (
        pixel_data.tag == PIXEL_DATA
        and pixel_data.length is None
        and syntax in FRAME_START_MARKERS
        and number_of_frames > 1
        and "ExtendedOffsetTable" not in dataset
        and pixel_data.value_offset + 2 * len(EMPTY_ITEM) <= file_size
        and read_at(pixel_data.value_offset, len(EMPTY_ITEM)) == EMPTY_ITEM
        and read_at(file_size - len(SEQUENCE_DELIMITER_ITEM), len(SEQUENCE_DELIMITER_ITEM))
        == SEQUENCE_DELIMITER_ITEM
    )
    if walkable:
        return WalkedLayout(number_of_frames, file_size, pixel_data.value_offset, syntax)
    return build_frame_layout(dataset, pixel_data, syntax, read_at, file_size)
