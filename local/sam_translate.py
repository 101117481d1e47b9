"""template.yaml → the CloudFormation template SAM deploys, printed as JSON on stdout.

Run with the interpreter of the SAM CLI's environment (`.venv-sam/bin/python local/sam_translate.py
TEMPLATE PARAMETERS_JSON`): aws-sam-translator lives there, beside the SAM CLI that uses it, and
installing it beside moto would move pydantic away from the version the functions' layer pins.
The output is what CloudFormation receives on `sam deploy`: roles with the policy templates expanded,
event sources turned into permissions and notifications, Globals merged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REGION = "us-east-1"


#: What `sam package` turns a local path into before CloudFormation sees the template.
_PACKAGED_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")
#: The bucket of those S3 URIs: local/template.py maps `s3://ARTIFACT_BUCKET/<path>` back to <path>.
ARTIFACT_BUCKET = "imagetasks-local-artifacts"


def _as_packaged(template: dict[str, Any]) -> None:
    """Local code paths become S3 URIs, as `sam package` makes them (the translator accepts only those),
    in the resources and in the Globals (a CodeUri shared by every function)."""
    sections = [resource.get("Properties") or {} for resource in (template.get("Resources") or {}).values()]
    sections += [section for section in (template.get("Globals") or {}).values() if isinstance(section, dict)]
    for properties in sections:
        for name in _PACKAGED_PROPERTIES:
            if isinstance(properties.get(name), str) and not properties[name].startswith("s3://"):
                properties[name] = f"s3://{ARTIFACT_BUCKET}/{properties[name]}"


def translate(template_path: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    sam_template = yaml_parse(template_path.read_text(encoding="utf-8"))
    _as_packaged(sam_template)
    # The template names no AWS managed policy by its short name: the translator's map of them stays empty.
    result: dict[str, Any] = transform(sam_template, parameters, SimpleNamespace(load=dict))
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: sam_translate.py TEMPLATE PARAMETERS_JSON", file=sys.stderr)
        return 2
    json.dump(translate(Path(argv[1]), json.loads(argv[2])), sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
