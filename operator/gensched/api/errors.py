"""Turn pydantic validation errors into messages that name the field and the fix."""

from __future__ import annotations

from pydantic import ValidationError


class SpecError(ValueError):
    """A spec that cannot be accepted. ``field`` is the dotted path the user must fix."""

    def __init__(self, field: str, message: str) -> None:
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
    """One SpecError per problem, each with the full field path (``spec.resources.gpus``)."""
    errors: list[SpecError] = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and "[" in x and "]" in x))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = "unknown field: remove it or check its spelling against `kubectl explain`"
        elif err["type"] == "missing":
            msg = "required field is missing: add it"
        errors.append(SpecError(_dotted(loc, prefix), msg))
    return errors
