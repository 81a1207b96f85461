"""The deployment files agree with the server they deploy: ports, probes, token settings and paths of
deploy/Dockerfile and deploy/k8s/*.yaml against config.properties, handler/model-config*.yaml and
handler/metrics.yaml (images cannot be built here, so the agreement is what is checked), and the
readiness probe against a management API."""

from __future__ import annotations

import json
import re
import shlex
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy import entrypoint, probe  # noqa: E402
from handler import archive, tsctl  # noqa: E402

K8S = ROOT / "deploy" / "k8s"
PROPS = tsctl.read_properties(ROOT / "config.properties")


def port_of(api: str) -> int:
    return int(PROPS[f"{api}_address"].rsplit(":", 1)[1])


def dockerfile() -> dict[str, list[str]]:
    """Instruction → its arguments (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (ROOT / "deploy" / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.setdefault(op.upper(), []).append(rest.strip())
    return out


def docker_env() -> dict[str, str]:
    env = {}
    for args in dockerfile()["ENV"]:
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def container() -> dict:
    [c] = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def container_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"]}


def named_ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container()["ports"]}


def test_every_manifest_is_a_valid_kubernetes_object():
    docs = manifests()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor",
            "PersistentVolumeClaim", "ConfigMap"} <= set(docs)
    for doc in docs.values():
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_exposed_ports_are_those_of_config_properties_and_management_stays_inside():
    assert named_ports() == {"inference": port_of("inference"), "metrics": port_of("metrics")}
    exposed = {int(p) for args in dockerfile()["EXPOSE"] for p in args.split()}
    assert exposed == {port_of("inference"), port_of("metrics")}
    assert port_of("management") not in exposed
    service = manifests()["Service"]
    for port in service["spec"]["ports"]:
        assert named_ports()[port["targetPort"]] == port["port"]
    # the container config binds what is exposed, on the shipped ports, and keeps management on loopback
    props = entrypoint.container_properties({})
    assert props["inference_address"] == f"http://0.0.0.0:{port_of('inference')}"
    assert props["metrics_address"] == f"http://0.0.0.0:{port_of('metrics')}"
    assert props["management_address"] == PROPS["management_address"].strip()
    assert "127.0.0.1" in props["management_address"]


def test_prometheus_scrapes_the_metrics_port_where_the_g2u_metrics_are():
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_of("metrics")
    assert PROPS["metrics_mode"] == "prometheus" and PROPS["enable_metrics_api"] == "true"
    [endpoint] = manifests()["ServiceMonitor"]["spec"]["endpoints"]
    service_ports = {p["name"]: p["targetPort"] for p in manifests()["Service"]["spec"]["ports"]}
    assert named_ports()[service_ports[endpoint["port"]]] == port_of("metrics")
    assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"


def test_autoscaler_metric_is_served_by_the_adapter_from_declared_torchserve_counters():
    hpa = manifests()["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == manifests()["Deployment"]["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    rules = yaml.safe_load(manifests()["ConfigMap"]["data"]["values.yaml"])["rules"]["custom"]
    served = {r["name"]["as"]: r for r in rules}
    assert metric["pods"]["metric"]["name"] in served
    declared = {m["name"] for kind in yaml.safe_load((ROOT / "handler" / "metrics.yaml").read_text())["ts_metrics"]
                .values() for m in kind}
    query = served[metric["pods"]["metric"]["name"]]["metricsQuery"]
    used = set(re.findall(r"\b(ts_[a-z_]+)\{", query))
    assert used == {"ts_queue_latency_microseconds", "ts_inference_requests_total"} and used <= declared


def test_token_settings_agree_with_config_properties_and_the_open_pods_are_fenced():
    assert PROPS["disable_token_authorization"] == "false"
    # docker run keeps the shipped setting ...
    assert docker_env()["G2U_TOKEN_AUTH"] == "on"
    assert entrypoint.container_properties({"G2U_TOKEN_AUTH": "on"})["disable_token_authorization"] == "false"
    # ... the cluster turns it off (per-process random keys) and admits only the gateway and Prometheus
    assert container_env()["G2U_TOKEN_AUTH"] == "off"
    assert entrypoint.container_properties({"G2U_TOKEN_AUTH": "off"})["disable_token_authorization"] == "true"
    policy = manifests()["NetworkPolicy"]
    assert policy["spec"]["podSelector"] == manifests()["Deployment"]["spec"]["selector"]
    fenced = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert fenced == set(named_ports().values())
    assert all(rule["from"] for rule in policy["spec"]["ingress"])
    assert PROPS["enable_model_api"] == "false"


def test_a_token_setting_other_than_on_or_off_is_refused_by_name():
    with pytest.raises(SystemExit, match="G2U_TOKEN_AUTH"):
        entrypoint.container_properties({"G2U_TOKEN_AUTH": "maybe"})


def test_probes_use_the_module_that_checks_worker_status_and_wait_out_the_model_startup():
    c = container()
    for name in ("startupProbe", "readinessProbe"):
        assert c[name]["exec"]["command"] == ["python", "-m", "deploy.probe"]
    assert (ROOT / "deploy" / "probe.py").is_file()
    assert c["livenessProbe"]["tcpSocket"]["port"] in named_ports()
    model_cfg = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= model_cfg["startupTimeout"]
    # the probe reads the config the entrypoint renders and the key file TorchServe writes in its cwd
    assert probe.RENDERED == entrypoint.RENDERED
    assert probe.KEY_FILE.parent == tsctl.ROOT


def test_paths_agree_between_dockerfile_deployment_and_entrypoint():
    env, cenv = docker_env(), container_env()
    [workdir] = dockerfile()["WORKDIR"]
    assert workdir == "/srv/g2u"
    copied = {args.split()[0] for args in dockerfile()["COPY"]}
    assert {"g2u", "handler", "deploy", "config.properties", "pyproject.toml"} <= copied
    assert dockerfile()["ENTRYPOINT"] == ['["python", "-m", "deploy.entrypoint"]']
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    store = env["G2U_MODEL_STORE"]
    assert cenv["G2U_MODEL_STORE"] == store and store in mounts and not mounts[store].get("readOnly")
    volumes = json.loads(dockerfile()["VOLUME"][0])
    assert store in volumes
    checkpoints = next(v for v in volumes if v != store)
    assert mounts[checkpoints]["readOnly"] and cenv["G2U_CHECKPOINT"].startswith(checkpoints + "/")
    assert cenv["G2U_MODEL_NAME"] == env["G2U_MODEL_NAME"] == PROPS["load_models"].split("=")[0]
    # torch pinned first, to the version pyproject pins
    pins = [args for args in dockerfile()["RUN"] if "torch==" in args]
    pinned = re.search(r"torch==([\w.]+)", (ROOT / "pyproject.toml").read_text()).group(1)
    assert pins and f"torch=={pinned}" in pins[0]
    runs = dockerfile()["RUN"]
    assert runs.index(pins[0]) < next(i for i, r in enumerate(runs) if '".[serve' in r)


def test_gpu_requests_match_the_model_configs_devices():
    limits = container()["resources"]["limits"]
    single = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    assert int(limits["nvidia.com/gpu"]) == len(single["deviceIds"]) == single["minWorkers"]
    multi = archive.model_config("/models/checkpoints/x", None, {},
                                 ROOT / "handler" / "model-config.multi-gpu.yaml")
    assert multi["minWorkers"] == multi["maxWorkers"] == len(multi["deviceIds"]) > 1
    assert multi["handler"]["checkpoint"] == "/models/checkpoints/x"
    from g2u.handler_settings import HandlerSettings

    # the handler serves as the shipped config does (deadline, budget, memory fit...), on more GPUs
    same = {"checkpoint": None}
    assert (HandlerSettings.from_model_config(multi).model_copy(update=same)
            == HandlerSettings.from_model_config(single).model_copy(update=same))


class _Management(BaseHTTPRequestHandler):
    key = "k-123"
    status = "READY"

    def do_GET(self):  # noqa: N802
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"code": 400, "type": "InvalidKeyException"}')
            return
        body = json.dumps([{"modelName": "g2u", "workers": [{"id": "9000", "status": self.status}]}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def management(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Management)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "config.properties"
    config.write_text(f"management_address=http://127.0.0.1:{server.server_port}\n"
                      "disable_token_authorization=false\n")
    yield config
    server.shutdown()
    server.server_close()


def test_probe_is_ready_only_with_the_management_key_and_a_ready_worker(management, tmp_path):
    keys = tmp_path / "key_file.json"
    assert not probe.ready(management, keys)  # no key file yet: TorchServe still starting
    keys.write_text(json.dumps({"management": {"key": "wrong"}, "inference": {"key": "x"}}))
    assert not probe.ready(management, keys)
    keys.write_text(json.dumps({"management": {"key": _Management.key}, "inference": {"key": "x"}}))
    assert probe.ready(management, keys)
    _Management.status = "UNLOADING"
    try:
        assert not probe.ready(management, keys)
    finally:
        _Management.status = "READY"


@pytest.mark.e2e
def test_probe_against_a_real_torchserve_with_token_auth_on(tmp_path):
    server = tsctl.serve_demo(tmp_path / "ts")
    try:
        assert probe.ready(server.config, server.key_file)
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps({"management": {"key": "not-the-key"}}))
        assert not probe.ready(server.config, wrong)
        assert not probe.ready(server.config, server.key_file, model="no_such_model")
    finally:
        server.stop()


def test_the_multi_gpu_model_config_is_what_the_archive_packs(tmp_path, demo_root):
    import zipfile

    mar = archive.build_archive(tmp_path / "store", demo_dir=demo_root,
                                template=ROOT / "handler" / "model-config.multi-gpu.yaml")
    with zipfile.ZipFile(mar) as z:
        packed = yaml.safe_load(z.read("model-config.yaml"))
    assert packed["deviceIds"] == [0, 1, 2, 3] and packed["minWorkers"] == 4
    assert packed["handler"]["checkpoint"] == "checkpoint"


def test_the_container_refuses_to_start_without_an_archive_or_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="G2U_CHECKPOINT"):
        entrypoint.ensure_archive(tmp_path, "g2u", {})
    (tmp_path / "g2u.mar").write_bytes(b"PK")
    assert entrypoint.ensure_archive(tmp_path, "g2u", {}) == tmp_path / "g2u.mar"
