"""``Closing``: the context-manager half of every Keel object that holds connections."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """``with obj:`` calls ``obj.close()`` on the way out, whatever happened inside.

    Example:
        >>> with Registry() as registry:  # doctest: +SKIP
        ...     registry.list_models()
    """

    def close(self) -> None:
        """Release what the object holds (subclasses say what)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
