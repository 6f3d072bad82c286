#!/usr/bin/env python3
"""Checks of deploy/ that need a YAML parser; scripts/check-deploy runs them with PyYAML from its
tools venv. Two commands:

  check_deploy.py split OUT_DIR NAME=RENDERED.yaml ...
      Writes OUT_DIR/NAME.k8s.yaml with every rendered object kubernetes-validate has a schema
      for, and names the custom resources it leaves out (ServiceMonitor, PrometheusRule: the
      Prometheus Operator's CRDs, checked here instead). Any other kind goes to the validator,
      which fails on kinds it has no schema for (scripts/check-deploy turns its warning into an
      error).

  check_deploy.py check OUT_DIR NAME=RENDERED.yaml ...
      What a schema cannot see: the PrometheusRule equals deploy/prometheus/rules.yml, the
      dashboard ConfigMap equals deploy/grafana/reelflow.json, security context, probes,
      resources, grace period vs shutdown grace, the artifact store (a bucket with scratch on a
      writable volume, or a folder on a PVC that is ReadWriteMany past one replica), config keys and
      REELFLOW_* variables that reelflow knows, secrets only by reference, metric names that
      reelflow declares, and a firing and a quiet unit test for every alert. Writes
      OUT_DIR/dashboard_rules.yml (the dashboard's queries as recording rules, for promtool).

Exits 1 listing every problem found.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules.yml"
RULES_TEST = ROOT / "deploy/prometheus/rules_test.yml"
DASHBOARD = ROOT / "deploy/grafana/reelflow.json"
DOCKERFILE = ROOT / "deploy/Dockerfile"
DEFAULTS = ROOT / "config/default.toml"
# Where reelflow declares every metric it exports (the names are string literals there).
METRICS_SOURCE = ROOT / "crates/reelflow/src/metrics.rs"

# Custom resources of the Prometheus Operator: no schema in kubernetes-validate.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
# Variables reelflow reads besides REELFLOW_<SECTION>_<KEY> (see crates/reelflow/src/main.rs, config.rs).
EXTRA_ENV = {"REELFLOW_CONFIG", "REELFLOW_LOG", "REELFLOW_LOG_FORMAT", "REELFLOW_LISTEN", "REELFLOW_ADMIN_TOKEN"}
SECRET_ENV = {
    "DATABASE_URL",
    "REELFLOW_DATABASE_URL",
    "REELFLOW_ADMIN_TOKEN",
    "REELFLOW_ENGINE_ADMIN_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}

problems: list[str] = []


def problem(where: str, msg: str) -> None:
    problems.append(f"{where}: {msg}")


def load_rendered(args: list[str]) -> dict[str, list[dict]]:
    out = {}
    for a in args:
        name, _, path = a.partition("=")
        out[name] = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    return out


def ident(d: dict) -> str:
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"


def split(out_dir: Path, variants: dict[str, list[dict]]) -> None:
    for name, docs in variants.items():
        keep, skipped = [], []
        for d in docs:
            key = (d.get("apiVersion"), d.get("kind"))
            if key in CRDS:
                skipped.append(ident(d))
            else:
                keep.append(d)
        (out_dir / f"{name}.k8s.yaml").write_text(yaml.safe_dump_all(keep, sort_keys=False))
        print(f"{name}: {len(keep)} objects for kubernetes-validate; custom resources checked here instead: {', '.join(skipped)}")


# ---------------------------------------------------------------------------------------------

def config_keys() -> dict[str, object]:
    """Every leaf key of config/default.toml as 'section.key' -> default value."""
    keys = {}

    def walk(t: dict, prefix: str) -> None:
        for k, v in t.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, path + ".")
            else:
                keys[path] = v

    walk(tomllib.loads(DEFAULTS.read_text()), "")
    return keys


def env_name(key: str) -> str:
    return "REELFLOW_" + key.replace(".", "_").upper()


def check_toml(where: str, text: str, keys: dict[str, object]) -> dict:
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(where, f"reelflow.toml does not parse: {e}")
        return {}

    def walk(t: dict, prefix: str) -> None:
        for k, v in t.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, path + ".")
            elif path not in keys:
                problem(where, f"reelflow.toml: unknown key {path} (reelflow refuses to start)")
            elif type(v) is not type(keys[path]):
                problem(where, f"reelflow.toml: {path} is a {type(v).__name__}, expected {type(keys[path]).__name__}")

    walk(cfg, "")
    if cfg.get("database", {}).get("url") or cfg.get("engine", {}).get("admin_token"):
        problem(where, "reelflow.toml holds a secret (database.url or engine.admin_token): use the Secret")
    return cfg


def dockerfile_uid() -> int | None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), re.M)
    if not users:
        problem("deploy/Dockerfile", "no USER: the image would run as root")
        return None
    uid = users[-1].split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        problem("deploy/Dockerfile", f"USER {users[-1]} must be a numeric non-root uid (runAsNonRoot checks it)")
        return None
    return int(uid)


def check_variant(name: str, docs: list[dict], keys: dict[str, object], uid: int | None) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    # An overlay for a cluster without the Prometheus Operator may drop its two objects.
    required = ["Deployment", "Service", "ConfigMap"]
    if name == "base":
        required += ["ServiceMonitor", "PrometheusRule"]
    for kind in required:
        if kind not in by_kind:
            problem(name, f"no {kind} rendered")
    if "Secret" in by_kind:
        problem(name, "renders a Secret: secrets are created outside the manifests (base/secret.example.yaml)")
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        problem(name, f"expected one Deployment, found {len(deployments)}")
        return
    dep = deployments[0]
    w = f"{name}: {ident(dep)}"
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    containers = pod.get("containers", [])
    c = next((c for c in containers if c["name"] == "reelflow"), None)
    if c is None:
        problem(w, "no container named reelflow")
        return
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    pvcs = {d["metadata"]["name"]: d for d in by_kind.get("PersistentVolumeClaim", [])}

    # Security context: pod level and container level together.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})

    def sc(key):
        return csc.get(key, psc.get(key))

    if sc("runAsNonRoot") is not True:
        problem(w, "runAsNonRoot must be true")
    run_as = sc("runAsUser")
    if not isinstance(run_as, int) or run_as == 0:
        problem(w, "runAsUser must be a numeric non-root uid")
    elif uid is not None and run_as != uid:
        problem(w, f"runAsUser {run_as} differs from the image's USER {uid}")
    if csc.get("allowPrivilegeEscalation") is not False:
        problem(w, "allowPrivilegeEscalation must be false")
    if csc.get("readOnlyRootFilesystem") is not True:
        problem(w, "readOnlyRootFilesystem must be true")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []) or csc.get("capabilities", {}).get("add"):
        problem(w, "capabilities must drop ALL and add none")
    if (sc("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(w, "seccompProfile must be RuntimeDefault")
    if csc.get("privileged"):
        problem(w, "privileged container")

    # Probes on the HTTP port.
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path:
            problem(w, f"{probe} must GET {path}")
        port = get.get("port")
        if port not in ports and port not in ports.values():
            problem(w, f"{probe} port {port!r} is not a container port")

    # Resources.
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(part, {}):
                problem(w, f"resources.{part}.{r} missing")

    # Environment: known names, secrets by reference only.
    env = {}
    for e in c.get("env", []):
        n = e["name"]
        env[n] = e
        if n.startswith("REELFLOW_") and n not in EXTRA_ENV and n not in {env_name(k) for k in keys}:
            problem(w, f"env {n} is no configuration key of reelflow (config/default.toml): a typo is silently ignored")
        if n in SECRET_ENV and "value" in e:
            problem(w, f"env {n} has a literal value: take it from a Secret (valueFrom.secretKeyRef)")
    if "DATABASE_URL" not in env:
        problem(w, "DATABASE_URL is not set (without it reelflow looks for a local PostgreSQL)")
    if c.get("envFrom"):
        problem(w, "envFrom: list variables one by one so this check sees them")

    # The configuration file and its keys.
    mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cfg = {}
    cfg_path = env.get("REELFLOW_CONFIG", {}).get("value")
    if cfg_path:
        mdir, _, fname = cfg_path.rpartition("/")
        m = mounts.get(mdir)
        vol = volumes.get(m["name"]) if m else None
        cm = configmaps.get((vol or {}).get("configMap", {}).get("name"))
        if not cm or fname not in cm.get("data", {}):
            problem(w, f"REELFLOW_CONFIG={cfg_path} is not a file of a mounted ConfigMap")
        else:
            cfg = check_toml(f"{w} ConfigMap {cm['metadata']['name']}", cm["data"][fname], keys)

    def setting(key: str):
        e = env.get(env_name(key))
        if e is not None and "value" in e:
            return e["value"]
        node = cfg
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if node != {} else keys[key]

    # Grace: Kubernetes must wait longer than reelflow's own shutdown grace.
    grace = int(setting("engine.shutdown_grace_secs"))
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    if tgp < grace + 20:
        problem(w, f"terminationGracePeriodSeconds {tgp} < engine.shutdown_grace_secs {grace} + 20 s margin")

    # Writable volumes. The artifact store: a bucket (artifacts.url s3://...) with this pod's
    # scratch on a writable volume of its own, or a folder on a PVC (ReadWriteMany when
    # replicas > 1); /tmp.
    def volume_for(path: str):
        best = None
        for mp, m in mounts.items():
            if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best[0])):
                best = (mp, m)
        return (best[1], volumes.get(best[1]["name"])) if best else (None, None)

    def writable(path: str, what: str):
        m, vol = volume_for(path)
        if not path.startswith("/") or vol is None or m.get("readOnly"):
            problem(w, f"{what} {path} is not on a writable volume")
            return None
        return vol

    url = str(setting("artifacts.url")).strip()
    artifacts_dir = str(setting("artifacts_dir"))
    scratch = str(setting("artifacts.scratch_dir")) or artifacts_dir + "/.scratch"
    writable(scratch, "artifacts.scratch_dir")
    if url.lower().startswith("s3://"):
        if not url[5:].split("/")[0]:
            problem(w, f"artifacts.url {url!r} names no bucket")
        print(f"{name}: artifact store {url}, scratch {scratch} on {volume_for(scratch)[0]['name'] if volume_for(scratch)[0] else '-'}, {spec.get('replicas', 1)} replicas")
    else:
        if "://" in url and not url.lower().startswith("file:///"):
            problem(w, f"artifacts.url {url!r}: expected s3://bucket/prefix, file:///path or a path")
        folder = url[len("file://"):] if url.lower().startswith("file://") else (url or artifacts_dir)
        vol = writable(folder, "the artifact folder")
        if vol is None:
            pass
        elif "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            pvc = pvcs.get(claim)
            if pvc is None:
                problem(w, f"artifacts claim {claim} is not rendered")
            elif spec.get("replicas", 1) > 1 and "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
                problem(w, f"{spec['replicas']} replicas share artifacts: PVC {claim} must be ReadWriteMany (or use a bucket, or run 1 replica)")
            elif "ReadWriteOnce" in pvc["spec"].get("accessModes", []) and (spec.get("strategy") or {}).get("type") != "Recreate":
                problem(w, f"PVC {claim} is ReadWriteOnce: the Deployment strategy must be Recreate (a new pod cannot mount it while the old one runs)")
        elif spec.get("replicas", 1) > 1:
            problem(w, f"the artifact folder {folder} is not on a shared PersistentVolumeClaim but replicas > 1: use a bucket (artifacts.url)")
        else:
            problem(w, f"the artifact folder {folder} is not on a PersistentVolumeClaim: it is lost with the pod")
        print(f"{name}: artifact store the folder {folder}, {spec.get('replicas', 1)} replica(s)")
    m, vol = volume_for("/tmp")
    if vol is None or "emptyDir" not in vol:
        problem(w, "/tmp is not an emptyDir (the root filesystem is read-only)")

    # Service -> pods, ServiceMonitor -> Service port /metrics.
    svc = next((s for s in by_kind.get("Service", []) if s["metadata"]["name"] == "reelflow"), None)
    if svc:
        sel = svc["spec"].get("selector", {})
        if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
            problem(name, "Service reelflow does not select the Deployment's pods")
        for sm in by_kind.get("ServiceMonitor", []):
            want = sm["spec"].get("selector", {}).get("matchLabels", {})
            have = svc["metadata"].get("labels", {})
            if not want or any(have.get(k) != v for k, v in want.items()):
                problem(name, f"{ident(sm)} does not select Service reelflow")
            svc_ports = {p.get("name") for p in svc["spec"]["ports"]}
            for ep in sm["spec"].get("endpoints", []):
                if ep.get("port") not in svc_ports:
                    problem(name, f"{ident(sm)} endpoint port {ep.get('port')!r} is not a Service port")
                if ep.get("path", "/metrics") != "/metrics":
                    problem(name, f"{ident(sm)} scrapes {ep.get('path')}, not /metrics")

    # The PrometheusRule is rules.yml.
    rules = yaml.safe_load(RULES.read_text())
    for pr in by_kind.get("PrometheusRule", []):
        if pr.get("spec") != rules:
            problem(name, f"{ident(pr)} spec differs from deploy/prometheus/rules.yml (run scripts/gen-prometheusrule)")

    # The dashboard ConfigMap is reelflow.json.
    dash = [d for d in by_kind.get("ConfigMap", []) if "reelflow.json" in d.get("data", {})]
    if len(dash) != 1:
        problem(name, "no (single) ConfigMap carrying reelflow.json")
    else:
        d = dash[0]
        if d["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            problem(name, f"{ident(d)} lacks the label grafana_dashboard: \"1\"")
        if d["data"]["reelflow.json"] != DASHBOARD.read_text():
            problem(name, f"{ident(d)} differs from deploy/grafana/reelflow.json")

    # Image: pinned.
    image = c.get("image", "")
    if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
        problem(w, f"image {image!r} is not pinned to a tag or digest")

    # Overlays must label the monitoring objects for the Operator's selectors.
    if name.startswith("overlays_"):
        for kind in ("ServiceMonitor", "PrometheusRule"):
            for o in by_kind.get(kind, []):
                labels = o["metadata"].get("labels", {})
                if name == "overlays_example" and "release" not in labels:
                    problem(name, f"{ident(o)} has no release label")
                print(f"{name}: {ident(o)} labels {labels}")


def promql_exprs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rules = yaml.safe_load(RULES.read_text())
    rule_exprs = [(r.get("alert") or r.get("record"), r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    dash_exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    dash_exprs.append((f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return rule_exprs, dash_exprs


def check_metrics_and_dashboard(out_dir: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    if not dash.get("uid") or not dash.get("title"):
        problem("deploy/grafana/reelflow.json", "uid and title are required")
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p.get("id"))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    if len(ids) != len(set(ids)):
        problem("deploy/grafana/reelflow.json", "panel ids are not unique")

    rule_exprs, dash_exprs = promql_exprs()
    # The dashboard's queries as recording rules, with Grafana's variables filled in, so that
    # promtool parses them.
    subst = {"$__rate_interval": "5m", "$__range": "1d", "$__interval": "1m", "$dag": ".*", "$instance": ".*"}
    recs = []
    for i, (where, e) in enumerate(dash_exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        if "$" in e:
            problem("deploy/grafana/reelflow.json", f"{where}: unknown variable in {e!r}")
        recs.append({"record": f"dashboard:query:{i}", "expr": e})
    (out_dir / "dashboard_rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recs}]}))

    if not METRICS_SOURCE.is_file():
        problem("scripts/check_deploy.py", f"{METRICS_SOURCE} is missing: point METRICS_SOURCE at the file declaring the metrics")
        return
    declared = set(re.findall(r'"((?:reelflow|process)_[a-z0-9_]+)"', METRICS_SOURCE.read_text()))
    names = re.compile(r"\b((?:reelflow|process)_[a-z0-9_]+)\b")
    used, undeclared = 0, 0
    for where, e in [(f"rules.yml {a}", e) for a, e in rule_exprs] + [(f"reelflow.json {w}", e) for w, e in dash_exprs]:
        for m in names.findall(e):
            used += 1
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m not in declared and base not in declared:
                undeclared += 1
                problem(where, f"metric {m} is not declared in {METRICS_SOURCE.relative_to(ROOT)}")
    print(f"metric names: {used} uses in {len(rule_exprs)} rules and {len(dash_exprs)} dashboard queries, "
          f"{undeclared} of them not among the {len(declared)} declared")


def check_rule_tests() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    tests = yaml.safe_load(RULES_TEST.read_text())
    firing, quiet = set(), set()
    for t in tests.get("tests", []):
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
    for a in alerts:
        if a not in firing:
            problem("deploy/prometheus/rules_test.yml", f"no test where {a} fires")
        if a not in quiet:
            problem("deploy/prometheus/rules_test.yml", f"no test where {a} does not fire")
    print(f"rule tests: each of {len(alerts)} alerts is tested firing and not firing")


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[1] not in ("split", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(sys.argv[2])
    variants = load_rendered(sys.argv[3:])
    if sys.argv[1] == "split":
        split(out_dir, variants)
    else:
        keys = config_keys()
        uid = dockerfile_uid()
        for name, docs in variants.items():
            check_variant(name, docs, keys, uid)
        check_metrics_and_dashboard(out_dir)
        check_rule_tests()
    for p in problems:
        print(f"check-deploy: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
