"""QIDO-RS attribute matching (PS3.4 C.2.2.2) done on this side, for every source.

The local folder client answers searches itself, and the DICOMweb client filters here when a
server rejects the filters it was sent. Both use :func:`value_matches`, so a filter such as
``ContainerIdentifier="S22*"`` means the same against a folder and against any server:

* single-value matching, and any value of a multi-valued attribute (or all of them joined
  with ``\\``);
* wildcards ``*`` and ``?``;
* ranges ``low-high`` (either end open) for dates and times;
* a list of wanted values matches when any of them does (UID list matching);
* ``None`` or ``""`` matches everything (universal matching).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.multival import MultiValue

__all__ = [
    "CONTROL_KEYS",
    "RANGE_KEYWORDS",
    "dataset_matches",
    "is_exact",
    "normalize_keyword",
    "value_matches",
]

#: Attributes matched as ranges when the wanted value holds a ``-``.
RANGE_KEYWORDS: Final = frozenset({"StudyDate", "StudyTime", "PatientBirthDate"})
#: Query keys that steer the search rather than filter it.
CONTROL_KEYS: Final = frozenset({"includefield", "limit", "offset", "fuzzymatching"})


def normalize_keyword(key: str) -> str:
    """The keyword of a filter key given as a keyword or a tag.

    Parameters
    ----------
    key: str
        ``"PatientID"``, ``"00100020"`` or ``"(0010,0020)"``

    Returns
    -------
    str
        The keyword, or `key` unchanged when it names no known tag
    """
    hex_key = key.replace(",", "").replace("(", "").replace(")", "")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", hex_key):
        keyword = keyword_for_tag(int(hex_key, 16))
        if keyword:
            return keyword
    return key


@lru_cache(maxsize=256)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def value_candidates(value: Any) -> list[str]:
    """The strings a stored value offers to a QIDO match.

    Parameters
    ----------
    value: Any
        A stored attribute value (None, a single value, or several)

    Returns
    -------
    list[str]
        None: nothing; several values: their backslash-joined whole, then each value
    """
    if value is None:
        return []
    if isinstance(value, list | tuple | MultiValue):
        values = [str(v) for v in value]
        # A multi-valued attribute matches its whole value or any single value.
        return ["\\".join(values), *values]
    return [str(value)]


def is_exact(keyword: str, wanted: Any) -> bool:
    """Whether a filter value matches only an identical string (no wildcard, range or list).

    Kept beside the matcher so that a look-up by exact value stays in step with its rules.

    Parameters
    ----------
    keyword: str
        The attribute's keyword (decides whether ranges apply)
    wanted: Any
        The filter value

    Returns
    -------
    bool
        True when :func:`value_matches` would compare it with ``==`` only
    """
    return (
        isinstance(wanted, str)
        and wanted != ""
        and "*" not in wanted
        and "?" not in wanted
        and not (keyword in RANGE_KEYWORDS and "-" in wanted)
    )


def _match_one(keyword: str, candidates: list[str], wanted: Any) -> bool:
    if isinstance(wanted, list | tuple | set | frozenset):
        return any(_match_one(keyword, candidates, w) for w in wanted)
    if wanted is None:
        return True
    text = str(wanted)
    if text == "":
        return True
    if keyword in RANGE_KEYWORDS and "-" in text:
        low, _, high = text.partition("-")
        return any((not low or c >= low) and (not high or c <= high) for c in candidates)
    if "*" in text or "?" in text:
        regex = _wildcard_regex(text)
        return any(regex.fullmatch(c) for c in candidates)
    return text in candidates


def value_matches(keyword: str, value: Any, wanted: Any) -> bool:
    """Whether an attribute's value matches a QIDO filter value.

    Parameters
    ----------
    keyword: str
        The attribute's keyword (decides whether ranges apply)
    value: Any
        Its value: ``None`` (absent), a scalar, or a sequence of values
    wanted: Any
        The filter value: a scalar (with wildcards or a range), a list of them, or ``None``

    Returns
    -------
    bool
        True when the value matches
    """
    return _match_one(keyword, value_candidates(value), wanted)


def dataset_matches(ds: Dataset, filters: Mapping[str, Any]) -> bool:
    """Whether a search result matches QIDO filters (for servers that reject the filters).

    Parameters
    ----------
    ds: pydicom.Dataset
        One search result
    filters: Mapping[str, Any]
        The filters the server was to apply; control keys (``limit``...) are ignored

    Returns
    -------
    bool
        False when some returned attribute does not match; an attribute the server did not
        return cannot be judged and does not exclude the result
    """
    for key, wanted in filters.items():
        if key in CONTROL_KEYS:
            continue
        keyword = normalize_keyword(str(key))
        value = ds.get(keyword)
        if value is None:
            continue
        if not value_matches(keyword, value, wanted):
            return False
    return True
