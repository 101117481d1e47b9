"""The least-privilege ledger: every grant of the template's roles, and the tests that use it.

    python -m tests.iam_ledger [--calls DIR] [--out docs/iam.md] [--check]

Reads the calls the local IAM enforcement recorded during the test run (`local/iam_ledger.py`: one
file per test process in DIR, `$IMAGETASKS_IAM_LEDGER`), expands each role's Allow statements of the
translated template into (action, resource) grants, and writes `docs/iam.md`: per principal, each
grant with the number of tests that made a call it allows and a few of their ids. `--check` (the
last step of `make test`, after every tier) fails when a grant no test uses is not explained in
the template (see `REASONS_KEY`), or an explanation names a grant that no longer exists.
A partial run (one file) writes nothing and checks nothing: nobody runs this after it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local import iam, iam_policy
from local.template import LOCAL_PARAMETER_OVERRIDES, load_template
from tests.support import ROOT

TEMPLATE = ROOT / "template.yaml"
#: The parameters of the ledger's translation: the local stack's, with every optional grant on
#: (the container runner's roles; the authorizer's Keystone secret, which the integration tier uses).
PARAMETERS = {**LOCAL_PARAMETER_OVERRIDES, "KeystoneCredentialsSecret": "imagetasks-keystone-service"}
#: `Metadata: {IamLedger: {Unexercised: {<Sid or policy name>: <why no test calls it>}}}` on the
#: function, state machine, role or policy resource that holds the statement.
REASONS_KEY = ("IamLedger", "Unexercised")
EXAMPLES = 3


@dataclass(frozen=True)
class Grant:
    principal: str
    action: str
    resource: str
    #: the (policy name, Sid or "") of each statement that grants it
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False, hash=False)


@dataclass
class Use:
    tests: set[str] = field(default_factory=set)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(roles: Mapping[str, iam.Role]) -> list[Grant]:
    """Every (action, resource) an Allow statement of a role's inline policies names."""
    found: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for principal, role in sorted(roles.items()):
        for policy_name, document in sorted(role.inline_policies.items()):
            for statement in _as_list(document.get("Statement", [])):
                if statement.get("Effect") != "Allow" or "Action" not in statement:
                    continue
                for action in _as_list(statement["Action"]):
                    for resource in _as_list(statement.get("Resource", "*")):
                        found.setdefault((principal, action, resource), []).append(
                            (policy_name, str(statement.get("Sid", "")))
                        )
    return [Grant(*triple, sources=tuple(sources)) for triple, sources in found.items()]


def reasons(translated: Mapping[str, Any], roles: Mapping[str, iam.Role]) -> dict[str, dict[str, str]]:
    """Principal → {Sid or policy name → why}, from the Metadata of the resources that make its role."""
    resources: dict[str, Any] = translated["Resources"]
    found: dict[str, dict[str, str]] = {}
    for principal, role in roles.items():
        owners = [principal, role.role_logical_id]
        owners += [
            logical_id
            for logical_id, resource in resources.items()
            if resource.get("Type") == "AWS::IAM::Policy"
            and {"Ref": role.role_logical_id} in resource["Properties"].get("Roles", [])
        ]
        for owner in owners:
            metadata: Any = resources.get(owner, {}).get("Metadata") or {}
            for key in REASONS_KEY:
                metadata = metadata.get(key) or {} if isinstance(metadata, dict) else {}
            found.setdefault(principal, {}).update({str(k): str(v) for k, v in metadata.items()})
    return found


