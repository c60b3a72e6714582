"""The scheduling policy in force: read it (any user), replace it (admin, audited)."""

import tomllib
from typing import Any

from fastapi import APIRouter

from htcsim.agent.api.deps import Admin, Caller, EngineDep, ask
from htcsim.agent.api.errors import ERRORS, ApiError
from htcsim.agent.api.schemas import PolicyRequest
from htcsim.policy import PolicyError, policy_from_mapping, policy_to_toml

router = APIRouter()


@router.get("/policy", responses=ERRORS, tags=["policy"])
async def get_policy(principal: Caller, engine: EngineDep) -> dict[str, Any]:
    """The policy in force, as TOML and as fields."""
    return {"toml": policy_to_toml(engine.policy), "policy": engine.policy.to_dict()}


@router.put("/policy", responses=ERRORS, tags=["policy"])
async def put_policy(request: PolicyRequest, principal: Admin, engine: EngineDep) -> dict[str, Any]:
    """Replace the policy (admin): validated first, recorded in the audit log."""
    try:
        policy = policy_from_mapping(tomllib.loads(request.toml), source="policy")
    except tomllib.TOMLDecodeError as exc:
        raise ApiError(422, f"toml: not valid TOML ({exc})", "toml") from None
    except PolicyError as exc:
        raise ApiError(422, str(exc), exc.field or "toml") from None
    audit = await ask(engine.set_policy(principal, policy, request.note))
    return {"audit_id": audit, "policy": policy.to_dict()}
