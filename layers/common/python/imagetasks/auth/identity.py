"""Who is calling: the identity an authorizer vouches for, and its round trip through API Gateway."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

ADMIN_ROLE = "admin"


def split_roles(value: str | Iterable[Any] | None) -> tuple[str, ...]:
    """Roles as a tuple, from a list or from a comma- and/or space-separated string.

    Order is kept (first occurrence wins) so the context string is stable for a given token.
    """
    if value is None:
        return ()
    items: Iterable[Any] = value.replace(",", " ").split() if isinstance(value, str) else value
    roles: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        role = item.strip()
        if role and "," not in role and role not in roles:
            roles.append(role)
    return tuple(roles)


class Caller(BaseModel):
    """The project, user and roles a request acts for. Built only from a verified token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: str = Field(min_length=1, max_length=255)
    user_id: str = Field(min_length=1, max_length=255)
    roles: tuple[str, ...] = ()

    @field_validator("project_id", "user_id")
    @classmethod
    def _no_blank_ids(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("roles", mode="before")
    @classmethod
    def _normalise_roles(cls, value: Any) -> tuple[str, ...]:
        return split_roles(value)

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def can_see(self, owner: str) -> bool:
        """Admins see every project's tasks and images; members only their own project's."""
        return self.is_admin or owner == self.project_id

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def to_authorizer_context(self) -> dict[str, str]:
        """The `context` an authorizer returns; API Gateway only carries string values."""
        return {"project_id": self.project_id, "user_id": self.user_id, "roles": ",".join(self.roles)}

    @classmethod
    def from_authorizer_context(cls, context: Mapping[str, Any]) -> Caller:
        """Read the caller back from `requestContext.authorizer` of a proxy event.

        Only the authorizer's context is trusted; request headers never are.
        """
        return cls(
            project_id=str(context.get("project_id") or ""),
            user_id=str(context.get("user_id") or ""),
            roles=str(context.get("roles") or ""),
        )


Identity = Caller
"""Alias: some modules speak of the caller's identity."""
