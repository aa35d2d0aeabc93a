"""borrowed_doc: which sections a callable borrows, and where they land in its docstring."""

from __future__ import annotations

from dicomslide._docs import borrowed_doc


def _source(a: int, b: str) -> int:
    """Do the thing.

    Parameters
    ----------
    a: int
        First
    b: str
        Second

    Returns
    -------
    int
        The source's result
    """
    return a


def test_only_parameters_are_borrowed_and_go_before_own_sections() -> None:
    @borrowed_doc(_source, only=("Parameters",))
    def twin(a: int, b: str) -> None:
        """Do it differently.

        Raises
        ------
        ValueError
            Always
        """

    doc = twin.__doc__ or ""
    assert "The source's result" not in doc
    assert doc.index("Do it differently.") < doc.index("a: int") < doc.index("Raises")
    assert doc.endswith("ValueError\n    Always")


def test_every_section_is_borrowed_by_default() -> None:
    @borrowed_doc(_source)
    def twin(a: int, b: str) -> int:
        """Do it again."""
        return a

    doc = twin.__doc__ or ""
    assert doc.startswith("Do it again.\n\nParameters\n----------\na: int")
    assert doc.endswith("int\n    The source's result")


def test_own_and_borrowed_sections_interleave_in_numpydoc_order() -> None:
    @borrowed_doc(_raiser, only=("Raises",))
    @borrowed_doc(_source, only=("Parameters",))
    def twin(a: int, b: str) -> str:
        """Do it as text.

        Returns
        -------
        str
            Text
        """
        return b

    doc = twin.__doc__ or ""
    assert doc.index("a: int") < doc.index("Returns") < doc.index("Raises") < doc.index("KeyError")
    assert "The source's result" not in doc


def _raiser() -> None:
    """Fail.

    Raises
    ------
    KeyError
        Always
    """
    raise KeyError
