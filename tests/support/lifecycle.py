"""The ``with`` protocol shared by the test servers: enter starts, leaving stops."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

_S = TypeVar("_S", bound="StartStop")


class StartStop:
    """Base for helpers with ``start() -> self`` and ``stop()``, usable as ``with Helper():``."""

    def start(self: _S) -> _S:
        """Start; return ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop; calling it again does nothing."""
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
