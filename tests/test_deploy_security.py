"""deploy/, locked down (checked offline, beside tests/test_deploy.py): the AWS access stack
(security group, the head's role), IMDSv2, GCP's network and tags, KubeRay's pod security and
NetworkPolicy, the RayJob's retries from object storage, pinned packages, and the restart loop
of `troupe serve` on a `ray up` head."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from tests.test_deploy import (
    CLOUD_CONFIGS,
    DEPLOY,
    LAUNCHER_CONFIGS,
    _cluster_spec,
    _kuberay,
    _launcher,
    _load,
)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_troupe_serve_is_started_again_if_it_dies_while_ray_runs(name):
    """The loop ends with serve's own end (0: Ray stopped; 2: it cannot start); anything
    else (a crash, a kill) starts it again. A later `ray up` stops the loop's group."""
    config = _launcher(name)
    (serve,) = [c for c in config["head_start_ray_commands"] if "troupe serve" in c]
    loop = shlex.split(serve)
    assert loop[:4] == ["nohup", "setsid", "sh", "-c"]
    assert re.fullmatch(
        r"while true; do troupe serve [^;]*; case \$\? in 0\|2\) break ;; esac; sleep 5; done",
        loop[4],
    ), loop[4]
    assert loop[5:] == [">", "/tmp/troupe-serve.log", "2>&1", "&", "echo", "$!", ">",
                        "/tmp/troupe-serve.pid"]  # fmt: skip
    commands = config["head_start_ray_commands"]
    kill = 'kill -- -"$(cat /tmp/troupe-serve.pid 2> /dev/null)" 2> /dev/null || true'
    assert commands.index(kill) < commands.index(serve)


def test_troupe_serve_exits_2_when_it_cannot_start():
    """What ends the restart loop when Ray on the head is gone for good."""
    from services.cli.main import main

    assert main(["serve", "--address", "127.0.0.1:1", "--port", "0"]) == 2


