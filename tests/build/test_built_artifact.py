"""The built artifact imports as Lambda imports it: layers at the top of python/, handlers on Lambda's sys.path.

On Lambda a layer is unpacked into /opt and sys.path is the task root (/var/task), then
/opt/python/lib/python3.13/site-packages and /opt/python, then the runtime's own site-packages (which
carries boto3) and the standard library. A layer built with its package one folder too deep
(python/python/imagetasks) makes every function fail with `No module named 'imagetasks'`; these tests
run python3.13 on exactly those paths, with nothing from the repository.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local.template import FUNCTION_TYPE, LAYER_TYPE, load_template, load_yaml
from tests.build.conftest import BUILD_DIR, python313, require
from tests.support import ROOT

SOURCE_FUNCTIONS = sorted(
    logical_id
    for logical_id, resource in (load_yaml(ROOT / "template.yaml").get("Resources") or {}).items()
    if resource.get("Type") == FUNCTION_TYPE
)

# What the Lambda python3.13 runtime itself provides in /var/lang/lib/python3.13/site-packages, after
# the layers on sys.path: boto3 and its dependencies. Taken from the test environment (pure Python).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def _layers(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lid: res for lid, res in raw["Resources"].items() if res.get("Type") == LAYER_TYPE}


def _is_python_layer(resource: dict[str, Any]) -> bool:
    return str((resource.get("Metadata") or {}).get("BuildMethod", "")).startswith("python")


def _function_layers(raw: dict[str, Any], logical_id: str) -> list[Path]:
    """The built folders of a function's layers: the Globals' first, then its own (SAM appends)."""
    refs = list(((raw.get("Globals") or {}).get("Function") or {}).get("Layers") or [])
    refs += raw["Resources"][logical_id]["Properties"].get("Layers") or []
    layers = _layers(raw)
    folders = []
    for ref in refs:
        assert isinstance(ref, dict) and "Ref" in ref, f"{logical_id}: layer {ref!r} is not built here"
        folders.append(BUILD_DIR / layers[ref["Ref"]]["Properties"]["ContentUri"])
    return folders


@pytest.fixture(scope="module")
def built(built_template: Path) -> dict[str, Any]:
    return load_yaml(built_template)


@pytest.fixture(scope="module")
def runtime_site_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("var-lang-site-packages")
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, name
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return folder


def test_python_layers_carry_packages_at_the_top_of_python(built: dict[str, Any]) -> None:
    python_layers = {lid: res for lid, res in _layers(built).items() if _is_python_layer(res)}
    assert "CommonLayer" in python_layers
    for logical_id, resource in python_layers.items():
        python_dir = BUILD_DIR / resource["Properties"]["ContentUri"] / "python"
        assert python_dir.is_dir(), f"{logical_id}: no python/ in {python_dir}"
        assert not (python_dir / "python").exists(), (
            f"{logical_id}: python/python/ (ContentUri one level too high)"
        )
        importable = [
            entry.name
            for entry in python_dir.iterdir()
            if (entry / "__init__.py").is_file() or entry.suffix in (".py", ".so")
        ]
        assert importable, f"{logical_id}: nothing importable at the top of {python_dir}"
    assert (BUILD_DIR / "CommonLayer" / "python" / "imagetasks" / "__init__.py").is_file()


def test_qemu_layer_carries_qemu_img_and_its_libraries(built: dict[str, Any]) -> None:
    layer = BUILD_DIR / _layers(built)["QemuLayer"]["Properties"]["ContentUri"]
    qemu_img = layer / "bin" / "qemu-img"
    assert os.access(qemu_img, os.X_OK)
    assert any((layer / "lib").glob("lib*.so*"))
    result = subprocess.run(
        [str(qemu_img), "--version"],
        env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(layer / "lib")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and "qemu-img version" in result.stdout, result.stderr


_IMPORT_HANDLER = """
import importlib, json, sys
sys.path[:0] = json.loads(sys.argv[1])
module_name, _, attribute = sys.argv[2].rpartition(".")
handler = getattr(importlib.import_module(module_name), attribute)
assert callable(handler), sys.argv[2]
import imagetasks
print(json.dumps({"path": sys.path, "imagetasks": imagetasks.__file__}))
"""


@pytest.mark.parametrize("logical_id", SOURCE_FUNCTIONS)
def test_handler_imports_on_lambdas_sys_path(
    logical_id: str, built: dict[str, Any], built_template: Path, runtime_site_packages: Path
) -> None:
    interpreter = python313()
    require(interpreter is not None, "no python3.13 (set PYTHON313 or install ~/.pyenv/versions/3.13.x)")
    assert interpreter is not None
    assert logical_id in built["Resources"], f"{logical_id} is not in the built template: run `make build`"
    spec = load_template(built_template).functions[logical_id]
    task_root = BUILD_DIR / built["Resources"][logical_id]["Properties"]["CodeUri"]
    front = [str(task_root)]
    for layer in _function_layers(built, logical_id):
        front += [str(layer / "python" / "lib" / "python3.13" / "site-packages"), str(layer / "python")]
    front.append(str(runtime_site_packages))
    environment = {
        **spec.environment,
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "LAMBDA_TASK_ROOT": str(task_root),
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    # -I: no PYTHONPATH, no user site, no current directory; -S: no site-packages of that interpreter.
    result = subprocess.run(
        [str(interpreter), "-I", "-S", "-c", _IMPORT_HANDLER, json.dumps(front), spec.handler],
        cwd=task_root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{logical_id}: {spec.handler} does not import:\n{result.stderr}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["imagetasks"].startswith(str(BUILD_DIR / "CommonLayer" / "python" / "imagetasks"))
    assert not any(
        entry.startswith(str(ROOT)) and not entry.startswith(str(BUILD_DIR)) for entry in report["path"]
    ), report["path"]
