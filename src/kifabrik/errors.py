"""The one error type that faces show to users."""

from __future__ import annotations


class KifabrikError(Exception):
    """An error caused by the user's input or environment, with a way out.

    Faces (CLI, HTTP) print `message` and `hint` and exit non-zero; they never
    print a traceback for this type. Anything else that escapes is a bug.

    Args:
        message: What was wrong and where (file:line, field, id).
        hint: How to fix it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class NotFoundError(KifabrikError):
    """A referenced artifact, model or run does not exist."""
