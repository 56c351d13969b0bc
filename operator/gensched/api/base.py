"""Shared pydantic configuration: camelCase on the wire, unknown fields rejected."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """Base for every API type.

    Fields are snake_case in Python and camelCase in YAML, like Kubernetes.
    Unknown fields are an error (a typo such as ``gpu:`` for ``gpus:`` must not
    be silently dropped).
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,  # defaulted enums become plain strings too (YAML/JSON safe)
    )

    def to_wire(self) -> dict:
        """Dump as the API server stores it: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
