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
4. The optional stores in extras/ (PostgreSQL, Redis): kept out of the kustomization, run as the
   user their image declares, probed the way the image's HEALTHCHECK is, reached through the
   Services the documented URLs name, by the backend pods only; the *.patch.yaml files (not
   manifests) merged into the Deployments they patch validate strictly, and every variable a
   backend container is given is one `backend --help` lists.
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
# The user (uid = gid) of each image the manifests run, as its Containerfile's USER says.
IMAGE_USERS = {"mcp-gateway": IMAGE_USER, "mcp-postgres": 999, "mcp-redis": 999}
CONTAINERFILES = {"mcp-gateway": REPO / "Dockerfile",
                  "mcp-postgres": REPO / "deploy" / "postgres" / "Containerfile",
                  "mcp-redis": REPO / "deploy" / "redis" / "Containerfile"}

# Strategic merge patches (kubectl patch --patch-file) are not manifests: section 4 merges them
# into what they patch and validates that.
PATCHES = sorted(K8S.rglob("*.patch.yaml"))
ALL_FILES = sorted(set(K8S.rglob("*.yaml")) - set(PATCHES))


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
EXTRAS = [d for p in sorted((K8S / "extras").glob("*.yaml")) if p not in PATCHES for d in load(p)]


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


def image_name(container: dict) -> str:
    return container["image"].rsplit(":", 1)[0]


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
    images = {image_name(c) for c in spec.get("initContainers", []) + spec["containers"]}
    assert len(images) == 1 and images <= set(IMAGE_USERS), (name, images)
    user = IMAGE_USERS[images.pop()]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True, name
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (user,) * 3, name
    assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
    assert spec["automountServiceAccountToken"] is False, name
    assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, (name, c["name"])
        assert sc["runAsUser"] == user and sc["runAsGroup"] == user, (name, c["name"])
        assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
        assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", (name, c["name"])
        assert image_name(c) in IMAGE_USERS, (name, c["image"])
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


# --- 4. the optional stores (extras/postgres.yaml, extras/redis.yaml, the patches) ------------

STORES_SECRET = "mcp-stores"
README = K8S / "README.md"
# (patch file, Deployment it patches, the docs that Deployment is in)
STORE_PATCHES = [
    ("backend-stores.patch.yaml", "backend", "base"),
    ("backend-canary-stores.patch.yaml", "backend-canary", "canary"),
]


def strategic_merge(target: dict, patch: dict) -> dict:
    """kubectl patch's strategic merge for what the store patches touch: maps merge
    recursively, containers merge by name, env entries by name (the patch's first)."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if key in ("containers", "env") and isinstance(value, list):
            current = {item["name"]: item for item in out.get(key, [])}
            merged = []
            for item in value:
                base = current.pop(item["name"], None)
                merged.append(strategic_merge(base, item) if base and key == "containers" else item)
            out[key] = merged + [i for i in out.get(key, []) if i["name"] in current]
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def patched(patch_file: str, deployment: str, docs: str) -> dict:
    (patch,) = load(K8S / "extras" / patch_file)
    return strategic_merge(find({"base": BASE, "canary": CANARY}[docs], "Deployment", deployment), patch)


@pytest.fixture(scope="module")
def backend_variables() -> set[str]:
    binary = TARGET / "release" / "backend"
    assert binary.exists(), f"{binary} is missing: run `cargo build --release --workspace --bins`"
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    names = set(re.findall(r"(?m)^  ([A-Z][A-Z0-9_]+)(?=\s|$)", out.stdout))
    assert {"AUTH_TOKENS", "DATABASE_URL", "REDIS_URL", "TOOLS"} <= names, names
    return names


def test_the_stores_are_extras_only():
    """Off by default: nothing of them in the base or the canary's kustomization."""
    for docs in (BASE, CANARY):
        assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component")
                    in ("postgres", "redis")]
        for d in deployments(docs):
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert not {"DATABASE_URL", "REDIS_URL"} & set(env(c)), d["metadata"]["name"]
    for directory in (K8S, K8S / "canary"):
        listed = " ".join(load(directory / "kustomization.yaml")[0]["resources"])
        assert "postgres" not in listed and "redis" not in listed and "patch" not in listed


