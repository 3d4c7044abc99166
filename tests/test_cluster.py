"""cluster.yaml and cluster/: valid for Ray, hardened, pinned, and provisioned as they claim.

The static tests read the files. The moto tests run cluster/provision.py and then Ray's own `ray up`
config pipeline (and the head's node provider) against moto's in-memory EC2/IAM/S3: nothing reaches
AWS, and nothing here starts a real instance.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
CONSTRAINTS = ROOT / "cluster" / "constraints.txt"
IAM = ROOT / "cluster" / "iam"
OPERATOR_CIDR = "203.0.113.7/32"  # TEST-NET-3: an address that is nobody's
BUCKET = "selu-results-test"
WORLD = {"0.0.0.0/0", "::/0"}


def _load_provision():
    spec = importlib.util.spec_from_file_location("cluster_provision", ROOT / "cluster" / "provision.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


provision = _load_provision()


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _policy(name: str) -> dict:
    return json.loads((IAM / f"{name}.json").read_text())


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _head_start(config: dict) -> str:
    return " ".join(config["head_start_ray_commands"])


def _worker_start(config: dict) -> str:
    return " ".join(config["worker_start_ray_commands"])


# --- Ray's schema and the cluster's shape --------------------------------------------------------------

def test_cluster_yaml_passes_rays_schema(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # `ray up` does the same; raises on any violation


def test_trials_stay_off_the_head(config):
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in _head_start(config)


def test_the_checkout_and_the_token_reach_every_node(config):
    mounts = config["file_mounts"]
    assert mounts["/home/ubuntu/selu-sweep"] == "."
    assert mounts["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("chmod 600 ~/.ray/auth_token" in c for c in config["setup_commands"])


def test_setup_installs_the_project_with_both_extras_under_the_constraints(config):
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert len(installs) == 1
    assert "-c cluster/constraints.txt" in installs[0] and '".[gpu,cluster]"' in installs[0]
    # The venv's Python is the one the pins were resolved on; the uv that makes it is pinned too.
    assert any("uv venv" in c and "--python 3.11" in c for c in config["setup_commands"])
    assert any("astral.sh/uv/0.13.8/install.sh" in c for c in config["setup_commands"])


# --- hardening ---------------------------------------------------------------------------------------

def test_every_node_type_uses_the_provisioned_security_group(config):
    """Ray's own group always opens SSH to 0.0.0.0/0 (see the moto test below): every type must name ours."""
    groups = {name: nt["node_config"].get("SecurityGroupIds")
              for name, nt in config["available_node_types"].items()}
    assert set(map(tuple, groups.values())) == {("REPLACE_WITH_SECURITY_GROUP_ID",)}, groups
    assert "security_group" not in config["provider"]  # it would be ignored, and misleading


def test_token_auth_on_head_and_worker_start_commands(config):
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        starts = [c for c in commands if "ray start" in c]
        assert len(starts) == 1
        assert starts[0].index("RAY_AUTH_MODE=token") < starts[0].index("ray start")
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])  # ray exec shells


def test_dashboard_listens_on_localhost_only(config):
    assert "--dashboard-host=127.0.0.1" in _head_start(config)
    everything = json.dumps(config)
    assert "0.0.0.0" not in everything and "--dashboard-host=::" not in everything


