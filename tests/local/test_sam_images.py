"""The layer images of the container tier (local/sam_images.py): which layers each function gets,
the template copy sam local reads, and the content names that decide when an image is built again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local.sam_images import (
    LayerImageError,
    containerfile,
    content_digest,
    function_layers,
    image_name,
    remove_stale_images,
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


class FakePodman:
    """`podman images` answers the listed names; `podman rmi` succeeds except for images in use."""

    def __init__(self, listed: list[str], in_use: set[str]) -> None:
        self.listed, self.in_use = listed, in_use
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[0] == "images":
            return subprocess.CompletedProcess(args, 0, "\n".join(self.listed) + "\n", "")
        if args[0] == "rmi":
            return subprocess.CompletedProcess(args, 1 if args[1] in self.in_use else 0, "", "")
        raise AssertionError(f"unexpected podman {args}")


def test_a_new_build_removes_the_old_layer_images_nobody_uses() -> None:
    # Given the day-old images of the tier: the current ones, an old pair, one a container still
    # uses, and an image that is not the tier's
    prefix = "localhost/imagetasks-lambda-layers-"
    current = {f"{prefix}aaaa:latest"}
    podman = FakePodman(
        [
            f"{prefix}aaaa:rapid-x86_64",
            f"{prefix}aaaa:latest",
            f"{prefix}old1:latest",
            f"{prefix}old1:rapid-x86_64",
            f"{prefix}busy:latest",
            "localhost/someone-else:latest",
        ],
        in_use={f"{prefix}busy:latest"},
    )

    # When the stale ones are removed
    removed = remove_stale_images(current, podman)

    # Then only the old pair goes, SAM's image on top before the one below it
    assert removed == [f"{prefix}old1:rapid-x86_64", f"{prefix}old1:latest"]
    listing = podman.calls[0]
    assert "label=imagetasks.layers" in listing and "until=24h" in listing
    assert [call[1] for call in podman.calls[1:]] == [*removed, f"{prefix}busy:latest"]
