"""The Kubernetes manifests in deploy/kubernetes, checked offline.

1. Every document of every YAML file validates against the Kubernetes schemas of one fixed
   version (K8S_VERSION) in strict mode: an unknown or misspelt field is an error, as it is for
   `kubectl apply --validate=strict`. (kubernetes-validate ships the schemas; no cluster.)
2. The properties the deployment depends on, each its own test: every container non-root with
   a read-only root filesystem; liveness and readiness probes on the right paths and ports;
   the backend Service headless and named by the gateway's pools; the workspace claim
   ReadWriteMany and mounted at /app/workspace; grace periods longer than the drains; HPAs on
   CPU and memory; PDBs that select pods that exist.
3. The gateway.toml in the ConfigMaps parses as TOML and passes the real `gateway -t` (with a
   throw-away self-signed certificate in place of the Secret).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
K8S = REPO / "deploy" / "kubernetes"
# The Kubernetes version whose schemas every manifest must satisfy (kubectl on the dev machine
# is 1.32 too). The features used (autoscaling/v2, policy/v1, CronJob timeZone) are in it.
K8S_VERSION = "1.32.0"
IMAGE_USER = 1001

ALL_FILES = sorted(K8S.rglob("*.yaml"))


def load(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization_resources(directory: Path) -> list[dict]:
    """The documents `kubectl apply -k directory` applies (the files its kustomization lists)."""
    kust = load(directory / "kustomization.yaml")[0]
    docs = []
    for name in kust["resources"]:
        docs.extend(load(directory / name))
    return docs


BASE = kustomization_resources(K8S)
CANARY = kustomization_resources(K8S / "canary")
EXTRAS = [d for p in sorted((K8S / "extras").glob("*.yaml")) for d in load(p)]


def find(docs: list[dict], kind: str, name: str) -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    """(kind/name, pod template) of every workload."""
    out = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((name, d["spec"]["template"]))
        elif d["kind"] == "CronJob":
            out.append((name, d["spec"]["jobTemplate"]["spec"]["template"]))
    return out


def deployments(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] == "Deployment"]


def container_port(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def gateway_toml(config_map: dict) -> dict:
    return tomllib.loads(config_map["data"]["gateway.toml"])


def duration_seconds(value: str | int) -> float:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", value)
    assert m, f"unexpected duration {value!r}"
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def prestop_sleep(container: dict) -> int:
    cmd = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(cmd[1]) if cmd[:1] == ["sleep"] else 0


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- 1. schemas -----------------------------------------------------------------------------


def validate_strictly(doc: dict, source: str) -> None:
    """Fail with the file, object, field path and reason if doc breaks the schema."""
    what = f"{source}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    problem = None
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        problem = f"{'.'.join(str(p) for p in e.path)}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        problem = e.message
    if problem:
        pytest.fail(f"{what}: {problem}", pytrace=False)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_every_document_validates_strictly(path: Path):
    docs = load(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        if doc.get("kind") == "Kustomization":
            # kustomize's own file: no Kubernetes schema; its entries must exist
            for name in doc["resources"]:
                assert (path.parent / name).is_file(), f"{path}: resource {name} is missing"
            continue
        validate_strictly(doc, str(path.relative_to(K8S)))


def test_strict_validation_rejects_an_unknown_field():
    """The check above can fail: a misspelt field is an error in strict mode."""
    dep = copy.deepcopy(find(BASE, "Deployment", "backend"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_placeholders():
    listed = set(load(K8S / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert "secrets.example.yaml" not in listed, "applying placeholders would overwrite real secrets"
    assert listed == on_disk - {"secrets.example.yaml"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("directory", ["", "canary"])
def test_kustomize_builds_and_the_output_validates(directory: str):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / directory)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs
    for doc in docs:
        validate_strictly(doc, f"kubectl kustomize {directory or '.'}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "mcp"


# --- 2. properties --------------------------------------------------------------------------


@pytest.mark.parametrize("name,template", [pytest.param(n, t, id=n) for n, t in
                                           pod_templates(BASE + CANARY + EXTRAS)])
def test_every_pod_runs_non_root_read_only_with_nothing_extra(name: str, template: dict):
    spec = template["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True, name
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (IMAGE_USER,) * 3, name
    assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
    assert spec["automountServiceAccountToken"] is False, name
    assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, (name, c["name"])
        assert sc["runAsUser"] == IMAGE_USER and sc["runAsGroup"] == IMAGE_USER, (name, c["name"])
        assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
        assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", (name, c["name"])
        assert c["image"].startswith("mcp-gateway:"), (name, c["image"])
        assert "command" not in c, f"{name}: the image's ENTRYPOINT (tini + script) must stay"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)
        # a read-only root needs a writable /tmp
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        vols = {v["name"]: v for v in spec["volumes"]}
        assert tmp and "emptyDir" in vols[tmp[0]["name"]], (name, c["name"])


# (deployment, image args, liveness path, readiness path, port)
PROBES = [
    ("gateway", ["gateway"], "/healthz", "/readyz", 9464),
    ("backend", ["backend"], "/health/live", "/health/ready", 3000),
    ("backend-canary", ["backend"], "/health/live", "/health/ready", 3000),
]


@pytest.mark.parametrize("name,args,live,ready,port", PROBES)
def test_containers_keep_the_entrypoint_and_probe_the_right_endpoints(name, args, live, ready,
                                                                     port):
    dep = find(BASE + CANARY, "Deployment", name)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == args
    for probe, path in (("livenessProbe", live), ("readinessProbe", ready)):
        get = c[probe]["httpGet"]
        assert get["path"] == path, (name, probe)
        assert container_port(c, get["port"]) == port, (name, probe)


def test_backend_service_is_headless_and_is_what_the_gateway_pools_resolve():
    for docs, cm_docs in ((BASE, BASE), (BASE + CANARY, CANARY)):
        cfg = gateway_toml(find(cm_docs, "ConfigMap", "gateway-config"))
        for pool_name, pool in cfg["pools"].items():
            for server in pool["servers"]:
                address = server if isinstance(server, str) else server["address"]
                host, port = address.rsplit(":", 1)
                svc = find(docs, "Service", host)
                assert svc["spec"].get("clusterIP") == "None", f"{host} must be headless"
                assert not svc["spec"].get("publishNotReadyAddresses")
                assert int(port) in [p["port"] for p in svc["spec"]["ports"]], pool_name
                # the Service selects pods of exactly one Deployment, which expose that port
                chosen = [d for d in deployments(docs)
                          if selects(svc["spec"]["selector"],
                                     d["spec"]["template"]["metadata"]["labels"])]
                assert len(chosen) == 1, f"Service {host} selects {len(chosen)} Deployments"
                (c,) = chosen[0]["spec"]["template"]["spec"]["containers"]
                target = [p["targetPort"] for p in svc["spec"]["ports"] if p["port"] == int(port)]
                assert container_port(c, target[0]) == int(port)


def test_gateway_service_maps_80_and_443_to_the_listeners_in_gateway_toml():
    cfg = gateway_toml(find(BASE, "ConfigMap", "gateway-config"))
    svc = find(BASE, "Service", "gateway")
    (c,) = find(BASE, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    ports = {p["port"]: container_port(c, p["targetPort"]) for p in svc["spec"]["ports"]}
    listen = {name: int(cfg["listeners"][name]["address"].rsplit(":", 1)[1])
              for name in ("http", "https")}
    assert ports == {80: listen["http"], 443: listen["https"]}
    # the redirect names the public port, not the container's
    assert cfg["listeners"]["http"].get("https_port", listen["https"]) == 443
    assert svc["spec"]["externalTrafficPolicy"] == "Local"   # client address for rate zones


def test_gateway_mounts_config_dir_tls_secret_and_writable_run_dir():
    cfg = gateway_toml(find(BASE, "ConfigMap", "gateway-config"))
    pod = find(BASE, "Deployment", "gateway")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        assert "subPath" not in m, "a subPath mount never sees ConfigMap/Secret updates"
    # the ConfigMap as the directory /etc/gateway (gateway's default -c path)
    assert vols[mounts["/etc/gateway"]["name"]]["configMap"]["name"] == "gateway-config"
    # the TLS Secret where gateway.toml looks, readable by group 1001 only
    https = cfg["listeners"]["https"]
    tls_dir = str(Path(https["cert"]).parent)
    assert str(Path(https["key"]).parent) == tls_dir
    secret = vols[mounts[tls_dir]["name"]]["secret"]
    assert secret["secretName"] == "gateway-tls"
    assert secret["defaultMode"] == 0o440
    assert {i["key"]: i["path"] for i in secret["items"]} == {
        "tls.crt": Path(https["cert"]).name, "tls.key": Path(https["key"]).name}
    assert pod["securityContext"]["fsGroup"] == IMAGE_USER
    # pid file and upgrade socket on an emptyDir
    for key in ("pid_file", "upgrade_sock"):
        run_dir = str(Path(cfg["server"][key]).parent)
        assert "emptyDir" in vols[mounts[run_dir]["name"]], key


def test_workspace_claim_is_read_write_many_and_mounted_at_app_workspace():
    pvc = find(BASE, "PersistentVolumeClaim", "openspec-workspace")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("backend", "backend-canary"):
        pod = find(BASE + CANARY, "Deployment", name)["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        vols = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/app/workspace"]
        assert not mount.get("readOnly")
        assert vols[mount["name"]]["persistentVolumeClaim"]["claimName"] == "openspec-workspace"
        assert env(c)["WORKING_DIRECTORY"] == "/app/workspace"
        assert "SEED_WORKSPACE" not in env(c), "seeding is a one-off (README: First start)"


def test_backup_cronjob_archives_the_same_claim_to_its_own_claim():
    cj = find(BASE, "CronJob", "workspace-backup")
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "backend backup " in " ".join(c["args"])
    restore = find(EXTRAS, "Job", "workspace-restore")["spec"]["template"]["spec"]["containers"][0]
    assert restore["args"][:2] == ["backend", "restore"]
    vols = {v["name"]: v for v in pod["volumes"]}
    claim = {m["mountPath"]: vols[m["name"]].get("persistentVolumeClaim", {}).get("claimName")
             for m in c["volumeMounts"]}
    assert claim["/app/workspace"] == "openspec-workspace"
    assert claim["/backups"] == "openspec-backups"
    find(BASE, "PersistentVolumeClaim", "openspec-backups")


def test_termination_grace_periods_exceed_prestop_plus_drain():
    cfg = gateway_toml(find(BASE, "ConfigMap", "gateway-config"))
    drains = {
        "gateway": lambda c: duration_seconds(cfg["server"]["grace_period"]),
        "backend": lambda c: int(env(c)["SHUTDOWN_GRACE_MS"]) / 1000,
        "backend-canary": lambda c: int(env(c)["SHUTDOWN_GRACE_MS"]) / 1000,
    }
    for name, drain in drains.items():
        pod = find(BASE + CANARY, "Deployment", name)["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        needed = prestop_sleep(c) + drain(c)
        assert pod["terminationGracePeriodSeconds"] > needed, (name, needed)


def test_hpas_scale_existing_deployments_on_cpu_and_memory():
    hpas = [d for d in BASE if d["kind"] == "HorizontalPodAutoscaler"]
    assert {h["metadata"]["name"] for h in hpas} == {"gateway", "backend"}
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        dep = find(BASE, "Deployment", ref["name"])
        resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
        assert resources == {"cpu", "memory"}, hpa["metadata"]["name"]
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        # utilization targets are relative to the requests, so every container must have them
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])


def test_pdbs_select_existing_pods_and_allow_a_drain():
    pdbs = [d for d in BASE if d["kind"] == "PodDisruptionBudget"]
    assert {p["metadata"]["name"] for p in pdbs} == {"gateway", "backend"}
    hpa_min = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
               for h in BASE if h["kind"] == "HorizontalPodAutoscaler"}
    for pdb in pdbs:
        selector = pdb["spec"]["selector"]["matchLabels"]
        chosen = [d for d in deployments(BASE)
                  if selects(selector, d["spec"]["template"]["metadata"]["labels"])]
        assert len(chosen) == 1, pdb["metadata"]["name"]
        replicas = hpa_min.get(chosen[0]["metadata"]["name"], chosen[0]["spec"]["replicas"])
        assert pdb["spec"]["minAvailable"] < replicas, "a node drain could never evict a pod"
    # and the canary's pods are counted by neither the backend's PDB nor its Service
    canary = find(CANARY, "Deployment", "backend-canary")["spec"]["template"]["metadata"]["labels"]
    assert not selects(find(BASE, "PodDisruptionBudget", "backend")["spec"]["selector"]
                       ["matchLabels"], canary)
    assert not selects(find(BASE, "Service", "backend")["spec"]["selector"], canary)


def test_pods_are_labelled_and_annotated_for_prometheus():
    for dep in deployments(BASE + CANARY):
        tmpl = dep["spec"]["template"]
        labels = tmpl["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mcp-gateway"
        assert labels["app.kubernetes.io/component"]
        ann = tmpl["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/path"] == "/metrics"
        (c,) = tmpl["spec"]["containers"]
        assert int(ann["prometheus.io/port"]) in [p["containerPort"] for p in c["ports"]]
    for doc in BASE + CANARY + EXTRAS:
        assert "app.kubernetes.io/name" in doc["metadata"]["labels"], doc["metadata"]["name"]
        assert "app.kubernetes.io/component" in doc["metadata"]["labels"]
    prom = yaml.safe_load(find(EXTRAS, "ConfigMap", "prometheus-mcp-example")["data"]
                          ["prometheus.yml"])
    assert prom["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"


# --- 3. the gateway's configuration ---------------------------------------------------------

CONFIG_MAPS = [("base", K8S / "gateway-config.yaml"), ("canary", K8S / "canary" / "gateway-config.yaml")]


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def checkable_toml(text: str, cert: Path, key: Path) -> str:
    """The ConfigMap's gateway.toml with the Secret's paths replaced by a temporary pair."""
    https = tomllib.loads(text)["listeners"]["https"]
    out = text
    for name, temp in (("cert", cert), ("key", key)):
        line = f'{name} = "{https[name]}"'
        assert out.count(line) == 1, f"expected the line {line} once in [listeners.https]"
        out = out.replace(line, f'{name} = "{temp}"')
    return out


def gateway_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    binary = TARGET / "release" / "gateway"
    assert binary.exists(), f"{binary} is missing: run `cargo build --release --workspace --bins`"
    conf = tmp_path / "gateway.toml"
    conf.write_text(text)
    return subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("label,path", CONFIG_MAPS, ids=[c[0] for c in CONFIG_MAPS])
def test_gateway_toml_parses_and_passes_gateway_t(label, path, self_signed, tmp_path):
    (cm,) = [d for d in load(path) if d["kind"] == "ConfigMap"]
    text = cm["data"]["gateway.toml"]
    cfg = tomllib.loads(text)
    assert cfg["listeners"]["https"]["cert"] == "/var/lib/gateway/tls/cert.pem"
    assert cfg["listeners"]["https"]["key"] == "/var/lib/gateway/tls/key.pem"
    result = gateway_check(checkable_toml(text, *self_signed), tmp_path)
    assert result.returncode == 0, f"gateway -t on the {label} ConfigMap:\n{result.stdout}{result.stderr}"


def test_gateway_t_fails_on_a_broken_copy(self_signed, tmp_path):
    """The check above can fail: a route naming a pool that does not exist is refused."""
    text = find(BASE, "ConfigMap", "gateway-config")["data"]["gateway.toml"]
    broken = text.replace('pool = "legacy_sse"', 'pool = "no_such_pool"', 1)
    assert broken != text
    result = gateway_check(checkable_toml(broken, *self_signed), tmp_path)
    assert result.returncode != 0
    assert "no_such_pool" in result.stdout + result.stderr


def test_canary_config_is_the_base_config_plus_the_split():
    """canary/gateway-config.yaml replaces the base's ConfigMap: apart from the canary pool, the
    split and the routes that use it, it must not drift from the base."""
    base = gateway_toml(find(BASE, "ConfigMap", "gateway-config"))
    canary = copy.deepcopy(gateway_toml(find(CANARY, "ConfigMap", "gateway-config")))
    split_pools = set(canary["splits"]["mcp"]["pools"])
    assert split_pools == {"backend", "canary"}
    assert canary["splits"]["mcp"]["rollback"]["pool"] == "canary"
    del canary["pools"]["canary"]
    del canary["splits"]
    for route in canary["routes"]:
        if route.get("split") == "mcp":
            del route["split"]
            route["pool"] = "backend"
    assert canary == base
