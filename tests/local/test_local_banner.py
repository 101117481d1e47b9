"""What `make run` prints works as printed (issue 14): the import example names a loopback source
that the local stack's own import filter lets through, the token hint uses `make -s`, and the AWS CLI
lines come with the dummy credentials and the region they need."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imagetasks.domain.import_filter import ImportFilter, ImportFilterSettings
from local.__main__ import _banner
from local.template import LOCAL_PARAMETER_OVERRIDES, REGION


@dataclass
class FakeStack:
    """The few things the banner reads from a running stack."""

    containers: bool = False
    api_url: str = "http://127.0.0.1:3000"
    aws_url: str | None = "http://127.0.0.1:5000"
    state_dir: Path = Path("local/.state")
    buckets: dict[str, str] = field(default_factory=lambda: {"UploadsBucket": "imagetasks-uploads-local"})

    def bucket_names(self) -> dict[str, str]:
        return self.buckets

    def table_names(self) -> dict[str, str]:
        return {"TasksTable": "imagetasks-local-taskstable"}

    def token(self, project_id: str, roles: list[str]) -> str:
        return f"token-of-{project_id}"


def local_filter() -> ImportFilter:
    """The import filter as the local stack configures it (its parameter overrides)."""
    settings = ImportFilterSettings(
        allowed_ports=tuple(int(p) for p in LOCAL_PARAMETER_OVERRIDES["ImportAllowedPorts"].split(",")),
        allow_loopback=LOCAL_PARAMETER_OVERRIDES["ImportAllowLoopback"] == "true",
    )
    return ImportFilter(settings, resolver=lambda host, port: [host])


def test_the_import_example_serves_a_file_made_by_one_command_where_the_local_filter_allows() -> None:
    # Given the banner of a plain `make run`
    banner = _banner(FakeStack())  # type: ignore[arg-type]

    # When its example's source is read back
    source = re.search(r'"import_from": "([^"]+)"', banner)
    assert source is not None, banner
    url = source.group(1)

    # Then it is a loopback URL the local stack's own filter lets through (no --param needed) ...
    assert url == "http://127.0.0.1:8000/disk.qcow2"
    assert local_filter().check(url).port == 8000
    # ... of a file one command makes, served on that address and port
    assert "qemu-img create -f qcow2 disk.qcow2 64M" in banner
    assert "python3 -m http.server 8000 --bind 127.0.0.1 &" in banner
    assert "example." not in banner


def test_the_aws_cli_lines_come_with_credentials_and_the_stacks_region() -> None:
    banner = _banner(FakeStack())  # type: ignore[arg-type]
    lines = [line.strip() for line in banner.splitlines()]

    exports = next(line for line in lines if line.startswith("export AWS_ACCESS_KEY_ID="))
    first_aws = next(i for i, line in enumerate(lines) if line.startswith("aws "))

    assert lines.index(exports) < first_aws
    assert dict(word.split("=", 1) for word in shlex.split(exports)[1:]) == {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


def test_more_tokens_are_minted_with_make_s() -> None:
    assert "more: make -s token PROJECT=P ROLES=member,admin" in _banner(FakeStack())  # type: ignore[arg-type]


@pytest.mark.parametrize("aws_url", ["http://10.89.0.1:5000"])
def test_in_containers_the_example_source_is_the_hosts_address_on_their_network(aws_url: str) -> None:
    banner = _banner(FakeStack(containers=True, aws_url=aws_url))  # type: ignore[arg-type]

    assert '"import_from": "http://10.89.0.1:8000/disk.qcow2"' in banner
    assert "python3 -m http.server 8000 --bind 10.89.0.1 &" in banner
