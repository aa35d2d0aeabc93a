"""dicomslide: fast asyncio-first reader for DICOM whole-slide microscopy images."""
