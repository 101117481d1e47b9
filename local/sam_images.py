"""The built functions' layers baked into images once, so `sam local` starts its containers at once.

`sam local` runs a zip function in the runtime's image with the function's layers on top
(`samcli/lambda-python:3.13-x86_64-<hash of the layer names>`), and builds that image again at every
start when a layer is a resource of the template (ours all are: it cannot tell whether their files
changed); its build lock only keeps builds of one image from overlapping: with nine functions on two
layer sets it built seven times in a row, 20 to 40 s each (copying the 110 MB dependencies layer),
before the first container started. So the container tier builds those images itself, one per
distinct list of layers, named after what went into it (the stand-in image's id and every layer
file's path and content), only when that name is not there yet; and `sam local` gets a copy of the
built template without layers, each function pointed at its image with `--invoke-image`: it then
only puts its emulator on top once per image (a few seconds, the first time), and starts every
container in parallel.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from local.template import FUNCTION_TYPE, LAYER_TYPE, load_yaml

#: Each image's repository names its content: sam local puts its emulator on top as
#: `<repository>:rapid-x86_64` and never rebuilds that tag, so one repository must never change content.
REPOSITORY_PREFIX = "localhost/imagetasks-lambda-layers-"
LAYERS_DIR = "/opt"  # where Lambda extracts a function's layers

#: Runs podman with the container tier's configuration: `podman("image", "exists", name)`.
Podman = Callable[..., subprocess.CompletedProcess[str]]


class LayerImageError(RuntimeError):
    """The built template's layers cannot be baked into an image."""


def function_layers(template: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Each function's layers, as logical ids in the order Lambda extracts them (Globals' first)."""
    globals_layers = ((template.get("Globals") or {}).get("Function") or {}).get("Layers") or []
    resources: Mapping[str, Any] = template.get("Resources") or {}
    found: dict[str, tuple[str, ...]] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != FUNCTION_TYPE:
            continue
        layers = [*globals_layers, *((resource.get("Properties") or {}).get("Layers") or [])]
        names: list[str] = []
        for layer in layers:
            name = layer.get("Ref") if isinstance(layer, dict) else None
            if not isinstance(name, str) or (resources.get(name) or {}).get("Type") != LAYER_TYPE:
                raise LayerImageError(f"{logical_id}: layer {layer!r} is not a layer of the template")
            names.append(name)
        found[logical_id] = tuple(names)
    return found


#: The properties holding a path relative to the template (sam build writes them so).
PATH_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


def without_layers(template: Mapping[str, Any], template_dir: Path) -> dict[str, Any]:
    """A copy of the template whose functions declare no layers (their images hold them), its paths
    made absolute (the copy lives elsewhere; this sam local has no --base-dir)."""
    copy: dict[str, Any] = json.loads(json.dumps(template))
    (copy.get("Globals") or {}).get("Function", {}).pop("Layers", None)
    for resource in (copy.get("Resources") or {}).values():
        properties = resource.get("Properties") or {}
        if resource.get("Type") == FUNCTION_TYPE:
            properties.pop("Layers", None)
        for name in PATH_PROPERTIES:
            path = properties.get(name)
            if isinstance(path, str) and "://" not in path and not Path(path).is_absolute():
                properties[name] = str(template_dir / path)
    return copy


def content_digest(directory: Path) -> str:
    """sha256 of every file's relative path and content, and of every symlink's target, in order."""
    digest = hashlib.sha256()
    for root, directories, files in os.walk(directory):
        directories.sort()
        for name in sorted(files) + [d for d in directories if (Path(root) / d).is_symlink()]:
            path = Path(root) / name
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"-> " + os.readlink(path).encode())
            else:
                with path.open("rb") as stream:
                    while chunk := stream.read(1 << 20):
                        digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def image_name(base_image_id: str, layers: Sequence[tuple[str, str]]) -> str:
    """The image of the base with these layers ((name, content digest) in order), named by content."""
    key = json.dumps([base_image_id, [list(layer) for layer in layers]]).encode()
    return f"{REPOSITORY_PREFIX}{hashlib.sha256(key).hexdigest()[:16]}:latest"


def containerfile(base_image: str, layers: Sequence[str]) -> str:
    """Each layer's files into /opt, later ones over earlier ones, as Lambda extracts them."""
    return "".join([f"FROM {base_image}\n", *(f"COPY {name}/ {LAYERS_DIR}/\n" for name in layers)])


#: The images of a built template in this process, by (template path, its mtime): a stack starting
#: in containers asks early, in the background, and `SamLocal.start` later gets the same answer.
_images_found: dict[tuple[Path, int], dict[str, str]] = {}
_images_lock = threading.Lock()


