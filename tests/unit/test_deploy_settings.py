"""What `sam deploy` would send CloudFormation: the samconfig.toml profiles against the template's
parameter constraints and Rules, evaluated here as CloudFormation evaluates them before it changes
anything. A profile that would deploy a stack refusing every request must be refused instead."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from local.template import load_yaml
from tests.support import ROOT

TEMPLATE = load_yaml(ROOT / "template.yaml")
PARAMETERS: dict[str, dict[str, Any]] = TEMPLATE["Parameters"]
SAMCONFIG = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
FILLED = {
    "OidcIssuer": "https://issuer.example.invalid/pool",
    "OidcAudience": "app-client-id",
    "AlarmEmail": "operators@example.invalid",
}


def profile(name: str) -> dict[str, str]:
    overrides = SAMCONFIG[name]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in overrides.split())


def _value(name: str, given: dict[str, str]) -> Any:
    raw = given.get(name, str(PARAMETERS[name].get("Default", "")))
    if PARAMETERS[name]["Type"] == "CommaDelimitedList":
        return raw.split(",")
    return raw


def _evaluate(expression: Any, given: dict[str, str]) -> Any:
    """The intrinsic functions CloudFormation allows in Rules (those this template uses)."""
    if isinstance(expression, dict):
        ((function, argument),) = expression.items()
        if function == "Ref":
            return _value(argument, given)
        values = [_evaluate(item, given) for item in argument] if isinstance(argument, list) else None
        match function:
            case "Fn::Equals":
                return str(values[0]) == str(values[1])
            case "Fn::Not":
                return not values[0]
            case "Fn::And":
                return all(values)
            case "Fn::Or":
                return any(values)
            case "Fn::Contains":
                return values[1] in values[0]
        raise AssertionError(f"a Rules function this test does not know: {function}")
    return expression


def refusals(given: dict[str, str]) -> list[str]:
    """Why CloudFormation would refuse these parameter values (empty: it would go ahead)."""
    found = []
    for name, value in given.items():
        declaration = PARAMETERS.get(name)
        if declaration is None:
            found.append(f"{name}: not a parameter of the template")
            continue
        allowed = declaration.get("AllowedValues")
        if allowed is not None and value not in [str(a) for a in allowed]:
            found.append(f"{name}: not one of {allowed}")
        pattern = declaration.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(pattern, value):
            found.append(f"{name}: does not match {pattern}")
    for rule_name, rule in TEMPLATE.get("Rules", {}).items():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], given):
            continue
        for assertion in rule["Assertions"]:
            if not _evaluate(assertion["Assert"], given):
                found.append(f"{rule_name}: {assertion['AssertDescription']}")
    return found


@pytest.mark.parametrize("name", ["default", "prod"])
def test_a_profile_as_shipped_is_refused_until_its_placeholders_are_filled(name: str) -> None:
    shipped = profile(name)
    assert "FILL-IN" in shipped.values()

    refused = refusals(shipped)

    assert any(r.startswith("OidcIssuer: does not match") for r in refused), refused
    assert any("OidcAudience is still the placeholder" in r for r in refused), refused
    filled = {key: FILLED.get(key, value) if value == "FILL-IN" else value for key, value in shipped.items()}
    assert refusals(filled) == []


def test_the_prod_profile_sets_what_a_production_stack_needs() -> None:
    prod = profile("prod")
    assert prod["AuthMode"] in {"oidc", "keystone"}
    assert "AlarmEmail" in prod or "AlarmTopicArn" in prod  # the alarms go somewhere


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"AuthMode": "oidc"}, "AuthMode oidc needs OidcIssuer"),
        ({"AuthMode": "oidc", "OidcIssuer": "https://issuer.invalid"}, "AuthMode oidc needs OidcAudience"),
        (
            {"AuthMode": "oidc", "OidcIssuer": "http://issuer.invalid", "OidcAudience": "a"},
            "OidcIssuer: does not",
        ),
        ({"AuthMode": "keystone", "KeystoneCredentialsSecret": "s"}, "AuthMode keystone needs KeystoneUrl"),
        (
            {"AuthMode": "keystone", "KeystoneUrl": "https://keystone.invalid/v3"},
            "needs KeystoneCredentialsSecret",
        ),
        ({"WorkerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/w:1"}, "needs WorkerSubnets"),
    ],
)
def test_settings_that_would_refuse_every_request_are_refused_at_deploy(
    given: dict[str, str], expected: str
) -> None:
    assert any(expected in refusal for refusal in refusals(given)), refusals(given)


def test_complete_settings_of_each_token_kind_deploy() -> None:
    oidc = {"AuthMode": "oidc", "OidcIssuer": "https://issuer.invalid", "OidcAudience": "client"}
    keystone = {
        "AuthMode": "keystone",
        "KeystoneUrl": "https://keystone.invalid",
        "KeystoneCredentialsSecret": "s",
    }
    assert refusals(oidc) == [] and refusals(keystone) == []


def test_the_deploying_guide_lists_every_parameter_with_its_default() -> None:
    guide = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    guide = guide.split("\n## Every parameter\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", guide, flags=re.MULTILINE))
    assert set(rows) == set(PARAMETERS), (
        f"missing: {sorted(set(PARAMETERS) - set(rows))}; not in the template: {sorted(set(rows) - set(PARAMETERS))}"
    )
    for name, declaration in PARAMETERS.items():
        default = str(declaration.get("Default", ""))
        shown = rows[name].strip()
        assert shown == (f"`{default}`" if default else "(empty)"), (
            f"{name}: the guide says {shown}, the template {default!r}"
        )
