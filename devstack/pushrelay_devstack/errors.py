"""The one error type the devstack raises for things a person must fix."""

from __future__ import annotations

from pathlib import Path


class DevstackError(RuntimeError):
    """A step failed. ``component`` names what, ``log`` is where to look."""

    def __init__(self, component: str, message: str, log: Path | None = None) -> None:
        self.component = component
        self.message = message
        self.log = log
        text = f"{component}: {message}"
        if log is not None:
            text += f" (log: {log})"
        super().__init__(text)

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log, for printing under the message."""
        if self.log is None or not self.log.is_file():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])