def read_calls(directory: Path) -> dict[tuple[str, str, str], set[str]]:
    calls: dict[tuple[str, str, str], set[str]] = {}
    for path in sorted(directory.glob("calls-*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            calls.setdefault((row["principal"], row["action"], row["resource"]), set()).update(row["tests"])
    return calls


def _matches(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return iam_policy.glob_match(pattern, value) is not None


def uses(granted: Iterable[Grant], calls: Mapping[tuple[str, str, str], set[str]]) -> dict[Grant, Use]:
    """Each grant → the tests that made a call it allows (action names are case-insensitive in IAM,
    resource ARNs are not)."""
    by_principal: dict[str, list[tuple[str, str, set[str]]]] = {}
    for (principal, action, resource), tests in calls.items():
        by_principal.setdefault(principal, []).append((action, resource, tests))
    result: dict[Grant, Use] = {}
    for grant in granted:
        use = Use()
        for action, resource, tests in by_principal.get(grant.principal, []):
            if _matches(grant.action, action, case_sensitive=False) and _matches(
                grant.resource, resource, case_sensitive=True
            ):
                use.tests |= tests
        result[grant] = use
    return result


@dataclass
class Ledger:
    granted: list[Grant]
    used: dict[Grant, Use]
    why: dict[str, dict[str, str]]
    managed: dict[str, tuple[str, ...]]

    def reason(self, grant: Grant) -> str | None:
        explained = self.why.get(grant.principal, {})
        for policy, sid in grant.sources:
            for name in (sid, policy):
                if name and name in explained:
                    return explained[name]
        return None

    @property
    def exercised(self) -> list[Grant]:
        return [grant for grant in self.granted if self.used[grant].tests]

    @property
    def reasoned(self) -> list[Grant]:
        return [g for g in self.granted if not self.used[g].tests and self.reason(g) is not None]

    @property
    def unexplained(self) -> list[Grant]:
        return [g for g in self.granted if not self.used[g].tests and self.reason(g) is None]

    def stale_reasons(self) -> Iterator[str]:
        """Explanations that name no statement or policy of their principal."""
        for principal, explained in self.why.items():
            names = {
                name
                for g in self.granted
                if g.principal == principal
                for source in g.sources
                for name in source
            }
            for name in explained:
                if name not in names:
                    yield f"{principal}: {name}"


def build(calls_directory: Path) -> Ledger:
    template = load_template(TEMPLATE, PARAMETERS)
    roles = iam.template_roles(template)
    granted = grants(roles)
    return Ledger(
        granted=granted,
        used=uses(granted, read_calls(calls_directory)),
        why=reasons(template.translated, roles),
        managed={principal: role.managed_policy_arns for principal, role in roles.items()},
    )


HEADER = """# IAM ledger: what each role may do, and the tests that do it

Generated by `python -m tests.iam_ledger` at the end of `make test`; do not edit by hand.

Every AWS call a function, the state machine or the container runner makes during the tests goes
through the local stack's IAM enforcement under that principal's own role (`local/iam.py`), which
records it. Each row below is one (action, resource) an Allow statement of the translated template
grants, with the number of tests whose calls it allowed and a few of them. `make test` fails when a
grant no test uses is not explained in the template.

How to explain a grant no test can use (log delivery done by AWS itself, a failure destination
Lambda writes to, a call only the real service makes): give its statement a `Sid`, and add the
reason to the `Metadata` of the resource that holds the statement (the function, the state
machine, the role or the `AWS::IAM::Policy`):

```yaml
Metadata:
  IamLedger:
    Unexercised:
      LogDelivery: Step Functions itself delivers the execution logs; no test can call it.
```

A key may also be the name of a whole policy SAM generates (for example an `EventInvokeConfig`
on-failure destination policy). An explanation that names no statement any more fails the check.
AWS managed policies (`AWSLambdaBasicExecutionRole`, `AWSXrayWriteOnlyAccess`) are listed, not
expanded: their grants are AWS's, used by the runtime rather than by the code.
Resources are shown with the local stack's names (`imagetasks-local-…`).
"""


def render(ledger: Ledger) -> str:
    lines = [HEADER, "## Figures", ""]
    lines.append(
        f"{len(ledger.granted)} granted (principal, action, resource); {len(ledger.exercised)} exercised by "
        f"tests; {len(ledger.reasoned)} not exercised, with a reason; {len(ledger.unexplained)} "
        "not exercised without one."
    )
    lines.append("")
    principals = sorted({grant.principal for grant in ledger.granted} | set(ledger.managed))
    lines += ["| principal | granted | exercised | reasoned | unexplained |", "|---|---|---|---|---|"]
    for principal in principals:
        mine = [g for g in ledger.granted if g.principal == principal]
        lines.append(
            f"| {principal} | {len(mine)} | {sum(1 for g in mine if g in ledger.exercised)} | "
            f"{sum(1 for g in mine if g in ledger.reasoned)} | "
            f"{sum(1 for g in mine if g in ledger.unexplained)} |"
        )
    for principal in principals:
        lines += ["", f"## {principal}", ""]
        if ledger.managed.get(principal):
            managed = ", ".join(f"`{arn.rsplit('/', 1)[-1]}`" for arn in ledger.managed[principal])
            lines += [f"AWS managed: {managed}.", ""]
        lines += ["| action | resource | tests | e.g. / why not |", "|---|---|---|---|"]
        for grant in [g for g in ledger.granted if g.principal == principal]:
            tests = sorted(ledger.used[grant].tests)
            if tests:
                detail = "<br>".join(f"`{test}`" for test in tests[:EXAMPLES])
            else:
                detail = f"**not exercised**: {ledger.reason(grant) or 'NO REASON GIVEN'}"
            lines.append(f"| `{grant.action}` | `{grant.resource}` | {len(tests)} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=Path, default=None, help="directory of recorded calls")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "iam.md")
    parser.add_argument("--check", action="store_true", help="fail on unexplained unexercised grants")
    arguments = parser.parse_args(argv)
    import os

    directory = arguments.calls or Path(os.environ.get("IMAGETASKS_IAM_LEDGER", ".iam-ledger"))
    if not any(directory.glob("calls-*.json")):
        print(f"iam_ledger: no recorded calls in {directory}", file=sys.stderr)
        return 2
    ledger = build(directory)
    arguments.out.write_text(render(ledger), encoding="utf-8")
    print(
        f"iam_ledger: {len(ledger.granted)} granted, {len(ledger.exercised)} exercised, "
        f"{len(ledger.reasoned)} reasoned, {len(ledger.unexplained)} unexplained → {arguments.out}"
    )
    if not arguments.check:
        return 0
    failures = [
        f"not exercised by any test and not explained: {g.principal}: {g.action} on {g.resource} "
        f"(statements: {', '.join(sid or policy for policy, sid in g.sources)})"
        for g in ledger.unexplained
    ]
    failures += [f"explains no grant (remove it): {stale}" for stale in ledger.stale_reasons()]
    for failure in failures:
        print(f"iam_ledger: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