@pytest.mark.parametrize("image", sorted(IMAGE_USERS))
def test_manifests_run_each_image_as_the_user_its_containerfile_declares(image):
    users = re.findall(r"(?m)^USER\s+(\S+)", CONTAINERFILES[image].read_text())
    assert users and users[-1] == f"{IMAGE_USERS[image]}:{IMAGE_USERS[image]}", (image, users)


@pytest.mark.parametrize("patch_file,deployment,docs", STORE_PATCHES)
def test_store_patches_merge_into_the_backends_and_validate(patch_file, deployment, docs,
                                                             backend_variables):
    dep = patched(patch_file, deployment, docs)
    validate_strictly(dep, f"{patch_file} merged into Deployment/{deployment}")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == deployment and c["image"], "the patch names the Deployment's container"
    by_name = {e["name"]: e for e in c["env"]}
    assert len(by_name) == len(c["env"]), "no variable twice"
    for var in ("DATABASE_URL", "REDIS_URL"):
        assert by_name[var]["valueFrom"]["secretKeyRef"] == {"name": STORES_SECRET, "key": var}
    assert {"todo", "memory"} <= set(by_name["TOOLS"]["value"].split(","))
    assert "openspec" in by_name["TOOLS"]["value"].split(","), "the OpenSpec tools stay"
    # What the base said is still there.
    before = find({"base": BASE, "canary": CANARY}[docs], "Deployment", deployment)
    (old,) = before["spec"]["template"]["spec"]["containers"]
    assert env(old).items() <= env(c).items()
    # Pool size x the HPA's maximum stays under PostgreSQL's default max_connections (100).
    hpa = [h for h in BASE if h["kind"] == "HorizontalPodAutoscaler"
           and h["spec"]["scaleTargetRef"]["name"] == deployment]
    replicas = hpa[0]["spec"]["maxReplicas"] if hpa else dep["spec"]["replicas"]
    assert int(by_name["DATABASE_POOL_SIZE"]["value"]) * replicas < 100


def test_the_two_store_patches_differ_only_in_the_container_name():
    def body(name: str) -> str:
        return "\n".join(l for l in (K8S / "extras" / name).read_text().splitlines()
                         if not l.startswith("#"))
    base, canary = (body(p) for p, _, _ in STORE_PATCHES)
    assert canary == base.replace("- name: backend\n", "- name: backend-canary\n", 1)
    assert canary != base


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("patch_file,deployment,docs", STORE_PATCHES)
def test_kubectl_patch_gives_the_same_result(patch_file, deployment, docs, tmp_path):
    """The merge above is what `kubectl patch` does (offline: --local)."""
    target = tmp_path / "deployment.yaml"
    target.write_text(yaml.safe_dump(find({"base": BASE, "canary": CANARY}[docs], "Deployment",
                                          deployment)))
    out = subprocess.run(["kubectl", "patch", "--local", "-f", str(target), "--patch-file",
                          str(K8S / "extras" / patch_file), "-o", "yaml"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == patched(patch_file, deployment, docs)


def test_every_backend_variable_is_one_backend_help_lists(backend_variables):
    """Variables of containers that run the backend (server, backup, restore), with the
    patches applied: a misspelt name would be silently ignored. Names the pod spec or a shell
    script itself uses ($(NAME), $NAME) are not the backend's."""
    docs = BASE + CANARY + EXTRAS + [patched(*p) for p in STORE_PATCHES]
    checked = 0
    for name, template in pod_templates(docs):
        for c in template["spec"]["containers"]:
            args = " ".join(c.get("args", []))
            if image_name(c) != "mcp-gateway" or not re.search(r"(^|\s)backend(\s|$)", args):
                continue
            for var in env(c):
                if re.search(rf"\$\(?\{{?{var}\b", args):
                    continue
                assert var in backend_variables, f"{name}: {var} is not in `backend --help`"
                checked += 1
    assert checked > 20


def test_postgres_statefulset_claim_probes_and_secret():
    sts = find(EXTRAS, "StatefulSet", "postgres")
    spec = sts["spec"]
    assert spec["replicas"] == 1
    svc = find(EXTRAS, "Service", spec["serviceName"])
    assert svc["spec"]["clusterIP"] == "None", "the StatefulSet's governing Service is headless"
    pod = spec["template"]["spec"]
    assert selects(svc["spec"]["selector"], spec["template"]["metadata"]["labels"])
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    (c,) = pod["containers"]
    assert c["args"] == ["postgres"]
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 5432 and container_port(c, port["targetPort"]) == 5432
    e = {x["name"]: x for x in c["env"]}
    assert e["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": STORES_SECRET,
                                                                   "key": "POSTGRES_PASSWORD"}
    # PGDATA a directory below the claim's mount, which the claim template provides
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    pgdata = Path(e["PGDATA"]["value"])
    assert mounts[str(pgdata.parent)] == claim["metadata"]["name"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    # the socket directory on an emptyDir (read-only root)
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in vols[mounts["/var/run/postgresql"]]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}


@pytest.mark.parametrize("kind,name,image", [("StatefulSet", "postgres", "mcp-postgres"),
                                             ("Deployment", "redis", "mcp-redis")])
def test_store_probes_are_the_images_healthcheck(kind, name, image):
    healthcheck = re.search(r'(?s)HEALTHCHECK .*?CMD (\[.*?\])', CONTAINERFILES[image].read_text())
    expected = yaml.safe_load(healthcheck[1])
    (c,) = find(EXTRAS, kind, name)["spec"]["template"]["spec"]["containers"]
    assert image_name(c) == image
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"] == expected, (name, probe)
    for kind_ in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind_])