@pytest.mark.parametrize("name", ["raycluster", "rayjob"])
def test_kuberay_pods_run_unprivileged_and_carry_the_policy_label(name):
    spec = _cluster_spec(_kuberay(name))
    policy = _load(DEPLOY / "kuberay" / "networkpolicy.yaml")
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]
        assert pod["metadata"]["labels"] == policy["spec"]["podSelector"]["matchLabels"]
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["spec"]["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }


def test_network_policy_admits_the_cluster_and_the_operator_only():
    policy = _load(DEPLOY / "kuberay" / "networkpolicy.yaml")
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    own = policy["spec"]["podSelector"]
    between, operator = policy["spec"]["ingress"]
    assert between == {"from": [{"podSelector": own}]}  # each other, every port
    (source,) = operator["from"]
    assert set(source) == {"namespaceSelector", "podSelector"}  # both: that pod, that namespace
    assert operator["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert "ipBlock" not in json.dumps(policy)


def test_rayjob_retries_continue_the_run_from_object_storage():
    job = _kuberay("rayjob")["spec"]
    entrypoint = shlex.split(job["entrypoint"])
    assert entrypoint[entrypoint.index("--run-id") + 1] == "troupe-cartpole"
    settings = [entrypoint[i + 1] for i, arg in enumerate(entrypoint) if arg == "--set"]
    (storage,) = [s.partition("=")[2] for s in settings if s.startswith("checkpoint.storage=")]
    assert re.fullmatch(r"(s3|gs)://[^/]+/\S+", storage)  # not the head pod's disk
    assert job["backoffLimit"] >= 1
    assert job["submissionMode"] == "HTTPMode"  # no submitter pod the policy would block


# --- cloud access ----------------------------------------------------------------------------


class _CloudFormationLoader(yaml.SafeLoader):
    """CloudFormation's short forms (!Ref X, !Sub s, !GetAtt A.b) as their long forms."""


for _tag in ("Ref", "Sub", "GetAtt"):
    _CloudFormationLoader.add_constructor(
        f"!{_tag}",
        lambda loader, node, tag=_tag: {
            ("Fn::" + tag if tag != "Ref" else "Ref"): loader.construct_scalar(node)
        },
    )


def _statements() -> dict[str, dict]:
    stack = yaml.load((DEPLOY / "aws-access.yaml").read_text(), Loader=_CloudFormationLoader)
    (policy,) = stack["Resources"]["HeadRole"]["Properties"]["Policies"]
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


def test_aws_access_stack_limits_ssh_and_the_head_role():
    stack = yaml.load((DEPLOY / "aws-access.yaml").read_text(), Loader=_CloudFormationLoader)
    resources = stack["Resources"]
    (ssh,) = resources["ClusterSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ssh["FromPort"], ssh["ToPort"], ssh["CidrIp"]) == (22, 22, {"Ref": "SshCidr"})
    between = resources["BetweenNodes"]["Properties"]
    assert between["SourceSecurityGroupId"] == between["GroupId"]  # the group's own members
    pattern = stack["Parameters"]["SshCidr"]["AllowedPattern"]
    assert re.fullmatch(pattern, "203.0.113.7/32") and re.fullmatch(pattern, "10.0.0.0/8")
    for everyone in ("0.0.0.0/0", "1.2.3.4/0", "0.0.0.0/1", "10.0.0.0/7", "1.2.3.4/33"):
        assert not re.fullmatch(pattern, everyone), everyone
    statements = _statements()
    for statement in statements.values():
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert statement["Effect"] == "Allow"
        for action in actions:  # no service-wide grant; read-only Describe* is the one wildcard
            assert action != "*" and not action.endswith(":*"), action
            assert "*" not in action or action == "ec2:Describe*", action
        if any(a.startswith("s3:") for a in actions):
            assert "${CheckpointBucket}" in statement["Resource"]["Fn::Sub"]
    objects = statements["ReadWriteCheckpoints"]["Resource"]["Fn::Sub"]
    assert objects.endswith(":s3:::${CheckpointBucket}/${CheckpointPrefix}/*")
    listing = statements["ListTheCheckpointPrefix"]["Condition"]["StringLike"]["s3:prefix"]
    assert listing == [{"Fn::Sub": "${CheckpointPrefix}/*"}]
    own_nodes = {"ec2:ResourceTag/ray-cluster-name": {"Ref": "ClusterName"}}
    stop = statements["AutoscalerStopsOnlyThisClustersNodes"]
    assert stop["Condition"]["StringEquals"] == own_nodes
    # The tag that grant goes by can be set at launch, or on the cluster's own nodes: never
    # on another instance, which would make it stoppable.
    tagging = [s for s in statements.values() if "ec2:CreateTags" in str(s["Action"])]
    assert {str(s["Condition"]["StringEquals"]) for s in tagging} == {
        str({"ec2:CreateAction": "RunInstances"}),
        str(own_nodes),
    }
    outputs = stack["Outputs"]
    assert set(outputs) == {"SecurityGroupId", "HeadInstanceProfileArn"}


def test_aws_nodes_use_the_access_stack_and_require_imdsv2():
    config = _launcher("aws")
    assert _launcher("aws")["cluster_name"] == "troupe"  # aws-access.yaml's ClusterName
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert node["MetadataOptions"]["HttpTokens"] == "required", name
        assert node["MetadataOptions"]["HttpPutResponseHopLimit"] == 2, name  # the container
        assert node["SecurityGroupIds"] == ["REPLACE_WITH_SECURITY_GROUP_ID"], name
        head = name == config["head_node_type"]
        assert ("IamInstanceProfile" in node) is head, name  # workers: no role at all


def test_gcp_workers_have_no_external_ip_and_every_node_a_firewall_tag():
    config = _launcher("gcp")
    networks = set()
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        (interface,) = node["networkInterfaces"]
        networks.add(interface["network"])
        head = name == config["head_node_type"]
        assert bool(interface["accessConfigs"]) is head, name
        assert node["tags"]["items"] == ["troupe-head" if head else "troupe-worker"], name
    assert networks == {"global/networks/troupe"}  # not "default", which admits SSH from anywhere


@pytest.mark.parametrize("name", CLOUD_CONFIGS)
def test_cloud_configs_pin_every_package_they_install(name):
    config = _launcher(name)
    commands = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")
                for c in config.get(key) or []]  # fmt: skip
    for command in commands:
        for part in re.split(r";|\bthen\b|\belse\b|&&", command):
            words = shlex.split(part.split("#")[0])
            if words[:2] != ["pip", "install"]:
                continue
            skip = {"-e", "--index-url"}
            packages = [w for i, w in enumerate(words[2:], 2)
                        if not w.startswith("-") and words[i - 1] not in skip]  # fmt: skip
            assert packages, part
            for package in packages:
                assert re.fullmatch(r"[\w.\[\],-]+==[\w.]+", package), (name, package)
