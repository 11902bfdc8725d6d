"""Typed errors. Each maps to an exit code of the CLI (DESIGN.md):

- 2: the user's input or usage was bad (one line on stderr, no traceback);
- 1: anything else escaped, i.e. a bug in the toolkit.
"""


class ForensicsError(Exception):
    """Base of the errors the toolkit raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None):
        self.path = None if path is None else str(path)
        super().__init__(message)

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{self.path}: {text}" if self.path else text


class UsageError(ForensicsError):
    """Wrong arguments or options."""


class MediaError(ForensicsError):
    """A file is unreadable, truncated, too large or of the wrong type."""


class CorpusError(ForensicsError):
    """A corpus folder, its card or one of its rows is invalid."""


class CheckpointError(ForensicsError):
    """A checkpoint folder is missing, incomplete or inconsistent."""


class ProvenanceError(ForensicsError):
    """Signing keys, trust anchors, a manifest or the manifest store are missing or unusable."""
