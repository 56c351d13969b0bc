"""Turn pydantic validation errors into messages that name the field and the fix, and keep every
message bounded: user input may be hostile (10 KB strings, control characters), and whatever it
puts into a message ends up in Events, ``status.message``, webhook answers and terminals."""

from __future__ import annotations

from pydantic import ValidationError

ELLIPSIS = "…"
MESSAGE_LIMIT = 1024  # longest Event / status message / CLI error line we write
VALUE_LIMIT = 80  # longest echo of one user-supplied value inside a message
FIELD_LIMIT = 256  # longest field path (keys of unknown fields come from the user)
ERRORS_LIMIT = 10  # most problems listed for one object; the rest are counted


def bounded(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as at most ``limit`` characters: longer text is cut and ends with an ellipsis.

    Use it on anything that may carry user input before it goes into an Event, a status
    message, a log line or a CLI error, so a hostile value is never echoed in full."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    try:
        s = str(text)
    except ValueError:  # an int with more digits than Python will print
        s = "<a value too long to show>"
    return s if len(s) <= limit else s[: limit - 1] + ELLIPSIS


def show(value: object, limit: int = VALUE_LIMIT) -> str:
    """A user value quoted for a message: ``repr`` (so newlines and terminal escapes are shown
    escaped, not acted on), at most ``limit`` characters."""
    try:
        text = repr(value)
    except ValueError:  # int too long for repr
        text = "<a number too long to show>"
    return bounded(text, limit)


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line (control characters escaped), bounded: for CLI errors and log lines."""
    s = bounded(text, limit * 4)
    out = "".join(c if c.isprintable() else ("\\n" if c == "\n" else f"\\x{ord(c):02x}" if ord(c) < 256 else "?")
                  for c in s)
    return bounded(out, limit)


class SpecError(ValueError):
    """A spec that cannot be accepted. ``field`` is the dotted path the user must fix."""

    def __init__(self, field: str, message: str) -> None:
        field, message = bounded(field, FIELD_LIMIT), bounded(message, MESSAGE_LIMIT // 2)
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _dotted(loc: tuple[int | str, ...], prefix: str) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts)


def format_validation_error(exc: ValidationError, prefix: str = "spec") -> list[SpecError]:
    """One SpecError per problem, each with the full field path (``spec.resources.gpus``).

    Each message is bounded (:data:`MESSAGE_LIMIT` / 2 characters) and at most
    :data:`ERRORS_LIMIT` problems are listed; a last entry counts the others."""
    errors: list[SpecError] = []
    all_errors = exc.errors(include_input=False, include_url=False)
    for err in all_errors[:ERRORS_LIMIT]:
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and "[" in x and "]" in x))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = "unknown field: remove it or check its spelling against `kubectl explain`"
        elif err["type"] == "missing":
            msg = "required field is missing: add it"
        errors.append(SpecError(_dotted(loc, prefix), one_line(msg, MESSAGE_LIMIT // 2)))
    if len(all_errors) > ERRORS_LIMIT:
        errors.append(SpecError(prefix, f"and {len(all_errors) - ERRORS_LIMIT} more problems not listed: "
                                        "fix the ones above first"))
    return errors
