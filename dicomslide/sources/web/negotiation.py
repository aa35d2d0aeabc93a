"""What the DICOMweb client has learnt about how a server serves each instance's frames.

One :class:`InstanceNegotiation` per SOP Instance UID holds all of it, so the rules that read
and change it (in :mod:`dicomslide.sources.web.client` and the whole-instance fallback) see
one consistent record instead of several dictionaries and sets kept in step by hand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dicomslide.errors import DicomWebError

__all__ = ["InstanceNegotiation", "Negotiation"]


@dataclass
class InstanceNegotiation:
    """How frames of one instance are to be asked for.

    Attributes
    ----------
    syntax: str | None
        Its Available Transfer Syntax UID, from the metadata (asked for explicitly when the
        server refuses stored bytes)
    stored: bool | None
        Whether the server sends its stored bytes (``transfer-syntax=*``): True, False, or
        None while unknown
    probe: asyncio.Future[None] | None
        The first frames request in flight, whose outcome other requests wait for
    refused: DicomWebError | None
        Why the server will not send its frames at all: they are cut from the whole instance
    refusal_confirmed: bool
        Whether the whole instance has been fetched since (the refusal then holds for good)
    """

    syntax: str | None = None
    stored: bool | None = None
    probe: asyncio.Future[None] | None = None
    refused: DicomWebError | None = None
    refusal_confirmed: bool = False

    def refuse(self, error: DicomWebError) -> None:
        """Record that frames are refused, keeping the first reason.

        Parameters
        ----------
        error: dicomslide.errors.DicomWebError
            The refusal
        """
        if self.refused is None:
            self.refused = error


class Negotiation:
    """The :class:`InstanceNegotiation` of every instance a client has asked about."""

    def __init__(self) -> None:
        self._instances: dict[str, InstanceNegotiation] = {}

    def of(self, sop_instance_uid: str) -> InstanceNegotiation:
        """The record of an instance (a fresh one the first time).

        Parameters
        ----------
        sop_instance_uid: str
            SOP Instance UID

        Returns
        -------
        InstanceNegotiation
            The record, shared by every later call
        """
        state = self._instances.get(sop_instance_uid)
        if state is None:
            state = self._instances[sop_instance_uid] = InstanceNegotiation()
        return state
