"""Create the AWS pieces cluster.yaml names, then write a filled-in copy of it.

    python cluster/provision.py --region us-west-2 --ssh-cidr 203.0.113.7/32 \
        --bucket my-selu-results --out cluster.mine.yaml
    ray up cluster.mine.yaml

It converges (running it again updates, never duplicates):
* a security group `<cluster_name>-nodes` in the VPC (default VPC unless --vpc-id): SSH (22) from
  --ssh-cidr only, all traffic between its members, nothing else inbound. 0.0.0.0/0 is refused.
* roles and instance profiles `<cluster_name>-head` and `<cluster_name>-worker`, trusted by EC2, with
  the inline policies cluster/iam/head-policy.json and cluster/iam/worker-policy.json (placeholders
  filled: region, account, cluster name, bucket, security group, worker role).
* the EC2 Spot service-linked role, if the account lacks it (needed by the spot worker type).

The results bucket must exist already. Needs boto3 (`pip install -e ".[cluster]"`) and credentials
allowed to manage EC2 security groups and IAM roles.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
IAM_DIR = ROOT / "cluster" / "iam"
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Z_]+")
# "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)", x86_64: Python 3.12 and an NVIDIA driver.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
SPOT_SERVICE_ROLE_PATH = "/aws-service-role/spot.amazonaws.com/"  # AWSServiceRoleForEC2Spot lives here
MIN_PREFIX = {4: 8, 6: 32}  # anything wider is "the internet", not "where I am"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


class UsageError(ValueError):
    """Bad input from the user: one line that says what is wrong and how to fix it."""


@dataclass(frozen=True)
class ClusterResources:
    """What the filled cluster.yaml and the head policy refer to."""

    region: str
    account_id: str
    ami_id: str
    security_group_id: str
    head_role_arn: str
    head_instance_profile_arn: str
    worker_role_arn: str
    worker_instance_profile_arn: str


def parse_ssh_cidr(text: str) -> str:
    """The CIDR that may reach the nodes' SSH port; a bare address means just that host."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise UsageError(f"--ssh-cidr {text!r} is not an IP network: pass your address, e.g. 203.0.113.7/32 "
                         "(curl https://checkip.amazonaws.com)") from None
    if network.prefixlen < MIN_PREFIX[network.version]:
        raise UsageError(f"--ssh-cidr {network} would open SSH to (a large part of) the internet: pass the "
                         "address you connect from, e.g. 203.0.113.7/32 "
                         f"(at least /{MIN_PREFIX[network.version]})")
    return str(network)


def check_bucket_name(name: str) -> str:
    if name.startswith("s3://") or "/" in name or not BUCKET_NAME.match(name):
        raise UsageError(f"--bucket {name!r} is not an S3 bucket name: pass just the name, e.g. "
                         "my-selu-results (the sweep's --storage-path is then s3://my-selu-results/sweeps)")
    return name


def render_policy(name: str, values: dict[str, str]) -> dict[str, Any]:
    """cluster/iam/<name>.json with its REPLACE_WITH_* placeholders filled from `values`."""
    text = (IAM_DIR / f"{name}.json").read_text()
    for key, value in values.items():
        text = text.replace(f"REPLACE_WITH_{key}", value)
    left = sorted(set(PLACEHOLDER.findall(text)))
    if left:
        raise KeyError(f"cluster/iam/{name}.json still has {', '.join(left)} after filling")
    return json.loads(text)


def unfilled_placeholders(text: str) -> list[str]:
    return sorted(set(PLACEHOLDER.findall(text)))


def fill_cluster_yaml(text: str, res: ClusterResources) -> str:
    """cluster.yaml's text with every placeholder and the region set (comments kept)."""
    values = {
        "AMI_ID": res.ami_id,
        "SECURITY_GROUP_ID": res.security_group_id,
        "HEAD_INSTANCE_PROFILE_ARN": res.head_instance_profile_arn,
        "WORKER_INSTANCE_PROFILE_ARN": res.worker_instance_profile_arn,
    }
    for key, value in values.items():
        text = text.replace(f"REPLACE_WITH_{key}", value)
    text, n = re.subn(r"(?m)^(  region:\s*)\S+", rf"\g<1>{res.region}", text, count=1)
    if n != 1:
        raise KeyError("cluster.yaml has no `provider: region:` line to set")
    left = unfilled_placeholders(text)
    if left:
        raise KeyError(f"cluster.yaml still has {', '.join(left)} after filling")
    return text