def test_head_and_workers_get_different_instance_profiles(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["node_config"]["IamInstanceProfile"]["Arn"]
    workers = {t["node_config"]["IamInstanceProfile"]["Arn"]
               for name, t in types.items() if name != config["head_node_type"]}
    assert head == "REPLACE_WITH_HEAD_INSTANCE_PROFILE_ARN"
    assert workers == {"REPLACE_WITH_WORKER_INSTANCE_PROFILE_ARN"}


def test_spot_gpu_worker_type_is_optional(config):
    spot = config["available_node_types"]["gpu_spot_worker"]
    assert spot["min_workers"] == 0 and spot["max_workers"] >= 1
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert config["available_node_types"]["gpu_worker"].get("InstanceMarketOptions") is None


def test_worker_policy_reaches_only_the_results_bucket():
    statements = _policy("worker-policy")["Statement"]
    actions = {a for s in statements for a in _as_list(s["Action"])}
    resources = {r for s in statements for r in _as_list(s["Resource"])}
    assert all(s["Effect"] == "Allow" for s in statements)
    assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
    assert resources == {"arn:aws:s3:::REPLACE_WITH_BUCKET", "arn:aws:s3:::REPLACE_WITH_BUCKET/*"}


def test_head_policy_is_scoped_to_the_cluster():
    statements = _policy("head-policy")["Statement"]
    for s in statements:
        assert s["Effect"] == "Allow"
        assert all("*" not in a for a in _as_list(s["Action"])), s  # no ec2:*, s3:*, iam:*
        if s["Resource"] == "*":  # only read-only lookups may be unscoped
            assert all(a.startswith("ec2:Describe") for a in _as_list(s["Action"])), s
    by_action = {}
    for s in statements:
        for a in _as_list(s["Action"]):
            by_action.setdefault(a, []).append(s)
    assert [s["Resource"] for s in by_action["iam:PassRole"]] == ["REPLACE_WITH_WORKER_ROLE_ARN"]
    (terminate,) = by_action["ec2:TerminateInstances"]
    assert terminate["Condition"] == {"StringEquals": {"aws:ResourceTag/ray-cluster-name":
                                                       "REPLACE_WITH_CLUSTER_NAME"}}
    launch_instance = [s for s in by_action["ec2:RunInstances"] if str(s["Resource"]).endswith(":instance/*")]
    assert launch_instance and all("aws:RequestTag/ray-cluster-name" in s["Condition"]["StringEquals"]
                                   for s in launch_instance)
    s3_resources = {r for a, ss in by_action.items() if a.startswith("s3:") for s in ss
                    for r in _as_list(s["Resource"])}
    assert s3_resources == {"arn:aws:s3:::REPLACE_WITH_BUCKET", "arn:aws:s3:::REPLACE_WITH_BUCKET/*"}


# --- pinned installs -----------------------------------------------------------------------------------

def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not set(version) & set("<>=!~*,; "), f"not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = version
    return pins


def test_every_constraint_is_an_exact_pin():
    assert len(_pins()) > 50


def test_constraints_pin_every_project_dependency_and_what_it_pulls_in():
    """Project deps + gpu/cluster extras, then (from installed metadata) everything they require."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = project["dependencies"] + project["optional-dependencies"]["gpu"] \
        + project["optional-dependencies"]["cluster"]
    todo, seen, missing = [Requirement(r) for r in roots], set(), []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(str(req))
            continue
        assert req.specifier.contains(Version(pins[name]), prereleases=True), f"{name}=={pins[name]} vs {req}"
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its own requirements cannot be read offline
        if Version(dist.version) != Version(pins[name]):
            continue
        for text in dist.requires or []:
            sub = Requirement(text)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append(sub)
    assert not missing, f"not pinned in cluster/constraints.txt: {sorted(set(missing))}"
    walked = {name for name, _ in seen}
    assert {"ray", "optuna", "keras", "tensorflow", "psycopg", "psycopg-binary", "boto3"} <= walked


# --- cluster/provision.py: input checks ----------------------------------------------------------------

@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "10.0.0.0/7", "not-an-ip"])
def test_ssh_cidr_refuses_the_internet_and_garbage(cidr):
    with pytest.raises(provision.UsageError, match="--ssh-cidr"):
        provision.parse_ssh_cidr(cidr)


def test_ssh_cidr_accepts_a_host_or_a_network():
    assert provision.parse_ssh_cidr("203.0.113.7") == "203.0.113.7/32"
    assert provision.parse_ssh_cidr("198.51.100.0/24") == "198.51.100.0/24"


def _run_provision(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cluster" / "provision.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--ssh-cidr", "0.0.0.0/0", "open SSH"), ("--bucket", "s3://bucket/x", "not an S3 bucket name"),
     ("--region", "mars", "not an AWS region")],
)
def test_provision_cli_rejects_bad_input_with_one_line_and_exit_2(tmp_path, flag, value, message):
    args = {"--region": "us-west-2", "--ssh-cidr": OPERATOR_CIDR, "--bucket": BUCKET, flag: value}
    out = tmp_path / "cluster.mine.yaml"
    result = _run_provision(*[x for kv in args.items() for x in kv], "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_provision_cli_never_overwrites_out(tmp_path):
    out = tmp_path / "cluster.mine.yaml"
    out.write_text("mine\n")
    result = _run_provision("--region", "us-west-2", "--ssh-cidr", OPERATOR_CIDR, "--bucket", BUCKET,
                            "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "exists" in result.stderr
    assert out.read_text() == "mine\n"


def test_fill_sets_every_placeholder_and_the_region():
    res = provision.ClusterResources(
        region="eu-central-1", account_id="123456789012", ami_id="ami-0123", security_group_id="sg-0123",
        head_role_arn="arn:h", head_instance_profile_arn="arn:aws:iam::123456789012:instance-profile/h",
        worker_role_arn="arn:w", worker_instance_profile_arn="arn:aws:iam::123456789012:instance-profile/w")
    filled = yaml.safe_load(provision.fill_cluster_yaml(CLUSTER_YAML.read_text(), res))
    assert provision.unfilled_placeholders(json.dumps(filled)) == []
    assert filled["provider"]["region"] == "eu-central-1"
    spot = filled["available_node_types"]["gpu_spot_worker"]["node_config"]
    assert spot["ImageId"] == "ami-0123" and spot["SecurityGroupIds"] == ["sg-0123"]
    assert spot["IamInstanceProfile"]["Arn"].endswith("/w")


# --- provision + Ray's `ray up` config pipeline, on moto -----------------------------------------------

def _moto_account(monkeypatch: pytest.MonkeyPatch, home: Path):
    """moto's in-memory AWS with the results bucket, fake credentials, a HOME for Ray's SSH key."""
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-west-2",
                       "HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    mock = moto.mock_aws()
    mock.start()
    session = boto3.Session(region_name="us-west-2")
    session.client("s3").create_bucket(Bucket=BUCKET,
                                       CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    return mock, session


@pytest.fixture
def aws(tmp_path):
    with pytest.MonkeyPatch.context() as monkeypatch:
        mock, session = _moto_account(monkeypatch, tmp_path)
        yield session
        mock.stop()


def _provisioned_config(session) -> tuple[dict, object]:
    images = session.client("ec2").describe_images(Filters=[{"Name": "name", "Values": ["ubuntu/images/*"]}])
    res = provision.provision(session, cluster_name="selu-sweep", ssh_cidr=OPERATOR_CIDR, bucket=BUCKET,
                              ami_id=images["Images"][0]["ImageId"])
    return yaml.safe_load(provision.fill_cluster_yaml(CLUSTER_YAML.read_text(), res)), res


@pytest.fixture(scope="class")
def launched(tmp_path_factory):
    """One provisioned moto account, cluster.yaml filled and resolved by Ray as `ray up` does."""
    from ray.autoscaler._private.commands import _bootstrap_config

    with pytest.MonkeyPatch.context() as monkeypatch:
        mock, session = _moto_account(monkeypatch, tmp_path_factory.mktemp("home"))
        config, res = _provisioned_config(session)
        resolved = _bootstrap_config(config, no_config_cache=True)  # what `ray up` resolves before launching
        yield session, resolved, res
        mock.stop()


def _ssh_sources(session) -> dict[str, set[str]]:
    """Every security group's sources allowed on port 22."""
    out = {}
    for group in session.client("ec2").describe_security_groups()["SecurityGroups"]:
        sources = set()
        for p in group["IpPermissions"]:
            if p["IpProtocol"] == "-1" or p.get("FromPort", 0) <= 22 <= p.get("ToPort", 65535):
                sources |= {r["CidrIp"] for r in p.get("IpRanges", [])}
                sources |= {r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])}
        out[group["GroupName"]] = sources
    return out


