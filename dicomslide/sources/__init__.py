"""Sources of DICOM data: local folders, DICOMweb servers and foreign clients."""

from dicomslide.sources.protocol import EncodedFrame, Source

__all__ = ["EncodedFrame", "Source"]
