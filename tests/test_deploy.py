"""The deployment material in ``deploy/`` against the code it deploys.

Why: manifests, dashboards and alert rules are text that nothing executes
until an operator applies them, so a renamed metric, a misspelled flag or a
file missing from the kustomization would only show on a live cluster. These
checks read every file and compare it with what the agent really exports
(its metrics registry), really accepts (``htcsim agent serve --help``, the
settings and policy readers, the token reader) and with what Dask's own
command lines accept. No network, no Docker, no cluster; a few seconds.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from click.testing import CliRunner as ClickRunner
from typer.testing import CliRunner

from htcsim.agent.api.auth import TokenFileError, load_tokens
from htcsim.agent.certs import ROLES, make_certs
from htcsim.agent.config import DEFAULT_PORT, AgentConfig, load_agent_config
from htcsim.agent.executors.dask.security import cluster_security
from htcsim.agent.metrics import METRIC_NAMES, AgentMetrics
from htcsim.cli.app import app
from htcsim.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
BASE = KUBE / "base"
STATIC = KUBE / "overlays" / "static"
AUTOSCALE = KUBE / "overlays" / "autoscale"
KUSTOMIZE_DIRS = (BASE, STATIC, AUTOSCALE)
KUSTOMIZE_S = 60.0
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "htcsim-dashboard.json"
DOCS = ROOT / "docs" / "deploy.md"
README = ROOT / "README.md"
TLS_SECRET = "htcsim-dask-tls"
SCHEDULER = "tls://dask-scheduler:8786"


METRIC_REF = re.compile(r"(?<![A-Za-z0-9_:])htcsim_[A-Za-z0-9_:]*")
SELECTOR = re.compile(r"(htcsim_[A-Za-z0-9_:]*)\{([^}]*)\}")
EQUALITY_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"')
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MEBIBYTES = re.compile(r"^(\d+)Mi$")


# --- what the agent and Dask accept ------------------------------------------


@cache
def exported_series() -> frozenset[str]:
    """Series names the agent's /metrics can carry, derived from the registry.

    A gauge is exported under its name, a counter with ``_total``, a
    histogram as ``_bucket``, ``_sum`` and ``_count``; only families that
    ``METRIC_NAMES`` lists count (``_created`` series are not part of it).
    """
    suffixes = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    out: set[str] = set()
    for family in AgentMetrics().registry.collect():
        listed = family.name if family.type != "counter" else f"{family.name}_total"
        if listed in METRIC_NAMES:
            out.update(family.name + suffix for suffix in suffixes[family.type])
    return frozenset(out)


@cache
def known_label_values() -> dict[tuple[str, str], frozenset[str]]:
    """(series, label) -> the values the agent pre-declares, where it does
    (job states, final states, node states); other labels are open."""
    values: dict[tuple[str, str], set[str]] = {}
    for family in AgentMetrics().registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault((sample.name, label), set()).add(value)
    return {key: frozenset(v) for key, v in values.items()}


def help_flags(text: str) -> frozenset[str]:
    return frozenset(FLAG.findall(ANSI.sub("", text)))


@cache
def serve_flags() -> frozenset[str]:
    """The flags `htcsim agent serve --help` lists."""
    result = CliRunner().invoke(
        app, ["agent", "serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    )
    assert result.exit_code == 0, result.output
    return help_flags(result.output)


@cache
def dask_flags(command: str) -> frozenset[str]:
    """The flags `dask worker --help` / `dask scheduler --help` list."""
    if command == "worker":
        from distributed.cli.dask_worker import main
    else:
        from distributed.cli.dask_scheduler import main
    result = ClickRunner().invoke(main, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return help_flags(result.output)


def unknown_serve_flags(args: list[str]) -> set[str]:
    """Flags in ``args`` that `htcsim agent serve` does not take (pending ones
    are tolerated only while the help does not list them yet)."""
    used = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    return used - serve_flags()


# --- reading the files -------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def kube_manifests() -> list[Path]:
    """The files of the static deployment: the base and the static overlay
    (the autoscale overlay's own files are checked apart)."""
    return sorted(
        p
        for directory in (BASE, STATIC)
        for p in directory.glob("*.yaml")
        if p.name != "kustomization.yaml"
    )


def kube_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in kube_manifests() for doc in load_all(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    for _, doc in kube_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def strings_under(node: Any, keys: set[str]) -> Iterator[str]:
    """Every string value found under one of ``keys``, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from strings_under(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from strings_under(item, keys)


def all_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_strings(item)


def check_metric_references(exprs: list[str], where: str) -> set[str]:
    """Assert every htcsim_ series and pre-declared label value in ``exprs``
    exists; returns the series referenced."""
    refs: set[str] = set()
    for expr in exprs:
        for name in METRIC_REF.findall(expr):
            assert name in exported_series(), (
                f"{where}: {name!r} is not exported by the agent "
                f"(exported: {', '.join(sorted(exported_series()))}) in {expr!r}"
            )
            refs.add(name)
        for name, matchers in SELECTOR.findall(expr):
            for label, value in EQUALITY_MATCHER.findall(matchers):
                allowed = known_label_values().get((name, label))
                if allowed is not None and "$" not in value:
                    assert value in allowed, f"{where}: {name}{{{label}={value!r}}} never exists"
    return refs


def container(doc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def option(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def dockerfile_instruction(name: str) -> list[str]:
    """The JSON-array form of the last ENTRYPOINT/CMD of the Dockerfile."""
    lines = [ln for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.startswith(name)]
    assert lines, f"Dockerfile has no {name}"
    value = json.loads(lines[-1][len(name) :].strip())
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


# --- YAML and Kubernetes -----------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert load_all(path), f"{path} holds no document"


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRS, ids=lambda p: p.name)
def test_kustomization_lists_exactly_its_files(directory: Path) -> None:
    """Every file of a kustomization directory is a resource or a patch of
    it, once; the others it names are directories outside it (an overlay
    inside its own base is a cycle kustomize refuses)."""
    kustomization = load_all(directory / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a manifest is listed twice"
    patches = [p["path"] for p in kustomization.get("patches", [])]
    files = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert {r for r in listed if not r.startswith("..")} | set(patches) == files
    for parent in (r for r in listed if r.startswith("..")):
        resolved = (directory / parent).resolve()
        assert (resolved / "kustomization.yaml").is_file(), f"{parent} is not a kustomization"
        assert not directory.resolve().is_relative_to(resolved), f"{directory} is inside {parent}"
    assert kustomization["namespace"] == "htcsim"
    for patch in kustomization.get("patches", []):
        assert "path" in patch, "inline patches: keep every patch in a file of the overlay"


def test_every_kubernetes_document_is_named_and_namespaced() -> None:
    documents = kube_documents()
    assert documents
    for path, doc in documents:
        where = f"{path.name}: {doc.get('kind')}"
        assert doc.get("apiVersion"), f"{where}: no apiVersion"
        assert doc.get("kind"), f"{path.name}: a document without kind"
        assert doc.get("metadata", {}).get("name"), f"{where}: no metadata.name"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "htcsim", f"{where}: not in htcsim"


def test_agent_statefulset_args_are_flags_serve_takes() -> None:
    agent = container(find("StatefulSet", "htcsim-agent"))
    args = agent["args"]
    assert args[:2] == ["agent", "serve"]
    assert not unknown_serve_flags(args), f"unknown flags {unknown_serve_flags(args)}"
    assert option(args, "--host") == "0.0.0.0"
    assert option(args, "--backend") == "dask"
    port = next(p for p in agent["ports"] if p["name"] == "http")["containerPort"]
    assert port == DEFAULT_PORT
    for probe in ("readinessProbe", "livenessProbe"):
        assert agent[probe]["httpGet"]["path"] == "/healthz"


def test_agent_statefulset_keeps_state_on_a_volume_and_runs_unprivileged() -> None:
    statefulset = find("StatefulSet", "htcsim-agent")
    assert statefulset["spec"]["replicas"] == 1  # a second agent on one state dir is refused
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container(statefulset)["volumeMounts"]}
    assert mounts["/var/lib/htcsim"] in claims


def test_configmap_settings_and_policy_load_with_the_agent_readers(tmp_path: Path) -> None:
    """The ConfigMap's files pass the agent's own checks, and the paths they
    name are where the StatefulSet mounts the volume and the token Secret."""
    data = find("ConfigMap", "htcsim-config")["data"]
    (tmp_path / "agent.toml").write_text(data["agent.toml"])
    (tmp_path / "policy.toml").write_text(data["policy.toml"])
    config = load_agent_config(tmp_path / "agent.toml")
    load_policy(tmp_path / "policy.toml")

    statefulset = find("StatefulSet", "htcsim-agent")
    mounts = {m["name"]: m["mountPath"] for m in container(statefulset)["volumeMounts"]}
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert config.state_dir.is_relative_to(mounts["state"])
    tokens_volume = next(n for n, v in volumes.items() if "secret" in v)
    secret_name = volumes[tokens_volume]["secret"]["secretName"]
    assert config.tokens_path == Path(mounts[tokens_volume]) / "tokens.toml"
    assert "tokens.toml" in find("Secret", secret_name)["stringData"]
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    args = container(statefulset)["args"]
    for flag, key in (("--config", "agent.toml"), ("--policy", "policy.toml")):
        assert option(args, flag) == f"{mounts[config_volume]}/{key}"


def test_kubernetes_settings_name_the_lease(tmp_path: Path) -> None:
    """Both overlays' agent settings say how long a silent agent's workers
    keep their jobs (lease_s, as deploy/dask/*.toml do), and the agent reads it."""
    texts = {
        "static": find("ConfigMap", "htcsim-config")["data"]["agent.toml"],
        "autoscale": autoscale_config()["agent.toml"],
    }
    for name, text in texts.items():
        assert re.search(r"^\s*lease_s\s*=", text, re.MULTILINE), name
        (tmp_path / f"{name}.toml").write_text(text)
        assert load_agent_config(tmp_path / f"{name}.toml").lease_s == 10.0, name


def test_placeholder_tokens_are_refused_so_they_cannot_go_live(tmp_path: Path) -> None:
    """The Secret ships placeholder hashes; the agent must refuse to start on them."""
    text = find("Secret", "htcsim-tokens")["stringData"]["tokens.toml"]
    entries = tomllib.loads(text)["token"]
    assert entries and all("REPLACE" in e["sha256"] for e in entries)
    assert not any("token" in e for e in entries)  # never a plaintext token
    assert {e["role"] for e in entries} >= {"admin"}
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokenFileError, match="64 lowercase hex digits"):
        load_tokens(path)


def worker_deployments() -> list[dict[str, Any]]:
    return [
        doc
        for _, doc in kube_documents()
        if doc["kind"] == "Deployment" and container(doc)["command"] == ["dask", "worker"]
    ]


def test_dask_scheduler_matches_what_agent_and_workers_connect_to() -> None:
    scheduler = container(find("Deployment", "dask-scheduler"))
    assert scheduler["command"] == ["dask", "scheduler"]
    assert not {a for a in scheduler["args"] if a.startswith("--")} - dask_flags("scheduler")
    service = find("Service", "dask-scheduler")
    ports = {p["port"] for p in service["spec"]["ports"]}
    assert ports == {8786}  # its HTTP port is on the pod's loopback (not under TLS)
    address = f"tls://{service['metadata']['name']}:8786"
    assert address == SCHEDULER
    agent_args = container(find("StatefulSet", "htcsim-agent"))["args"]
    assert option(agent_args, "--scheduler") == address
    workers = worker_deployments()
    assert len(workers) >= 2
    for worker in workers:
        assert container(worker)["args"][0] == address


def tls_mounts(doc: dict[str, Any]) -> dict[str, str]:
    """File name -> the path where the pod of ``doc`` holds that key of the
    TLS Secret (checks that the volume is that Secret, read-only, 0440)."""
    pod = doc["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == TLS_SECRET)
    secret = volume["secret"]
    assert secret["defaultMode"] == 0o440
    mount = next(m for m in container(doc)["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    return {item["key"]: f"{mount['mountPath']}/{item['path']}" for item in secret["items"]}


def assert_dask_tls(doc: dict[str, Any], role: str) -> None:
    """A Dask pod of ``role`` gets its own certificate and the CA from the
    Secret (never another role's key), passes them with the TLS flags, and
    binds its comm port to the pod's own address."""
    files = tls_mounts(doc)
    assert set(files) == {"ca.pem", f"{role}.pem", f"{role}-key.pem"}
    args = container(doc)["args"]
    assert option(args, "--tls-ca-file") == files["ca.pem"]
    assert option(args, "--tls-cert") == files[f"{role}.pem"]
    assert option(args, "--tls-key") == files[f"{role}-key.pem"]
    assert option(args, "--host") == "$(POD_IP)"
    env = {e["name"]: e for e in container(doc)["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert doc["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 1000


def test_dask_pods_speak_tls_with_the_certificates_of_the_secret(tmp_path: Path) -> None:
    """The scheduler and every worker pass --tls-* for the files of the Secret
    ``htcsim agent certs`` fills; the agent's settings name its own files where
    its pod mounts them."""
    assert set(ROLES) == {"scheduler", "worker", "agent"}
    assert_dask_tls(find("Deployment", "dask-scheduler"), "scheduler")
    for worker in worker_deployments():
        assert_dask_tls(worker, "worker")
    statefulset = find("StatefulSet", "htcsim-agent")
    files = tls_mounts(statefulset)
    assert set(files) == {"ca.pem", "agent.pem", "agent-key.pem"}
    (tmp_path / "agent.toml").write_text(find("ConfigMap", "htcsim-config")["data"]["agent.toml"])
    config = load_agent_config(tmp_path / "agent.toml").with_overrides(
        backend="dask", scheduler=option(container(statefulset)["args"], "--scheduler")
    )
    assert not config.dask_insecure
    assert str(config.tls_ca_file) == files["ca.pem"]
    assert str(config.tls_cert) == files["agent.pem"]
    assert str(config.tls_key) == files["agent-key.pem"]


def test_worker_resources_match_what_the_node_declares() -> None:
    """Each worker's pod reserves what its --resources declare, so the agent
    never places more on it than Kubernetes gave it."""
    types = set()
    for worker in worker_deployments():
        c = container(worker)
        args = c["args"]
        assert not {a for a in args if a.startswith("--")} - dask_flags("worker")
        declared = dict(item.split("=") for item in option(args, "--resources").split(","))
        assert set(declared) == {"cores", "mem_mib", "gpus"}
        cores, mem_mib, gpus = (int(declared[k]) for k in ("cores", "mem_mib", "gpus"))
        assert option(args, "--nthreads") == str(cores)
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        assert requests == limits, f"{worker['metadata']['name']}: requests != limits"
        assert int(limits["cpu"]) == cores
        memory = MEBIBYTES.match(limits["memory"])
        assert memory and int(memory.group(1)) >= mem_mib
        assert int(limits.get("nvidia.com/gpu", 0)) == gpus
        kind = option(args, "--name").split("-", 1)[0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert "POD_NAME" in env  # $(POD_NAME) in --name is expanded from it
        types.add(kind)
    assert types == {"cpu", "gpu"}


def test_agent_service_exposes_http_and_is_annotated_for_prometheus() -> None:
    service = find("Service", "htcsim-agent")
    port = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert port["port"] == DEFAULT_PORT
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(DEFAULT_PORT)


# --- Docker ------------------------------------------------------------------


def test_dockerfile_runs_htcsim_agent_serve_with_flags_it_takes() -> None:
    entrypoint, cmd = dockerfile_instruction("ENTRYPOINT"), dockerfile_instruction("CMD")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["htcsim"] and "htcsim" in scripts
    assert cmd[:2] == ["agent", "serve"]
    assert not unknown_serve_flags(cmd)
    text = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {DEFAULT_PORT}" in text
    assert "/healthz" in text


def test_dockerfile_runtime_stage_is_unprivileged_and_has_no_compiler() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    runtime = re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]
    assert "gcc" in text.split(runtime)[0], "the build stage installs gcc"
    assert not re.search(r"apt-get install[^\n]*gcc", runtime)
    assert "USER htcsim" in runtime and "--uid 1000" in runtime
    assert "WORKDIR /var/lib/htcsim" in runtime


def test_dockerignore_keeps_artifacts_out_of_the_build_context() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "build", "*.so", "traces", "results"} <= patterns


# --- Prometheus and Grafana --------------------------------------------------


def test_prometheus_config_scrapes_the_agent_with_a_token() -> None:
    config = load_all(PROMETHEUS / "prometheus.yml")[0]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "htcsim-agent")
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "15s"
    assert job["authorization"]["credentials_file"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file()
    check_metric_references(list(all_strings(config)), "prometheus.yml")


def test_alert_rules_use_only_exported_metrics() -> None:
    rules = [r for g in load_all(PROMETHEUS / "alerts.yml")[0]["groups"] for r in g["rules"]]
    assert len(rules) >= 4
    jobs = {j["job_name"] for j in load_all(PROMETHEUS / "prometheus.yml")[0]["scrape_configs"]}
    refs = set()
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"]
        assert rule["annotations"]["summary"]
        refs |= check_metric_references([rule["expr"]], f"alerts.yml: {rule['alert']}")
        for job in re.findall(r'job="([^"]*)"', rule["expr"]):
            assert job in jobs, f"alerts.yml: {rule['alert']} names job {job!r}, not scraped"
    assert "htcsim_scheduling_pass_seconds_bucket" in refs
    assert any(r["expr"].startswith("up") for r in rules)


def test_dashboard_uses_only_exported_metrics_and_shows_them_all() -> None:
    """Every query names a series the agent exports; and every metric the
    agent exports has a panel, so a new metric is not silently left out."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert any(i["name"] == "DS_PROMETHEUS" for i in dashboard["__inputs"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    queries = list(strings_under(dashboard, {"expr", "query", "definition"}))
    refs = check_metric_references(queries, DASHBOARD.name)
    shown = {re.sub(r"_(bucket|sum|count)$", "", r) for r in refs}
    assert shown == set(METRIC_NAMES)


def test_every_metric_name_has_a_registry_family() -> None:
    """METRIC_NAMES and the registry agree, so the checks above compare with
    what the agent really serves."""
    covered = {re.sub(r"_(bucket|sum|count)$", "", s) for s in exported_series()}
    assert covered == set(METRIC_NAMES)


# --- the documentation -------------------------------------------------------


def test_docs_name_existing_files_and_serve_flags() -> None:
    text = DOCS.read_text()
    for path in set(re.findall(r"\bdeploy/[\w./-]*[\w]", text)):
        assert (ROOT / path).exists(), f"docs/deploy.md names {path}, which does not exist"
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        if "agent serve" in line:
            args = line.split("agent serve", 1)[1].split()
            assert not unknown_serve_flags(args), f"docs/deploy.md: {line.strip()}"


DASK_COMMAND = re.compile(r"(?:\bdask|--entrypoint dask \S+)\s+(scheduler|worker)\b(.*)")


def dask_commands(text: str) -> list[tuple[str, list[str]]]:
    """Every ``dask scheduler`` / ``dask worker`` command line of the code
    blocks of a document (continuation lines joined), as (command, arguments)."""
    blocks = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M))
    joined = re.sub(r"\\\n\s*", " ", blocks)
    return [
        (m.group(1), m.group(2).split())
        for line in joined.splitlines()
        if (m := DASK_COMMAND.search(line)) and "--" in m.group(2)
    ]


@pytest.mark.parametrize("path", [README, DOCS], ids=lambda p: p.name)
def test_docs_dask_commands_speak_tls_and_bind_to_named_addresses(path: Path) -> None:
    """The README's and docs/deploy.md's Dask commands: each passes the three
    TLS files of ``htcsim agent certs`` for its role, binds to an address it
    names (never all interfaces), and every scheduler address is tls://."""
    commands = dask_commands(path.read_text())
    assert {c for c, _ in commands} == {"scheduler", "worker"}, commands
    for command, args in commands:
        where = f"{path.name}: dask {command} {' '.join(args)}"
        assert not {a for a in args if a.startswith("--")} - dask_flags(command), where
        assert option(args, "--tls-ca-file").endswith("/ca.pem"), where
        assert option(args, "--tls-cert").endswith(f"/{command}.pem"), where
        assert option(args, "--tls-key").endswith(f"/{command}-key.pem"), where
        assert option(args, "--host") not in ("0.0.0.0", "::", ""), where
        if command == "worker":
            assert args[0].startswith("tls://"), where
    text = path.read_text()
    for address in re.findall(r"--scheduler[ =](\S+)", text) + re.findall(
        r'scheduler = "([^"]+)"', text
    ):
        assert address.startswith("tls://"), f"{path.name}: scheduler {address}"


def dask_containers() -> list[tuple[str, str, list[str]]]:
    """(where, scheduler|worker, args) of every Dask container of the
    manifests: the static overlay's Deployments and the autoscale overlay's
    DaskCluster."""
    out = []
    for path, doc in kube_documents():
        if doc["kind"] == "Deployment" and container(doc)["command"][0] == "dask":
            c = container(doc)
            out.append((f"{path.name}: {doc['metadata']['name']}", c["command"][1], c["args"]))
    cluster = yaml.safe_load(autoscale_config()["dask-cluster.yaml"])["spec"]
    for role in ("scheduler", "worker"):
        [c] = cluster[role]["spec"]["containers"]
        out.append((f"dask-cluster.yaml: {role}", c["command"][1], c.get("args", [])))
    return out


def test_dask_http_ports_listen_on_the_loopback_only() -> None:
    """Dask's TLS does not cover a scheduler's or worker's HTTP port (the
    dashboard, /info, /metrics; --no-dashboard drops only the dashboard's
    pages): every command of the manifests, of the docs and of the
    cluster-manager examples binds it to 127.0.0.1, and no probe, Service or
    NetworkPolicy names it from outside the pod."""
    commands = dask_containers()
    assert {role for _, role, _ in commands} == {"scheduler", "worker"}
    for path in (README, DOCS):
        commands += [(path.name, role, args) for role, args in dask_commands(path.read_text())]
    for where, role, args in commands:
        assert option(args, "--dashboard-address").startswith("127.0.0.1:"), where
        if role == "worker":
            assert "--no-dashboard" in args, where
    for path in sorted(DASK_EXAMPLES.glob("*.toml")):
        options = load_agent_config(path).cluster.options  # type: ignore[union-attr]
        address = (
            options.get("dashboard_address") or options["scheduler_options"]["dashboard_address"]
        )
        assert address.startswith("127.0.0.1:"), path.name
        if "worker_extra_args" in options:
            args = options["worker_extra_args"]
            assert option(args, "--dashboard-address").startswith("127.0.0.1:"), path.name
    scheduler = container(find("Deployment", "dask-scheduler"))
    for probe in ("readinessProbe", "livenessProbe"):
        assert "127.0.0.1:8787/health" in " ".join(scheduler[probe]["exec"]["command"])
    texts = [path.read_text() for path in kube_manifests()]
    assert not any("8787" in t and "containerPort: 8787" in t for t in texts)


# --- the agent's cluster managers ([cluster]) -----------------------------------

DASK_EXAMPLES = DEPLOY / "dask"


@pytest.mark.parametrize("path", sorted(DASK_EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_cluster_manager_examples_load_and_declare_their_node(path: Path) -> None:
    config = load_agent_config(path)
    assert config.cluster is not None and config.backend == "dask"
    options = config.cluster.options
    declared = options.get("resources") or _resources_arg(options.get("worker_extra_args", []))
    assert int(declared["cores"]) == config.cluster.cores
    assert int(declared["mem_mib"]) == config.cluster.mem_mib
    # the cluster the agent starts speaks TLS: the example names the files
    # `htcsim agent certs` writes
    assert not config.dask_insecure
    names = {Path(str(getattr(config, k))).name for k in ("tls_ca_file", "tls_cert", "tls_key")}
    assert names == {"ca.pem", "agent.pem", "agent-key.pem"}


def _resources_arg(args: list[str]) -> dict[str, str]:
    return dict(item.split("=") for item in option(args, "--resources").split(","))


def test_slurm_example_makes_batch_jobs_that_declare_the_node(tmp_path: Path) -> None:
    """The real dask-jobqueue SLURMCluster, from the example's options: its
    batch script starts one worker declaring the node (no Slurm needed)."""
    from dask_jobqueue import SLURMCluster

    config = load_agent_config(DASK_EXAMPLES / "agent-slurm.toml")
    assert config.cluster is not None
    options = dict(config.cluster.options)
    example = options["scheduler_options"]
    # bound to one named interface, not all of them; the dashboard to the loopback
    assert example["interface"] and "host" not in example
    assert example["dashboard_address"].startswith("127.0.0.1:")
    # the same keys on this machine: its loopback interface, free ports
    options["scheduler_options"] = example | {
        "interface": "lo",
        "port": 0,
        "dashboard_address": "127.0.0.1:0",
    }
    # the example's TLS settings, with files made here: the scheduler speaks TLS
    # and each batch job's worker gets the files on its command line
    make_certs(tmp_path / "certs")
    assert config.tls_ca_file is not None and not config.dask_insecure
    mine = AgentConfig(
        backend="dask",
        scheduler="tls://h:8786",
        **{
            key: tmp_path / "certs" / Path(str(getattr(config, key))).name
            for key in ("tls_ca_file", "tls_cert", "tls_key")
        },
    )
    cluster = SLURMCluster(**options, security=cluster_security(mine))
    try:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        port = int(cluster.scheduler_address.rsplit(":", 1)[1])
        listening = {
            c.laddr.ip
            for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}  # that interface only, not 0.0.0.0
        script = cluster.job_script()
        assert "--resources cores=32,mem_mib=120000,gpus=0" in script
        assert "--nthreads 32" in script
        assert f"--tls-ca-file {tmp_path / 'certs' / 'ca.pem'}" in script
        assert f"--tls-key {tmp_path / 'certs' / 'agent-key.pem'}" in script
        limit = re.search(r"--memory-limit ([0-9.]+)GiB", script)
        assert limit and float(limit.group(1)) * 1024 >= config.cluster.mem_mib
        assert callable(cluster.scale_down)  # the agent retires the worker it chose
    finally:
        cluster.close()


def autoscale_config() -> dict[str, str]:
    doc = load_all(AUTOSCALE / "config.yaml")[0]
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "htcsim-config"
    return dict(doc["data"])


def test_kubernetes_autoscale_overlay_settings_policy_and_dask_cluster(tmp_path: Path) -> None:
    data = autoscale_config()
    (tmp_path / "agent.toml").write_text(data["agent.toml"])
    (tmp_path / "policy.toml").write_text(data["policy.toml"])
    config = load_agent_config(tmp_path / "agent.toml")
    policy = load_policy(tmp_path / "policy.toml")
    cluster = config.cluster
    assert cluster is not None and cluster.manager == "dask_kubernetes.operator.KubeCluster"
    # the operator's cluster takes no TLS credentials: said in the settings, and
    # the overlay's NetworkPolicy (checked below) is what guards it
    assert config.dask_insecure and config.tls_cert is None
    assert "dask_insecure = true" in data["agent.toml"]
    assert policy.autoscale
    low, high = policy.autoscale_bounds(cluster.node_type, cluster.nodes)
    assert 0 <= low <= high <= cluster.nodes
    # the spec the agent reads is the ConfigMap's key, where the agent mounts it
    mount = next(
        m["mountPath"]
        for m in container(find("StatefulSet", "htcsim-agent"))["volumeMounts"]
        if m["name"] == "config"
    )
    assert cluster.options["custom_cluster_spec"] == f"{mount}/dask-cluster.yaml"
    spec = yaml.safe_load(data["dask-cluster.yaml"])
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["namespace"] == "htcsim"
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    assert worker["command"] == ["dask", "worker"]
    assert set(help_flags(" ".join(worker["args"]))) <= dask_flags("worker")
    declared = _resources_arg(worker["args"])
    assert int(declared["cores"]) == cluster.cores
    assert int(declared["mem_mib"]) == cluster.mem_mib
    limits = worker["resources"]["limits"]
    assert int(limits["cpu"]) == cluster.cores
    assert int(MEBIBYTES.match(limits["memory"]).group(1)) > cluster.mem_mib  # type: ignore[union-attr]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["command"] == ["dask", "scheduler"]


def test_kubernetes_autoscale_overlay_patches_what_the_base_holds() -> None:
    kustomization = load_all(AUTOSCALE / "kustomization.yaml")[0]
    assert kustomization["resources"][0] == "../../base"
    names = {
        (d["kind"], d["metadata"]["name"])
        for p in BASE.glob("*.yaml")
        if p.name != "kustomization.yaml"
        for d in load_all(p)
    }
    for patch in kustomization["patches"]:
        doc = load_all(AUTOSCALE / patch["path"])[0]
        assert (doc["kind"], doc["metadata"]["name"]) in names, f"{doc['metadata']['name']}"
        assert doc["metadata"]["namespace"] == "htcsim"
    agent = load_all(AUTOSCALE / "agent.yaml")[0]["spec"]["template"]["spec"]
    args = agent["containers"][0]["args"]
    assert not unknown_serve_flags(args)
    assert "--scheduler" not in args and "--backend" not in args  # [cluster] starts it
    account = next(d for d in load_all(AUTOSCALE / "rbac.yaml") if d["kind"] == "ServiceAccount")
    assert agent["serviceAccountName"] == account["metadata"]["name"]
    role = next(d for d in load_all(AUTOSCALE / "rbac.yaml") if d["kind"] == "Role")
    assert any("daskclusters" in rule["resources"] for rule in role["rules"])


# --- kubectl kustomize: the overlays as Kubernetes gets them ------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``directory``: the documents kubectl apply -k sends."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not installed: the overlays are built only by the real kubectl "
            "(its kustomize); install kubectl to run this check"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=KUSTOMIZE_S,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def kinds_and_names(documents: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in documents}


SHARED = {
    ("Namespace", "htcsim"),
    ("ConfigMap", "htcsim-config"),
    ("Secret", "htcsim-tokens"),
    ("StatefulSet", "htcsim-agent"),
    ("Service", "htcsim-agent"),
    ("NetworkPolicy", "dask-scheduler"),
    ("NetworkPolicy", "dask-worker"),
}


def test_kubectl_builds_the_static_overlay() -> None:
    documents = kustomize(STATIC)
    assert kinds_and_names(documents) == SHARED | {
        ("Deployment", "dask-scheduler"),
        ("Service", "dask-scheduler"),
        ("Deployment", "dask-workers-cpu"),
        ("Deployment", "dask-workers-gpu"),
    }
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "htcsim", doc["metadata"]["name"]
    agent = next(d for d in documents if d["kind"] == "StatefulSet")
    assert option(container(agent)["args"], "--scheduler") == SCHEDULER
    assert set(tls_mounts(agent)) == {"ca.pem", "agent.pem", "agent-key.pem"}
    for doc in documents:
        if doc["kind"] == "Deployment":
            role = "scheduler" if doc["metadata"]["name"] == "dask-scheduler" else "worker"
            assert_dask_tls(doc, role)
    assert_policies_guard_dask(documents)


def test_kubectl_builds_the_autoscale_overlay() -> None:
    documents = kustomize(AUTOSCALE)
    assert kinds_and_names(documents) == SHARED | {
        ("ServiceAccount", "htcsim-agent"),
        ("Role", "htcsim-agent"),
        ("RoleBinding", "htcsim-agent"),
    }
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "htcsim", doc["metadata"]["name"]
    agent = next(d for d in documents if d["kind"] == "StatefulSet")
    args = container(agent)["args"]
    assert "--scheduler" not in args and "--backend" not in args
    assert agent["spec"]["template"]["spec"]["serviceAccountName"] == "htcsim-agent"
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    assert "[cluster]" in config["agent.toml"] and "dask-cluster.yaml" in config


def test_kubectl_builds_no_deployment_from_the_base_alone() -> None:
    """The base is shared, not a deployment of Dask: it holds no scheduler."""
    names = kinds_and_names(kustomize(BASE))
    assert ("StatefulSet", "htcsim-agent") in names
    assert not any(kind == "Deployment" for kind, _ in names)


# --- NetworkPolicy: users cannot reach Dask ---------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy podSelector (matchLabels only) selects ``labels``."""
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_labels(documents: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Workload name -> the labels of the pods it makes."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in documents
        if d["kind"] in ("Deployment", "StatefulSet")
    }


def allowed_sources(policy: dict[str, Any], pods: dict[str, dict[str, str]]) -> set[str]:
    """The workloads whose pods a policy lets in (any port)."""
    allowed: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) <= {"podSelector", "namespaceSelector"}, peer
            if "namespaceSelector" in peer and "podSelector" not in peer:
                continue  # another namespace (the Dask operator's)
            allowed |= {n for n, labels in pods.items() if selects(peer["podSelector"], labels)}
    return allowed


def assert_policies_guard_dask(documents: list[dict[str, Any]]) -> None:
    pods = pod_labels(documents)
    policies = {d["metadata"]["name"]: d for d in documents if d["kind"] == "NetworkPolicy"}
    workers = {n for n in pods if n.startswith("dask-workers-")}
    assert len(workers) >= 2
    scheduler = policies["dask-scheduler"]
    assert scheduler["spec"]["policyTypes"] == ["Ingress"]
    guarded = {n for n, labels in pods.items() if selects(scheduler["spec"]["podSelector"], labels)}
    assert guarded == {"dask-scheduler"}
    assert allowed_sources(scheduler, pods) == {"htcsim-agent"} | workers
    for rule in scheduler["spec"]["ingress"]:
        assert {p["port"] for p in rule["ports"]} == {8786}
    worker = policies["dask-worker"]
    guarded = {n for n, labels in pods.items() if selects(worker["spec"]["podSelector"], labels)}
    assert guarded == workers
    assert allowed_sources(worker, pods) == {"htcsim-agent", "dask-scheduler"} | workers


def test_network_policy_lets_only_the_agent_and_dask_reach_dask() -> None:
    """From the files (no kubectl needed): the scheduler's port is open to
    the agent and the workers only, a worker to the agent, the scheduler and
    the other workers; a user's pod matches none of them."""
    documents = [doc for _, doc in kube_documents()]
    assert_policies_guard_dask(documents)
    user_pod = {"run": "notebook"}
    for policy in (d for d in documents if d["kind"] == "NetworkPolicy"):
        assert not allowed_sources(policy, {"user": user_pod})


def test_autoscale_network_policy_selects_the_operator_pods() -> None:
    """The operator labels its pods dask.org/cluster-name=<DaskCluster name>
    and dask.org/component; the policies must select those of our cluster."""
    cluster = yaml.safe_load(autoscale_config()["dask-cluster.yaml"])["metadata"]["name"]
    operator_pods = {
        component: {"dask.org/cluster-name": cluster, "dask.org/component": component}
        for component in ("scheduler", "worker")
    }
    agent_labels = load_all(BASE / "agent.yaml")[0]["spec"]["template"]["metadata"]["labels"]
    pods = {**operator_pods, "agent": agent_labels, "user": {"run": "notebook"}}
    policies = {d["metadata"]["name"]: d for d in load_all(AUTOSCALE / "network-policy.yaml")}
    scheduler, worker = policies["dask-scheduler"], policies["dask-worker"]
    assert selects(scheduler["spec"]["podSelector"], operator_pods["scheduler"])
    assert allowed_sources(scheduler, pods) == {"agent", "worker"}
    assert selects(worker["spec"]["podSelector"], operator_pods["worker"])
    assert allowed_sources(worker, pods) == {"agent", "scheduler", "worker"}


def test_kubecluster_takes_the_example_options() -> None:
    operator = pytest.importorskip("dask_kubernetes.operator")
    data = autoscale_config()
    options = tomllib.loads(data["agent.toml"])["cluster"]["options"]
    inspect.signature(operator.KubeCluster).bind(**options)


# --- promtool: the alert rules as Prometheus evaluates them --------------------------

PROMTOOL_S = 60.0


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=PROMTOOL_S, check=False
    )


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_nodes_down_alert_fires_for_a_lost_dask_node(tmp_path: Path) -> None:
    """The agent lists a lost Dask node as down for LOST_SHOWN_S (then it is
    gone): HtcsimNodesDown, evaluated by promtool on that series, must fire
    within that window, and not for a node down shorter than its ``for``."""
    from htcsim.agent.engine.inventory import LOST_SHOWN_S

    rules = load_all(PROMETHEUS / "alerts.yml")[0]["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == "HtcsimNodesDown")
    shown_min = int(LOST_SHOWN_S // 60)
    labels = 'instance="agent:8642", job="htcsim-agent"'
    tests = {
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {  # lost at minute 1, listed down for LOST_SHOWN_S, then gone (0)
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'htcsim_nodes{{state="down", {labels}}}',
                        "values": f"0 1x{shown_min - 1} 0x30",
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "HtcsimNodesDown", "exp_alerts": []},
                    {
                        "eval_time": f"{shown_min}m",
                        "alertname": "HtcsimNodesDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": rule["labels"]["severity"],
                                    "instance": "agent:8642",
                                },
                                "exp_annotations": {
                                    "summary": "1 node(s) down on agent:8642",
                                    "description": rule["annotations"]["description"],
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": f"{shown_min + 5}m",
                        "alertname": "HtcsimNodesDown",
                        "exp_alerts": [],
                    },
                ],
            },
            {  # down for 3 minutes only (replaced quickly): no alert
                "interval": "1m",
                "input_series": [
                    {"series": f'htcsim_nodes{{state="down", {labels}}}', "values": "0 1x3 0x20"}
                ],
                "alert_rule_test": [
                    {"eval_time": f"{m}m", "alertname": "HtcsimNodesDown", "exp_alerts": []}
                    for m in (2, 4, 6, 10)
                ],
            },
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dask_scheduler_down_alert_fires_after_a_minute(tmp_path: Path) -> None:
    """HtcsimDaskSchedulerDown, evaluated by promtool: fires once the agent
    has reported its scheduler unreachable (htcsim_dask_scheduler_up 0) for a
    minute, not for a loss shorter than that (a restart the agent rode out)."""
    rules = load_all(PROMETHEUS / "alerts.yml")[0]["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == "HtcsimDaskSchedulerDown")
    labels = 'instance="agent:8642", job="htcsim-agent", scheduler="tls://10.0.0.5:8786"'
    series = f"htcsim_dask_scheduler_up{{{labels}}}"
    tests = {
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "evaluation_interval": "15s",
        "tests": [
            {  # lost at 1m, for 3 minutes
                "interval": "15s",
                "input_series": [{"series": series, "values": "1x3 0x12 1x20"}],
                "alert_rule_test": [
                    {
                        "eval_time": "1m30s",
                        "alertname": "HtcsimDaskSchedulerDown",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "2m30s",
                        "alertname": "HtcsimDaskSchedulerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "instance": "agent:8642",
                                    "scheduler": "tls://10.0.0.5:8786",
                                },
                                "exp_annotations": {
                                    "summary": "htcsim agent agent:8642 has lost the Dask "
                                    "scheduler tls://10.0.0.5:8786",
                                    "description": rule["annotations"]["description"],
                                },
                            }
                        ],
                    },
                    {"eval_time": "6m", "alertname": "HtcsimDaskSchedulerDown", "exp_alerts": []},
                ],
            },
            {  # lost for 30 s only: no alert
                "interval": "15s",
                "input_series": [{"series": series, "values": "1x3 0x1 1x20"}],
                "alert_rule_test": [
                    {"eval_time": f"{m}s", "alertname": "HtcsimDaskSchedulerDown", "exp_alerts": []}
                    for m in (60, 90, 120, 180)
                ],
            },
        ],
    }
    path = tmp_path / "scheduler_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_pods_outlast_the_jobs_stop_grace(tmp_path: Path) -> None:
    """A deleted worker pod's jobs get SIGTERM and the agent's kill_grace_s
    before SIGKILL (stop_grace.py): the pod's terminationGracePeriodSeconds
    must leave that time plus a margin, or Kubernetes kills them first."""
    margin_s = 10
    pairs = []
    agent_toml = find("ConfigMap", "htcsim-config")["data"]["agent.toml"]
    (tmp_path / "static.toml").write_text(agent_toml)
    static = load_agent_config(tmp_path / "static.toml").kill_grace_s
    pairs += [(static, w["spec"]["template"]["spec"]) for w in worker_deployments()]
    data = autoscale_config()
    (tmp_path / "autoscale.toml").write_text(data["agent.toml"])
    grace = load_agent_config(tmp_path / "autoscale.toml").kill_grace_s
    pairs.append((grace, yaml.safe_load(data["dask-cluster.yaml"])["spec"]["worker"]["spec"]))
    assert len(pairs) >= 3
    for kill_grace_s, pod in pairs:
        assert pod["terminationGracePeriodSeconds"] >= kill_grace_s + margin_s
        container_ = pod["containers"][0]
        assert "--no-nanny" not in container_["args"]  # the nanny runs the grace


# --- systemd: a site without Kubernetes restarts its scheduler and workers -----------


def _unit(name: str) -> dict[str, dict[str, str]]:
    """A systemd unit's sections and keys (continuation lines joined)."""
    text = (DEPLOY / "systemd" / name).read_text().replace("\\\n", " ")
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            section[key] = value
    return out


@pytest.mark.parametrize("name", ["htcsim-dask-scheduler.service", "htcsim-dask-worker@.service"])
def test_systemd_units_restart_their_process_over_tls(name: str) -> None:
    """The scheduler and every worker are started again whenever they exit
    (the agent rides out a lost scheduler only if something restarts it, and
    its workers exit with it), speak TLS, bind to a named address and keep
    their HTTP port on the loopback."""
    unit = _unit(name)
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    command = service["ExecStart"].split()
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert flag in command, (name, flag)
    host = command[command.index("--host") + 1]
    assert host not in ("0.0.0.0", "::", ""), name
    dashboard = command[command.index("--dashboard-address") + 1]
    assert dashboard.startswith("127.0.0.1:"), name
    assert service.get("User") and service["User"] != "root"


def test_systemd_worker_stop_outlasts_the_jobs_stop_grace() -> None:
    """``systemctl stop`` of a worker drains its node: its jobs get SIGTERM
    and kill_grace_s before SIGKILL, so systemd must not kill them first."""
    service = _unit("htcsim-dask-worker@.service")["Service"]
    assert float(service["TimeoutStopSec"]) >= AgentConfig().kill_grace_s + 10
    assert "tls://" in service["ExecStart"] and "--name %i" in service["ExecStart"]


# --- the Kubernetes schema: every object as the API server would check it ---------------


def _schema_errors(documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each object checked against the Kubernetes API's schema (strict: an
    unknown field is an error, as ``kubectl apply --validate=strict``)."""
    import kubernetes_validate  # a test dependency: never skipped
    version = kubernetes_validate.latest_version()
    errors = []
    for where, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(
                f"{where}: {doc['kind']} {doc['metadata']['name']}: {path}: {exc.message}"
            )
    return errors


def test_every_kubernetes_object_file_passes_the_schema() -> None:
    """The complete objects of the base and both overlays (the autoscale
    overlay's patches are checked once kubectl has applied them, below)."""
    files = [*kube_manifests(), AUTOSCALE / "rbac.yaml", AUTOSCALE / "network-policy.yaml"]
    documents = [(path.name, doc) for path in files for doc in load_all(path)]
    assert len(documents) >= 10
    assert _schema_errors(documents) == []


@pytest.mark.parametrize("overlay", ["static", "autoscale"])
def test_every_rendered_kubernetes_object_passes_the_schema(overlay: str) -> None:
    """What ``kubectl apply -k`` sends, patches applied, against the schema."""
    documents = kustomize(STATIC if overlay == "static" else AUTOSCALE)
    assert _schema_errors([(overlay, doc) for doc in documents]) == []


def test_the_schema_check_catches_a_wrong_field() -> None:
    """The check itself: a Deployment with a misspelt field and a string
    where a number goes is refused."""
    docs = [d for d in load_all(STATIC / "dask-scheduler.yaml") if d["kind"] == "Deployment"]
    deployment = docs[0]
    deployment["spec"]["replica"] = 1
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "sixty"
    errors = _schema_errors([("test", deployment)])
    assert len(errors) >= 1, errors
