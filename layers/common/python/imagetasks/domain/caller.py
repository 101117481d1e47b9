"""Who is calling: what the authorizer established, never what a client claims in headers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Caller(BaseModel):
    model_config = ConfigDict(frozen=True)

    project_id: str
    user_id: str = ""
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def can_see(self, owner: str) -> bool:
        return self.is_admin or owner == self.project_id

    @classmethod
    def from_authorizer_context(cls, context: dict[str, object]) -> Caller | None:
        """Read API Gateway's `requestContext.authorizer` (values are strings there)."""
        project_id = context.get("project_id")
        if not isinstance(project_id, str) or not project_id:
            return None
        roles_value = context.get("roles", "")
        roles = tuple(r.strip() for r in str(roles_value).split(",") if r.strip())
        return cls(project_id=project_id, user_id=str(context.get("user_id", "")), roles=roles)