def test_redis_deployment_is_one_pod_behind_its_service():
    dep = find(EXTRAS, "Deployment", "redis")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "redis-server"
    e = {x["name"]: x for x in c["env"]}
    assert e["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": STORES_SECRET,
                                                                "key": "REDIS_PASSWORD"}
    svc = find(EXTRAS, "Service", "redis")
    assert selects(svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 6379 and container_port(c, port["targetPort"]) == 6379
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/data" in mounts


def test_the_documented_urls_name_the_store_services():
    """README's `create secret` names hosts and ports: Services of extras/ with those ports."""
    block = re.search(rf"create secret generic {STORES_SECRET}((?:.*\\\n)*.*)", README.read_text())
    assert block, f"README.md: no `kubectl create secret generic {STORES_SECRET}`"
    text = block[1]
    urls = dict(re.findall(r'--from-literal=(DATABASE_URL|REDIS_URL)="([^"]+)"', text))
    assert set(urls) == {"DATABASE_URL", "REDIS_URL"}, urls
    for var, scheme, service in (("DATABASE_URL", "postgres", "postgres"),
                                 ("REDIS_URL", "redis", "redis")):
        m = re.fullmatch(rf"{scheme}://[^@]*@([a-z0-9-]+):(\d+)/\w+(\?.*)?", urls[var])
        assert m, urls[var]
        svc = find(EXTRAS, "Service", m[1])
        assert m[1] == service and int(m[2]) in [p["port"] for p in svc["spec"]["ports"]]
    keys = set(re.findall(r"--from-literal=([A-Z_]+)=", text))
    used = set()
    for _, template in pod_templates(EXTRAS + [patched(*p) for p in STORE_PATCHES]):
        for c in template["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == STORES_SECRET:
                    used.add(ref["key"])
    assert used == keys, "the Secret README creates holds exactly the keys the pods read"


def test_network_policies_admit_the_backend_pods_only():
    backends = [find(BASE, "Deployment", "backend"), find(CANARY, "Deployment", "backend-canary")]
    others = [find(BASE, "Deployment", "gateway")]

    def matches(selector: dict, labels: dict) -> bool:
        ok = selects(selector.get("matchLabels", {}), labels)
        for expr in selector.get("matchExpressions", []):
            assert expr["operator"] == "In"
            ok = ok and labels.get(expr["key"]) in expr["values"]
        return ok

    for name, kind in (("postgres", "StatefulSet"), ("redis", "Deployment")):
        policy = find(EXTRAS, "NetworkPolicy", name)["spec"]
        workload = find(EXTRAS, kind, name)
        assert selects(policy["podSelector"]["matchLabels"],
                       workload["spec"]["template"]["metadata"]["labels"])
        assert policy["policyTypes"] == ["Ingress"]
        (rule,) = policy["ingress"]
        (peer,) = rule["from"]
        for d in backends:
            assert matches(peer["podSelector"], d["spec"]["template"]["metadata"]["labels"]), name
        for d in others:
            assert not matches(peer["podSelector"], d["spec"]["template"]["metadata"]["labels"]), name
        (c,) = workload["spec"]["template"]["spec"]["containers"]
        (port,) = rule["ports"]
        container_port(c, port["port"])
