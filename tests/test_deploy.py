"""deploy/, checked offline: the cluster launcher configs go through Ray's own validation (what
`ray up` runs before it contacts a provider), the KubeRay manifests through the CRD schemas, and
every file pins the Ray version that pyproject.toml pins."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.local.config import LOCAL_CLUSTER_NODE_TYPE
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
LAUNCHER_CONFIGS = ["aws", "gcp", "local"]
CLOUD_CONFIGS = ["aws", "gcp"]
CRD_DIR = ROOT.parent / "shared" / "schemas" / "kuberay"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
TOKEN_FILE = "~/.ray/auth_token"
# libyaml's loader reads the 2 MB of CRDs in under a second (the pure-Python one takes ~10 s).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    """The project's version and its `ray==` pin, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(d) for d in project["dependencies"]]
    (ray,) = [r for r in requirements if r.name == "ray"]
    (ray_pin,) = [s.version for s in ray.specifier if s.operator == "=="]
    return {"ray": ray_pin, "project": project["version"]}


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_YAML_LOADER)


def _launcher(name: str) -> dict:
    return _load(DEPLOY / f"{name}.yaml")


def _ray_up_validate(config: dict) -> dict:
    """The offline part of `ray up` (commands._bootstrap_config): a known provider, the
    provider's defaults and the on-premise rules filled in (prepare_config), then the schema and
    cross-field checks (validate_config). What follows there, the provider's bootstrap, calls
    the cloud's APIs."""
    assert config["provider"]["type"] in _NODE_PROVIDERS
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def _head_start_command(config: dict) -> str:
    (command,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    return command


# --- cluster launcher (ray up) ---------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_ray_up_validation(name):
    prepared = _ray_up_validate(_launcher(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_pins_the_project_ray_version(name, pins):
    values = _strings(_launcher(name))
    pip_pins = re.findall(r"\bray(?:\[[\w,]+\])?==([\w.]+)", " ".join(values))
    images = re.findall(r"\brayproject/ray:([\d.]+)-", " ".join(values))
    assert pip_pins, "no ray==VERSION install"
    assert set(pip_pins) | set(images) == {pins["ray"]}


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_head_binds_dashboard_and_troupe_serve_to_localhost(name):
    config = _launcher(name)
    start = _head_start_command(config)
    assert "--dashboard-host=127.0.0.1" in start
    assert "--dashboard-port=8265" in start
    (serve,) = [c for c in config["head_start_ray_commands"] if "troupe serve" in c]
    assert "--address 127.0.0.1:6379" in serve
    assert "--host 127.0.0.1" in serve
    assert not any("0.0.0.0" in c for c in config["head_start_ray_commands"])


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_token_auth_reaches_every_node(name):
    # `ray up` distributes no token of its own (nothing in Ray's autoscaler reads one): the
    # config mounts the launching machine's token file and turns token mode on.
    config = _launcher(name)
    assert config["file_mounts"][TOKEN_FILE] == TOKEN_FILE
    in_container = "--env RAY_AUTH_MODE=token" in config.get("docker", {}).get("run_options", [])
    in_bashrc = any(
        "echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in c for c in config["setup_commands"]
    )
    assert in_container or in_bashrc


@pytest.mark.parametrize("name", CLOUD_CONFIGS)
def test_cloud_node_types_gpu_learner_and_scalable_rollouts(name):
    config = _launcher(name)
    head = config["head_node_type"]
    workers = {k: v for k, v in config["available_node_types"].items() if k != head}
    gpu = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    cpu = {k: v for k, v in workers.items() if k not in gpu}
    assert gpu and cpu
    for node_type in gpu.values():
        # Up before a run starts: the learner only asks for a GPU the cluster already has.
        assert node_type["min_workers"] >= 1
        image = node_type.get("docker", {}).get("worker_image", config["docker"]["image"])
        assert image.endswith("-gpu")
    for node_type in cpu.values():
        # Ray's validation accepts max_workers < min_workers on a node type: checked here.
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_local_config_autoscales_one_node_type_within_worker_ips():
    config = _launcher("local")
    prepared = _ray_up_validate(config)
    (node_type,) = prepared["available_node_types"].values()
    assert list(prepared["available_node_types"]) == [LOCAL_CLUSTER_NODE_TYPE]
    worker_ips = config["provider"]["worker_ips"]
    assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= len(worker_ips)
    assert config["idle_timeout_minutes"] > 0
    # Placeholders only: documentation addresses, not someone's machines.
    documentation = ipaddress.ip_network("192.0.2.0/24")
    for ip in [config["provider"]["head_ip"], *worker_ips]:
        assert ipaddress.ip_address(ip) in documentation


def test_local_head_holds_no_actors_and_runs_the_v1_autoscaler():
    start = _head_start_command(_launcher("local"))
    assert "--num-cpus=0" in start
    # `ray up` exports RAY_enable_autoscaler_v2=1 before each start command; v2 never starts a
    # worker of the local provider (tests/test_launcher.py shows v1 doing it).
    assert "RAY_enable_autoscaler_v2=0 RAY_worker_niceness=0 ray start --head" in start


@pytest.mark.subprocess
def test_every_node_runs_ray_workers_at_nice_0():
    """The learner and the actors at nice 0, as the embedded local Ray runs them: in the
    image (aws, gcp and KubeRay start Ray in it) and on each ray start of the local config."""
    assert re.search(r"^ENV RAY_worker_niceness=0$", (DEPLOY / "Dockerfile").read_text(), re.M)
    config = _launcher("local")
    starts = [
        c
        for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
        if "ray start" in c
    ]
    assert len(starts) == 2 and all("RAY_worker_niceness=0 ray start" in c for c in starts)


def test_local_head_setup_gives_the_autoscaler_a_worker_shape(tmp_path):
    """The head's setup command, run on the config `ray up` writes to the head (the prepared
    config, as JSON), gives the single node type the CPUs the head has."""
    prepared = _ray_up_validate(_launcher("local"))
    assert prepared["available_node_types"][LOCAL_CLUSTER_NODE_TYPE]["resources"] == {}
    (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps(prepared))
    (command,) = prepared["head_setup_commands"][-1:]
    assert "ray_bootstrap_config.yaml" in command
    subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:"
             + os.environ["PATH"]},
        check=True,
    )  # fmt: skip
    patched = json.loads((tmp_path / "ray_bootstrap_config.yaml").read_text())
    node_type = patched["available_node_types"][LOCAL_CLUSTER_NODE_TYPE]
    assert node_type["resources"] == {"CPU": os.cpu_count()}
    assert {k: v for k, v in patched.items() if k != "available_node_types"} == {
        k: v for k, v in prepared.items() if k != "available_node_types"
    }


@pytest.mark.subprocess
def test_local_package_source_is_one_line(tmp_path):
    """`WHEELS=` empty: pip as configured on the machine; a folder: only that folder."""
    (command,) = [c for c in _launcher("local")["setup_commands"] if "WHEELS=" in c]
    venv = tmp_path / "troupe-venv"
    venv.mkdir()
    run = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(["bash", "-c", command.replace("~/", "$HOME/")], env=run, check=True)
    assert (venv / "pip.conf").read_text() == ""
    offline = command.replace("WHEELS=;", "WHEELS=/srv/wheels;")
    subprocess.run(["bash", "-c", offline.replace("~/", "$HOME/")], env=run, check=True)
    assert (venv / "pip.conf").read_text() == (
        "[global]\nno-index = true\nfind-links = /srv/wheels\n"
    )


def _misspell_max_workers(c):
    c["max_worker"] = c.pop("max_workers")


def _min_workers_over_global_max(c):
    c["available_node_types"]["rollout_cpu"]["min_workers"] = c["max_workers"]


def _local_without_worker_ips(c):
    del c["provider"]["worker_ips"]


@pytest.mark.parametrize(
    ("name", "breakage", "error", "match", "path"),
    [
        pytest.param(
            "aws",
            _misspell_max_workers,
            jsonschema.ValidationError,
            r"\('max_worker' was unexpected\)",
            [],
            id="misspelt-top-level-key",
        ),
        pytest.param(
            "gcp",
            _min_workers_over_global_max,
            ValueError,
            "global `max_workers` is smaller than the sum of `min_workers`",
            None,
            id="min-workers-over-global-max",
        ),
        pytest.param(
            "local",
            _local_without_worker_ips,
            click.ClickException,
            "supply a `head_ip` and list of `worker_ips`",
            None,
            id="local-without-worker-ips",
        ),
    ],
)
def test_broken_launcher_config_fails_validation(name, breakage, error, match, path):
    """The offline `ray up` check above can fail: one breakage per stage it runs (the schema,
    the cross-field checks, the on-premise rules). Ray's own rules are not re-tested here."""
    config = _launcher(name)
    breakage(config)
    with pytest.raises(error, match=match) as raised:
        _ray_up_validate(config)
    if path is not None:
        assert list(raised.value.absolute_path) == path


# --- KubeRay ---------------------------------------------------------------------------------


def _openapi_to_json_schema(node):
    """A CRD's OpenAPI v3 schema as plain JSON schema: int-or-string fields accept both types,
    nullable fields accept null. `x-kubernetes-*` keys are otherwise ignored by jsonschema."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_json_schema(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@pytest.fixture(scope="module")
def crds() -> dict[str, dict]:
    """kind -> {"apiVersion": ..., "schema": ...} for the v1 version of each KubeRay CRD."""
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {CRD_DIR} (shared/ beside the repository)")
    crds = {}
    for kind, filename in CRD_FILES.items():
        crd = _load(CRD_DIR / filename)
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        crds[kind] = {
            "apiVersion": f"{crd['spec']['group']}/v1",
            "schema": _openapi_to_json_schema(v1["schema"]["openAPIV3Schema"]),
        }
    return crds


def _unknown_fields(instance, schema, path=()):
    """Paths of fields the schema does not declare: what `kubectl apply`'s strict field
    validation rejects (plain JSON schema lets them through; the API server would prune them).
    Objects without declared properties (metadata, free-form maps) and
    x-kubernetes-preserve-unknown-fields subtrees are not checked."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(instance, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if properties is not None and key in properties:
                yield from _unknown_fields(value, properties[key], (*path, key))
            elif isinstance(extra, dict):
                yield from _unknown_fields(value, extra, (*path, key))
            elif properties is not None:
                yield (*path, key)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            yield from _unknown_fields(item, schema["items"], (*path, i))


def _manifest_errors(manifest: dict, crds: dict) -> set[tuple[tuple, str]]:
    """(path, what failed) for every problem: a JSON-schema keyword, or "unknown-field"."""
    crd = crds[manifest["kind"]]
    assert manifest["apiVersion"] == crd["apiVersion"]
    validator = jsonschema.Draft4Validator(crd["schema"])
    errors = {(tuple(e.absolute_path), e.validator) for e in validator.iter_errors(manifest)}
    errors |= {(p, "unknown-field") for p in _unknown_fields(manifest, crd["schema"])}
    return errors


def _kuberay(name: str) -> dict:
    return _load(DEPLOY / "kuberay" / f"{name}.yaml")


def _cluster_spec(manifest: dict) -> dict:
    return manifest["spec"].get("rayClusterSpec", manifest["spec"])


@pytest.mark.parametrize("name", ["raycluster", "rayjob"])
def test_kuberay_manifest_matches_crd_schema(name, crds):
    assert _manifest_errors(_kuberay(name), crds) == set()


@pytest.mark.parametrize("name", ["raycluster", "rayjob"])
def test_kuberay_cluster_spec(name, pins):
    spec = _cluster_spec(_kuberay(name))
    assert spec["rayVersion"] == pins["ray"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    images = [c["image"] for g in groups for c in g["template"]["spec"]["containers"]]
    assert {re.sub(r"-gpu$", "", i.rsplit(":", 1)[1]) for i in images} == {pins["project"]}

    def gpus(group):
        (container,) = group["template"]["spec"]["containers"]
        return container["resources"]["limits"].get("nvidia.com/gpu", 0), container["image"]

    gpu_groups = [g for g in spec["workerGroupSpecs"] if gpus(g)[0] >= 1]
    cpu_groups = [g for g in spec["workerGroupSpecs"] if gpus(g)[0] == 0]
    assert gpu_groups and cpu_groups
    for group in gpu_groups:
        assert group["minReplicas"] >= 1
        assert gpus(group)[1].endswith("-gpu")
    for group in cpu_groups:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]


def test_rayjob_runs_the_raycluster_spec():
    job = _kuberay("rayjob")
    assert job["spec"]["rayClusterSpec"] == _kuberay("raycluster")["spec"]
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[:3] == ["python", "-m", "services.job"]
    # The config's path in the image: the Dockerfile's WORKDIR holds the repository.
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    config = Path(entrypoint[entrypoint.index("--config") + 1])
    assert (ROOT / config.relative_to(workdir)).is_file()


def _worker_group(manifest, name):
    (group,) = [g for g in _cluster_spec(manifest)["workerGroupSpecs"] if g["groupName"] == name]
    return group


def _misspell_group_name(m):
    group = _worker_group(m, "rollout-cpu")
    group["groupNme"] = group.pop("groupName")


def _gpu_not_a_quantity(m):
    container = _worker_group(m, "learner-gpu")["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "one"


def _misspell_entrypoint(m):
    m["spec"]["entryPoint"] = m["spec"].pop("entrypoint")


WGS = ("spec", "workerGroupSpecs")
GPU_CONTAINER = (*WGS, 0, "template", "spec", "containers", 0)


@pytest.mark.parametrize(
    ("name", "breakage", "expected"),
    [
        pytest.param(
            "raycluster",
            _misspell_group_name,
            {((*WGS, 1), "required"), ((*WGS, 1, "groupNme"), "unknown-field")},
            id="misspelt-required-groupName",
        ),
        pytest.param(
            "raycluster",
            _gpu_not_a_quantity,
            {((*GPU_CONTAINER, "resources", "limits", "nvidia.com/gpu"), "pattern")},
            id="gpu-limit-not-a-quantity",
        ),
        pytest.param(
            "rayjob",
            _misspell_entrypoint,
            {(("spec", "entryPoint"), "unknown-field")},
            id="rayjob-misspelt-entrypoint",
        ),
    ],
)
def test_broken_kuberay_manifest_fails_validation(name, breakage, expected, crds):
    """The CRD check above can fail, through what this file adds to jsonschema: unknown fields
    (in a RayCluster and in a RayJob) and int-or-string quantities."""
    manifest = _kuberay(name)
    breakage(manifest)
    assert _manifest_errors(manifest, crds) == expected


# --- image -----------------------------------------------------------------------------------


def test_dockerfile_builds_on_the_pinned_ray_image(pins):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert re.fullmatch(rf"rayproject/ray:{re.escape(pins['ray'])}-\$\{{VARIANT\}}", base)
    (variant,) = re.findall(r"^ARG VARIANT=(\S+)$", dockerfile, re.MULTILINE)
    assert variant == "py311"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)


def test_torch_pin_is_the_same_everywhere():
    texts = [(DEPLOY / f"{n}.yaml").read_text() for n in LAUNCHER_CONFIGS]
    texts.append((DEPLOY / "Dockerfile").read_text())
    per_file = [set(re.findall(r"\btorch==([\w.]+)", t)) for t in texts]
    assert all(per_file)
    assert len(set().union(*per_file)) == 1
