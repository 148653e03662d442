"""The start/stop shape every daemon harness shares (sshd, the clusters of the tests): a failed start
cleans up after itself."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Daemons:
    """Subclasses write `_start()` and `stop()` (which must cope with a half-done start)."""

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
