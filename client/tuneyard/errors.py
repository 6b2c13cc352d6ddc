"""What the client raises: one exception type per kind of refusal, all of them TuneyardError."""

from __future__ import annotations


class TuneyardError(Exception):
    """The server refused, or could not be reached. ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message


class Unreachable(TuneyardError):
    """No answer: the server is down, the name does not resolve, the connection broke."""


class Unauthorized(TuneyardError):
    """401: no token, a wrong one, or an expired one."""


class Invalid(TuneyardError):
    """400: the request was refused as it stands; the message names what to change."""


class Forbidden(TuneyardError):
    """403: the token or the person's role does not allow it."""


class NotFound(TuneyardError):
    """404: no such thing, or not one you may see."""


class Conflict(TuneyardError):
    """409: the thing is not in a state that allows it (already decided, already running ...)."""


class JobFailed(TuneyardError):
    """A waited-for job or sweep ended other than succeeded; ``result`` is how it ended."""

    def __init__(self, message: str, *, result: object) -> None:
        super().__init__(message)
        self.result = result


BY_STATUS: dict[int, type[TuneyardError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}
