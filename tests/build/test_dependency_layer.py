"""The built dependencies layer holds one copy of the AWS SDK, at the versions the layer pins."""

from __future__ import annotations

from tests.build.conftest import require
from tests.support import ROOT
from tests.unit.test_dependency_pins import SDK, pins


def test_the_built_layer_holds_one_copy_of_each_at_the_pinned_version() -> None:
    built = ROOT / ".aws-sam" / "build" / "DependenciesLayer" / "python"
    require(built.is_dir(), "no .aws-sam/build: run `make build`")
    layer = pins(ROOT / "layers" / "dependencies" / "requirements.txt")
    for name in SDK:
        copies = sorted(p.name for p in built.glob(f"{name}-*.dist-info"))
        assert copies == [f"{name}-{layer[name]}.dist-info"], f"{name}: {copies} (make build again?)"
