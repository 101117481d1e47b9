"""The layer images of the container tier (local/sam_images.py): which layers each function gets,
the template copy sam local reads, and the content names that decide when an image is built again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from local.sam_images import (
    LayerImageError,
    containerfile,
    content_digest,
    function_layers,
    image_name,
    without_layers,
)

LAYER = {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": "CommonLayer"}}


def built_template() -> dict[str, Any]:
    """A template as `sam build` writes it: Globals' layers, one function adding its own."""
    return {
        "Globals": {"Function": {"Runtime": "python3.13", "Layers": [{"Ref": "CommonLayer"}]}},
        "Resources": {
            "CommonLayer": LAYER,
            "QemuLayer": {**LAYER, "Properties": {"ContentUri": "QemuLayer"}},
            "ApiFunction": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "ApiFunction"}},
            "ConvertFunction": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"CodeUri": "ConvertFunction", "Layers": [{"Ref": "QemuLayer"}]},
            },
            "Workflow": {
                "Type": "AWS::Serverless::StateMachine",
                "Properties": {"DefinitionUri": "../../statemachine/workflow.asl.json"},
            },
        },
    }


def test_each_function_gets_the_globals_layers_then_its_own() -> None:
    assert function_layers(built_template()) == {
        "ApiFunction": ("CommonLayer",),
        "ConvertFunction": ("CommonLayer", "QemuLayer"),
    }


def test_a_layer_that_is_not_a_layer_of_the_template_is_refused() -> None:
    template = built_template()
    template["Resources"]["ApiFunction"]["Properties"]["Layers"] = [
        "arn:aws:lambda:us-east-1:123456789012:layer:other:1"
    ]
    with pytest.raises(LayerImageError, match="ApiFunction"):
        function_layers(template)


def test_the_copy_for_sam_local_has_no_layers_and_absolute_paths(tmp_path: Path) -> None:
    # Given the built template, in the build directory
    template = built_template()

    # When sam local's copy is made (it lives elsewhere)
    copy = without_layers(template, tmp_path)

    # Then no function declares a layer, every path names the same place as before, and the
    # original is untouched
    assert "Layers" not in copy["Globals"]["Function"]
    resources = copy["Resources"]
    assert "Layers" not in resources["ConvertFunction"]["Properties"]
    assert resources["ApiFunction"]["Properties"]["CodeUri"] == str(tmp_path / "ApiFunction")
    assert resources["QemuLayer"]["Properties"]["ContentUri"] == str(tmp_path / "QemuLayer")
    workflow = resources["Workflow"]["Properties"]["DefinitionUri"]
    assert workflow == str(tmp_path / "../../statemachine/workflow.asl.json")
    assert template["Globals"]["Function"]["Layers"] == [{"Ref": "CommonLayer"}]


def test_layers_are_copied_into_opt_in_lambdas_order() -> None:
    assert containerfile("public.ecr.aws/lambda/python:3.13-x86_64", ["CommonLayer", "QemuLayer"]) == (
        "FROM public.ecr.aws/lambda/python:3.13-x86_64\nCOPY CommonLayer/ /opt/\nCOPY QemuLayer/ /opt/\n"
    )


def test_a_layers_digest_follows_its_content_not_its_timestamps(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "python" / "pkg").mkdir(parents=True)
    module = layer / "python" / "pkg" / "__init__.py"
    module.write_text("VERSION = 1\n")
    (layer / "python" / "current").symlink_to("pkg")
    first = content_digest(layer)

    os.utime(module, (0, 0))  # sam build --cached copies files again: new timestamps, same bytes
    assert content_digest(layer) == first

    module.write_text("VERSION = 2\n")
    assert content_digest(layer) != first

    module.write_text("VERSION = 1\n")
    (layer / "python" / "current").unlink()
    (layer / "python" / "current").symlink_to("elsewhere")
    assert content_digest(layer) != first


def test_the_image_name_changes_with_the_base_a_layer_or_their_order() -> None:
    layers = [("CommonLayer", "a" * 64), ("QemuLayer", "b" * 64)]
    name = image_name("sha256:base", layers)

    assert name.startswith("localhost/imagetasks-lambda-layers-") and name.endswith(":latest")
    assert image_name("sha256:base", layers) == name
    assert image_name("sha256:other-base", layers) != name
    assert image_name("sha256:base", [layers[0], ("QemuLayer", "c" * 64)]) != name
    assert image_name("sha256:base", list(reversed(layers))) != name
