"""Hostile and broken DICOMweb servers on loopback (issue 18)."""
