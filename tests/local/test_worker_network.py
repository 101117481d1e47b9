"""The container runner's network has the same ids on every start: they are template parameters, and
the template's translation is cached by its parameters (local/ecs.py)."""

from __future__ import annotations

import boto3
from moto import mock_aws

from local import ecs


def _start() -> tuple[tuple[str, str], str]:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        network = ecs.create_network(ec2)
        return network, ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]


def test_the_worker_network_has_the_same_ids_on_every_start_and_moto_stays_random_after_it() -> None:
    # Given / When: two starts, each making the network and then one more VPC
    (first_network, first_vpc), (second_network, second_vpc) = _start(), _start()

    # Then the network is the same, and what moto makes next is random again
    assert first_network == second_network
    assert first_network[0].startswith("subnet-") and first_network[1].startswith("sg-")
    assert first_vpc != second_vpc