def layer_images(built_template: Path, base_image: str, podman: Podman) -> dict[str, str]:
    """Each function's image (logical id → name): `base_image` with its layers, built if missing."""
    key = (built_template.resolve(), built_template.stat().st_mtime_ns)
    with _images_lock:  # a second caller waits for the first one's answer
        if key not in _images_found:
            _images_found[key] = _layer_images(built_template, base_image, podman)
        return dict(_images_found[key])


def _layer_images(built_template: Path, base_image: str, podman: Podman) -> dict[str, str]:
    template = load_yaml(built_template)
    build_dir = built_template.parent
    layers_of = function_layers(template)
    inspected = podman("image", "inspect", "--format", "{{.Id}}", base_image)
    if inspected.returncode != 0:
        raise LayerImageError(f"no image {base_image}: {inspected.stderr.strip()}")
    base_id = inspected.stdout.strip()
    resources = template["Resources"]
    digests: dict[str, str] = {}
    images: dict[tuple[str, ...], str] = {}
    built = False
    for layers in sorted(set(layers_of.values())):
        if not layers:
            images[layers] = base_image
            continue
        for name in layers:
            if name not in digests:
                content = build_dir / str(resources[name]["Properties"]["ContentUri"])
                if not content.is_dir():
                    raise LayerImageError(f"layer {name}: no {content} (run `make build`)")
                digests[name] = content_digest(content)
        image = image_name(base_id, [(name, digests[name]) for name in layers])
        images[layers] = image
        # One build of an image at a time on this machine (two stacks starting at once build it once).
        lock_name = hashlib.sha256(image.encode()).hexdigest()[:16]
        with (Path(tempfile.gettempdir()) / f"imagetasks-layers-{lock_name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # closing the file releases it
            if podman("image", "exists", image).returncode != 0:
                _build(image, base_image, layers, build_dir, podman)
                built = True
    if built:  # a layer changed: what it replaced is left behind
        remove_stale_images(set(images.values()), podman)
    return {logical_id: images[layers] for logical_id, layers in layers_of.items()}


#: How old a layer image this template does not use must be before a new build removes it: another
#: checkout on the machine, with other layers, may still be using it.
STALE_AFTER = "24h"


def remove_stale_images(current: set[str], podman: Podman) -> list[str]:
    """The tier's layer images (and SAM's on top of them) other than `current`, built more than a
    day ago, removed unless a container uses them (each layer change leaves about 120 MB of its own)."""
    listed = podman(
        "images", "--filter", "label=imagetasks.layers", "--filter", f"until={STALE_AFTER}",
        "--format", "{{.Repository}}:{{.Tag}}",
    )  # fmt: skip
    keep = {name.rpartition(":")[0] for name in current}
    stale = [
        name
        for name in listed.stdout.split()
        if name.startswith(REPOSITORY_PREFIX) and name.rpartition(":")[0] not in keep
    ]
    # SAM's images on top first: an image with children cannot go.
    stale.sort(key=lambda name: not name.endswith(":rapid-x86_64"))
    return [name for name in stale if podman("rmi", name).returncode == 0]


def prepare(built_template: Path, base_image: str, out_dir: Path, podman: Podman) -> list[str]:
    """The functions' layer images (built if missing) and a copy of the built template without layers,
    in `out_dir`: sam local's options for them (`--template` the copy, `--invoke-image Function=image`)."""
    images = layer_images(built_template, base_image, podman)
    copy_path = out_dir / "template.sam-local.json"
    template = without_layers(load_yaml(built_template), built_template.parent)
    copy_path.write_text(json.dumps(template, indent=1), encoding="utf-8")
    options = ["--template", str(copy_path)]
    for logical_id, image in sorted(images.items()):
        options += ["--invoke-image", f"{logical_id}={image}"]
    return options


def _build(image: str, base_image: str, layers: Sequence[str], context: Path, podman: Podman) -> None:
    with tempfile.TemporaryDirectory(prefix="imagetasks-layers-") as work:
        file = Path(work) / "Containerfile"
        file.write_text(containerfile(base_image, layers), encoding="utf-8")
        label = "imagetasks.layers=" + ",".join(layers)
        built = podman(
            "build", "-q", "--pull=never", "--network", "none", "--label", label,
            "-f", str(file), "-t", image, str(context),
        )  # fmt: skip
    if built.returncode != 0:
        raise LayerImageError(f"podman build of {image} failed: {built.stderr.strip()[-2000:]}")