def _ensure_security_group(ec2: Any, name: str, vpc_id: str, ssh_cidr: str, cluster_name: str) -> str:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    if found:
        group_id = found[0]["GroupId"]
        current = found[0]["IpPermissions"]
    else:
        group_id = ec2.create_security_group(
            GroupName=name, VpcId=vpc_id,
            Description=f"{cluster_name} Ray nodes: SSH from the operator only, all traffic between members",
            TagSpecifications=[{"ResourceType": "security-group",
                                "Tags": [{"Key": "ray-cluster-name", "Value": cluster_name}]}],
        )["GroupId"]
        current = []
    ranges_key = "IpRanges" if ipaddress.ip_network(ssh_cidr).version == 4 else "Ipv6Ranges"
    cidr_key = "CidrIp" if ranges_key == "IpRanges" else "CidrIpv6"
    wanted = [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, ranges_key: [{cidr_key: ssh_cidr}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]},
    ]
    have, want = _rule_set(current), _rule_set(wanted)
    if have - want:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=_permissions(have - want))
    if want - have:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=_permissions(want - have))
    return group_id


def _rule_set(permissions: list[dict[str, Any]]) -> set[tuple]:
    """Ingress rules as comparable (protocol, from, to, kind, source) tuples."""
    rules = set()
    for p in permissions:
        port = (p["IpProtocol"], p.get("FromPort", -1), p.get("ToPort", -1))
        rules |= {(*port, "CidrIp", r["CidrIp"]) for r in p.get("IpRanges", [])}
        rules |= {(*port, "CidrIpv6", r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
        rules |= {(*port, "GroupId", g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
        rules |= {(*port, "PrefixListId", g["PrefixListId"]) for g in p.get("PrefixListIds", [])}
    return rules


def _permissions(rules: set[tuple]) -> list[dict[str, Any]]:
    container = {"CidrIp": "IpRanges", "CidrIpv6": "Ipv6Ranges", "GroupId": "UserIdGroupPairs",
                 "PrefixListId": "PrefixListIds"}
    out = []
    for protocol, from_port, to_port, kind, source in sorted(rules):
        p: dict[str, Any] = {"IpProtocol": protocol, container[kind]: [{kind: source}]}
        if protocol != "-1":
            p.update(FromPort=from_port, ToPort=to_port)
        out.append(p)
    return out


def _ensure_role_and_profile(iam: Any, name: str, policy: dict[str, Any]) -> tuple[str, str]:
    """A role trusted by EC2 with exactly `policy` inline, inside an instance profile of the same name."""
    trust = (IAM_DIR / "trust-policy.json").read_text()
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                               Description="selu-sweep Ray node role (cluster/iam/)")["Role"]
    iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return role["Arn"], profile["Arn"]


def _default_vpc(ec2: Any) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UsageError("this region has no default VPC: pass --vpc-id of a VPC whose subnets map "
                         "public IPs")
    return vpcs[0]["VpcId"]


def provision(session: Any, *, cluster_name: str, ssh_cidr: str, bucket: str,
              vpc_id: str | None = None, ami_id: str | None = None) -> ClusterResources:
    """Create or update the security group, roles and instance profiles; return what they are called."""
    region = session.region_name
    ec2, iam = session.client("ec2"), session.client("iam")
    account_id = session.client("sts").get_caller_identity()["Account"]
    s3 = session.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        raise UsageError(f"bucket {bucket!r} does not exist or is not yours: create it first "
                         f"(aws s3 mb s3://{bucket} --region {region})") from None
    if ami_id is None:
        try:
            ami_id = session.client("ssm").get_parameter(Name=DLAMI_PARAMETER)["Parameter"]["Value"]
        except Exception as exc:  # any failure has the same fix
            raise UsageError(f"could not look up the Deep Learning AMI ({exc.__class__.__name__}): "
                             "pass --ami-id of an x86_64 Ubuntu 24.04 GPU AMI") from None
    group_id = _ensure_security_group(ec2, f"{cluster_name}-nodes", vpc_id or _default_vpc(ec2), ssh_cidr,
                                      cluster_name)
    values = {"REGION": region, "ACCOUNT_ID": account_id, "CLUSTER_NAME": cluster_name, "BUCKET": bucket,
              "SECURITY_GROUP_ID": group_id}
    worker_role, worker_profile = _ensure_role_and_profile(iam, f"{cluster_name}-worker",
                                                           render_policy("worker-policy", values))
    head_role, head_profile = _ensure_role_and_profile(
        iam, f"{cluster_name}-head", render_policy("head-policy", {**values, "WORKER_ROLE_ARN": worker_role}))
    if not iam.list_roles(PathPrefix=SPOT_SERVICE_ROLE_PATH)["Roles"]:
        iam.create_service_linked_role(AWSServiceName="spot.amazonaws.com")
    return ClusterResources(region=region, account_id=account_id, ami_id=ami_id, security_group_id=group_id,
                            head_role_arn=head_role, head_instance_profile_arn=head_profile,
                            worker_role_arn=worker_role, worker_instance_profile_arn=worker_profile)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", required=True, help="AWS region of the cluster and the results bucket")
    parser.add_argument("--ssh-cidr", required=True, help="where you SSH from, e.g. 203.0.113.7/32")
    parser.add_argument("--bucket", required=True, help="existing S3 bucket for results (name only)")
    parser.add_argument("--out", required=True, type=Path, help="filled copy of the config (a new file)")
    parser.add_argument("--config", type=Path, default=ROOT / "cluster.yaml", help="template (cluster.yaml)")
    parser.add_argument("--vpc-id", help="VPC for the nodes (default: the region's default VPC)")
    parser.add_argument("--ami-id", help="AMI for all nodes (default: latest DLAMI base, Ubuntu 24.04)")
    return parser.parse_args(argv)


def _validate(args: argparse.Namespace) -> tuple[str, str]:
    """Check everything that needs no AWS call; return (ssh_cidr, cluster_name)."""
    if not REGION_NAME.match(args.region):
        raise UsageError(f"--region {args.region!r} is not an AWS region name, e.g. us-west-2")
    ssh_cidr = parse_ssh_cidr(args.ssh_cidr)
    check_bucket_name(args.bucket)
    if args.out.exists():
        raise UsageError(f"--out {args.out} exists: remove it or choose another path "
                         "(nothing was overwritten)")
    if not args.config.is_file():
        raise UsageError(f"--config {args.config} not found: pass the repository's cluster.yaml")
    try:
        config = yaml.safe_load(args.config.read_text())
        cluster_name = config["cluster_name"]
    except (yaml.YAMLError, TypeError, KeyError):
        raise UsageError(f"--config {args.config} is not a Ray cluster config with a cluster_name") from None
    if not unfilled_placeholders(args.config.read_text()):
        raise UsageError(f"--config {args.config} has no REPLACE_WITH_* placeholders: pass the template "
                         "cluster.yaml, not a filled copy")
    return ssh_cidr, cluster_name


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        ssh_cidr, cluster_name = _validate(args)
        try:
            import boto3
            import botocore.exceptions
        except ImportError:
            raise UsageError('boto3 is missing: pip install -c cluster/constraints.txt -e ".[cluster]"') \
                from None
        session = boto3.Session(region_name=args.region)
        try:
            resources = provision(session, cluster_name=cluster_name, ssh_cidr=ssh_cidr, bucket=args.bucket,
                                  vpc_id=args.vpc_id, ami_id=args.ami_id)
        except botocore.exceptions.NoCredentialsError:
            raise UsageError("no AWS credentials: run `aws configure` or set AWS_PROFILE") from None
        except botocore.exceptions.ClientError as exc:
            print(f"error: AWS refused {exc.operation_name}: {exc.response['Error'].get('Message', exc)}",
                  file=sys.stderr)
            return 1
        text = fill_cluster_yaml(args.config.read_text(), resources)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(args.out, "x") as f:  # "x": never overwrite, even if it appeared meanwhile
        f.write(text)
    print(f"security group {resources.security_group_id}: SSH from {ssh_cidr} only")
    print(f"head profile   {resources.head_instance_profile_arn}")
    print(f"worker profile {resources.worker_instance_profile_arn}")
    print(f"wrote {args.out}; next: ray up {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
