"""examples/kubernetes/: the manifests parse, and the fields the product relies on agree with
each other and with the node config the ConfigMap carries (loaded by the real config loader):
the command, the config mount, the git-sync link that is `desiredState`, host paths for
`stateDir` and `allowedRoots`, host networking and the ports of `listen`, probes against
`/healthz` on the API port, and the training pod's `syncbit-reconcile wait` init container."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import pytest
from ruamel.yaml import YAML

from reconciler.adapters.config import load_config
from reconciler.app.cli import build_parser

K8S = Path(__file__).resolve().parent.parent / "examples" / "kubernetes"


def docs(name: str) -> list[dict]:
    return [d for d in YAML(typ="safe").load_all((K8S / name).read_text()) if d]


def kind(name: str, k: str) -> dict:
    (doc,) = [d for d in docs(name) if d["kind"] == k]
    return doc


def mounts(container: dict, volumes: dict[str, dict]) -> dict[str, dict]:
    """mountPath -> {volume, readOnly}."""
    out = {}
    for m in container.get("volumeMounts", []):
        assert m["name"] in volumes, m
        out[m["mountPath"]] = {"volume": volumes[m["name"]], "readOnly": m.get("readOnly", False)}
    return out


def mounted_at(path: str, ms: dict[str, dict]) -> tuple[str, dict]:
    """The mount holding `path` (the longest mountPath that is a prefix of it)."""
    p = PurePosixPath(path)
    best = max((m for m in ms if p == PurePosixPath(m) or PurePosixPath(m) in p.parents),
               key=len, default=None)
    assert best is not None, f"{path} is on no volume"
    return best, ms[best]


@pytest.fixture
def node_config(tmp_path):
    cm = kind("daemonset.yaml", "ConfigMap")
    text = cm["data"]["config.yaml"]
    p = tmp_path / "config.yaml"
    p.write_text(text.replace("__NODE_NAME__", "gpu-node-7"))
    return load_config(p)


def test_configmap_is_the_documented_config_and_loads(node_config, tmp_path) -> None:
    cm_text = kind("daemonset.yaml", "ConfigMap")["data"]["config.yaml"]
    standalone = YAML(typ="safe").load((K8S / "config.yaml").read_text())
    assert YAML(typ="safe").load(cm_text) == standalone
    assert node_config.node == "gpu-node-7"


def test_daemonset_runs_the_daemon_with_what_it_relies_on(node_config) -> None:
    ds = kind("daemonset.yaml", "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    volumes = {v["name"]: v for v in spec["volumes"]}
    containers = {c["name"]: c for c in spec["containers"]}
    rec, sync = containers["reconcile"], containers["git-sync"]

    # the command: the daemon (no --once) with a config file that is mounted
    argv = [*rec["command"], *rec.get("args", [])]
    assert argv[0] == "syncbit-reconcile"
    args = build_parser().parse_args(argv[1:])
    assert args.command is None and not args.once
    rm = mounts(rec, volumes)
    cfg_mount, cfg_vol = mounted_at(args.config, rm)
    # ...rendered by the init container from the ConfigMap, with the node's name
    (init,) = spec["initContainers"]
    im = mounts(init, volumes)
    assert cfg_vol["volume"]["name"] in {m["volume"]["name"] for m in im.values()}
    assert "__NODE_NAME__" in " ".join(init["command"]) and args.config in " ".join(init["command"])
    assert init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert any(m["volume"].get("configMap", {}).get("name") == "syncbit-config"
               for m in im.values())

    # desiredState: git-sync's --root/--link on a volume shared with the daemon
    sync_args = dict(a.removeprefix("--").split("=", 1) for a in sync["args"])
    assert str(node_config.desired_state) == f"{sync_args['root']}/{sync_args['link']}"
    path, m = mounted_at(str(node_config.desired_state), rm)
    sm = mounts(sync, volumes)
    assert sm[sync_args["root"]]["volume"] is m["volume"] and not sm[sync_args["root"]]["readOnly"]
    assert sync_args["repo"] and sync_args["ref"]

    # stateDir, statusFile, metricsFile and every allowedRoots entry: writable host paths
    for p in (node_config.state_dir, node_config.status_file, node_config.metrics_file,
              *node_config.allowed_roots):
        _, m = mounted_at(str(p), rm)
        assert "hostPath" in m["volume"] and not m["readOnly"], p

    # ports: listen.peer and listen.api, on the host; probes on /healthz at the API port
    ports = {p["name"]: p for p in rec["ports"]}
    api_port = int(str(node_config.listen_api).rsplit(":", 1)[1])
    peer_port = int(str(node_config.listen_peer).rsplit(":", 1)[1])
    assert ports["api"]["containerPort"] == ports["api"]["hostPort"] == api_port
    assert ports["peer"]["containerPort"] == ports["peer"]["hostPort"] == peer_port
    assert str(node_config.listen_api).startswith("0.0.0.0:")  # the kubelet probes the node IP
    for probe in ("livenessProbe", "startupProbe"):
        get = rec[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in ("api", api_port), probe
    assert "readinessProbe" not in rec  # data readiness is `wait`, never /healthz
    assert spec["terminationGracePeriodSeconds"] >= 30


def test_training_pod_waits_for_its_dataset_with_the_nodes_paths(node_config) -> None:
    pod = kind("training-pod.yaml", "Pod")
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (init,) = spec["initContainers"]
    script = " ".join(init["args"])
    wait = shlex.split(script.split("exec ", 1)[1])
    assert wait[:2] == ["syncbit-reconcile", "wait"]
    args = build_parser().parse_args(wait[1:])
    assert args.command == "wait" and args.dataset == "llama-70b" and args.timeout > 0
    im = mounts(init, volumes)
    # it reads the same state repo and status file as the daemon: the same host paths
    ds_spec = kind("daemonset.yaml", "DaemonSet")["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in ds_spec["volumes"] if "hostPath" in v}
    ds_mounts = mounts({c["name"]: c for c in ds_spec["containers"]}["reconcile"],
                       {v["name"]: v for v in ds_spec["volumes"]})
    for p in (node_config.desired_state, node_config.status_file):
        ds_path, ds_m = mounted_at(str(p), ds_mounts)
        pod_path, pod_m = mounted_at(str(p), im)
        assert ds_path == pod_path and pod_m["readOnly"]
        assert pod_m["volume"]["hostPath"]["path"] == host[ds_m["volume"]["name"]]
    assert init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # the trainer sees /data and the store it links into, read-only
    tm = mounts(spec["containers"][0], volumes)
    for p in ("/data/llama-70b", str(node_config.state_dir)):
        _, m = mounted_at(p, tm)
        assert m["readOnly"] and "hostPath" in m["volume"]