class TestAProvisionedAccount:
    """One provisioned moto account (torn down after this class), shared by these read-only checks."""

    def test_ray_up_config_on_a_provisioned_account_opens_ssh_to_the_operator_only(self, launched):
        session, resolved, res = launched
        for node_type in resolved["available_node_types"].values():
            assert node_type["node_config"]["SecurityGroupIds"] == [res.security_group_id]
        # Ray created no group of its own, and ours admits SSH from the operator only.
        assert _ssh_sources(session) == {"default": set(), "selu-sweep-nodes": {OPERATOR_CIDR}}
        ec2 = session.client("ec2")
        (group,) = ec2.describe_security_groups(GroupIds=[res.security_group_id])["SecurityGroups"]
        assert {g["GroupId"] for p in group["IpPermissions"] for g in p.get("UserIdGroupPairs", [])} \
            == {res.security_group_id}

        types = resolved["available_node_types"]
        assert types["head"]["node_config"]["IamInstanceProfile"]["Arn"] == res.head_instance_profile_arn
        assert types["gpu_spot_worker"]["node_config"]["IamInstanceProfile"]["Arn"] \
            == res.worker_instance_profile_arn


    def test_provisioned_roles_carry_the_rendered_least_privilege_policies(self, launched):
        session, _, res = launched
        iam = session.client("iam")
        worker = iam.get_role_policy(RoleName="selu-sweep-worker", PolicyName="selu-sweep-worker")
        head = iam.get_role_policy(RoleName="selu-sweep-head", PolicyName="selu-sweep-head")
        resources = [r for s in worker["PolicyDocument"]["Statement"] for r in _as_list(s["Resource"])]
        assert resources == [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
        head_text = json.dumps(head["PolicyDocument"])
        assert "REPLACE_WITH" not in head_text and res.worker_role_arn in head_text
        assert f"security-group/{res.security_group_id}" in head_text
        profile = iam.get_instance_profile(InstanceProfileName="selu-sweep-worker")["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == ["selu-sweep-worker"]
        assert iam.list_roles(PathPrefix="/aws-service-role/spot.amazonaws.com/")["Roles"]  # spot needs it


    def test_head_launches_spot_workers_with_the_worker_profile_and_the_cluster_tag(self, launched):
        from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
        from ray.autoscaler.tags import NODE_KIND_WORKER, TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE

        session, resolved, res = launched
        provider = AWSNodeProvider(resolved["provider"], resolved["cluster_name"])
        node_config = resolved["available_node_types"]["gpu_spot_worker"]["node_config"]
        created = provider.create_node(node_config, {TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                                                     TAG_RAY_USER_NODE_TYPE: "gpu_spot_worker"}, 1)
        (instance_id,) = created
        (reservation,) = session.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        (instance,) = reservation["Instances"]
        assert instance["InstanceLifecycle"] == "spot"
        assert instance["IamInstanceProfile"]["Arn"] == res.worker_instance_profile_arn
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [res.security_group_id]
        # The head policy lets it terminate only instances carrying this tag: Ray sets it at launch.
        assert {"Key": "ray-cluster-name", "Value": "selu-sweep"} in instance["Tags"]
        provider.terminate_node(instance_id)


def test_provision_converges_instead_of_duplicating_and_drops_stale_ssh_rules(aws):
    first, _ = _provisioned_config(aws)
    ec2 = aws.client("ec2")
    group_id = first["available_node_types"]["head"]["node_config"]["SecurityGroupIds"][0]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    second, _ = _provisioned_config(aws)
    assert second == first
    assert _ssh_sources(aws)["selu-sweep-nodes"] == {OPERATOR_CIDR}


def test_rays_own_security_group_opens_ssh_to_the_world_even_with_ip_permissions(aws):
    """Why cluster.yaml names a group: provider.security_group.IpPermissions only adds to Ray's 0.0.0.0/0."""
    from ray.autoscaler._private.commands import _bootstrap_config

    config, _ = _provisioned_config(aws)
    for node_type in config["available_node_types"].values():
        del node_type["node_config"]["SecurityGroupIds"]
    config["provider"]["security_group"] = {
        "GroupName": "ray-own-group",
        "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                           "IpRanges": [{"CidrIp": OPERATOR_CIDR}]}],
    }
    _bootstrap_config(config, no_config_cache=True)
    assert _ssh_sources(aws)["ray-own-group"] == {OPERATOR_CIDR, "0.0.0.0/0"}
