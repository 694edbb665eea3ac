#!/usr/bin/env python3
"""Checks the container and Kubernetes files without a container engine or an API server.

Usage: check_deploy.py [path/to/certrotd]   (needs PyYAML; .ci/check-deploy makes a venv)

- Dockerfile: multi-stage; the runtime stage is distroless (no shell, no compiler), runs no
  RUN step, has a numeric non-root USER and an exec-form ENTRYPOINT of /usr/bin/certrotd.
- deploy/kubernetes/*.yaml: every document parses and names apiVersion, kind and
  metadata.name; each Deployment has one replica, the Recreate strategy, and a certrotd
  container with a read-only root file system, no privilege escalation, every capability
  dropped, the metrics port, a /healthz readiness probe, its config, watch paths and state
  folder mounted (state writable, the rest read-only); user 0 only where the file says why.
- The certrotd.toml in each ConfigMap parses as TOML, listens for metrics on the container's
  port, and (with the binary given) is accepted by `certrotd check` (no exit 78).
"""

import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []


def fail(where, what):
    failures.append(f"{where}: {what}")


def dockerfile_stages(text):
    stages, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            current = {"from": rest.split()[0], "steps": []}
            stages.append(current)
        elif current is not None:
            current["steps"].append((word, rest.strip()))
    return stages


def check_dockerfile():
    where = "Dockerfile"
    stages = dockerfile_stages((ROOT / "Dockerfile").read_text())
    if len(stages) < 2:
        fail(where, "not multi-stage (build and runtime stages expected)")
        return
    final = stages[-1]
    if not final["from"].startswith("gcr.io/distroless/"):
        fail(where, f"runtime stage {final['from']} is not a distroless image")
    words = [w for w, _ in final["steps"]]
    if "RUN" in words:
        fail(where, "the runtime stage has a RUN step (it has no shell)")
    users = [r for w, r in final["steps"] if w == "USER"]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
        fail(where, f"runtime USER must be numeric and non-root, found {users}")
    entry = [r for w, r in final["steps"] if w == "ENTRYPOINT"]
    if entry != ['["/usr/bin/certrotd"]']:
        fail(where, f"ENTRYPOINT must be the exec form of /usr/bin/certrotd, found {entry}")
    if not any(w == "COPY" and "--from=" in r for w, r in final["steps"]):
        fail(where, "the runtime stage copies nothing from the build stage")


def certrotd_container(where, spec):
    containers = [c for c in spec.get("containers", []) if c.get("name") == "certrotd"]
    if len(containers) != 1:
        fail(where, "exactly one container named certrotd expected")
        return None
    return containers[0]


def effective(pod, container, key):
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.get("securityContext") or {}).get(key)


def check_security(where, path, pod, c, explained_root):
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(where, "readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(where, "allowPrivilegeEscalation must be false")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        fail(where, "capabilities.drop must be [ALL]")
    user = effective(pod, c, "runAsUser")
    if user is None:
        fail(where, "runAsUser must be set (the image's 65532, or 0 where explained)")
    elif user == 0 and not explained_root:
        fail(where, f"runs as user 0 but {path.name} does not explain why (a 'user 0' comment)")


def check_probes_and_ports(where, c, config):
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if "metrics" not in ports:
        fail(where, "no port named metrics")
    probe = (c.get("readinessProbe") or {}).get("httpGet") or {}
    if probe.get("path") != "/healthz" or probe.get("port") != "metrics":
        fail(where, "readinessProbe must GET /healthz on the metrics port")
    if c.get("livenessProbe") is None:
        fail(where, "no livenessProbe")
    listen = (config.get("metrics") or {}).get("listen", "")
    if ports.get("metrics") is not None and not listen.endswith(f":{ports['metrics']}"):
        fail(where, f"[metrics] listen {listen!r} is not on the metrics port {ports['metrics']}")


def mounted(c, path):
    """The mount whose mountPath holds `path`, or None."""
    best = None
    for m in c.get("volumeMounts", []):
        mp = m.get("mountPath", "").rstrip("/")
        if path == mp or path.startswith(mp + "/") or mp.startswith(path.rstrip("/") + "/"):
            if best is None or len(mp) > len(best.get("mountPath", "")):
                best = m
    return best


def check_mounts(where, c, config):
    if not mounted(c, "/etc/certrotd/certrotd.toml"):
        fail(where, "the configuration /etc/certrotd is not mounted")
    for watch in (config.get("watch") or {}).get("paths", []):
        m = mounted(c, watch)
        if m is None:
            fail(where, f"watch path {watch} is not mounted")
        elif m.get("readOnly") is not True:
            fail(where, f"watch path {watch} must be mounted read-only")
    state = (config.get("state") or {}).get("dir", "/var/lib/certrotd")
    m = mounted(c, state)
    if m is None or m.get("readOnly"):
        fail(where, f"state folder {state} must be a writable mount")


def check_config_with_binary(where, text, binary):
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        run = subprocess.run([binary, "check", "-c", f.name], capture_output=True, text=True,
                             timeout=60)
    if run.returncode == 78:
        fail(where, f"certrotd check refuses the configuration:\n{run.stdout}{run.stderr}")


def check_manifest(path, binary):
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    configs = {}
    for i, d in enumerate(docs):
        where = f"{path.relative_to(ROOT)} document {i + 1}"
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                fail(where, f"no {key}")
        if not (d.get("metadata") or {}).get("name"):
            fail(where, "no metadata.name")
        if d.get("kind") == "ConfigMap" and "certrotd.toml" in (d.get("data") or {}):
            toml_text = d["data"]["certrotd.toml"]
            configs[d["metadata"]["name"]] = tomllib.loads(toml_text)
            if binary:
                check_config_with_binary(where, toml_text, binary)
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if not deployments:
        fail(str(path.relative_to(ROOT)), "no Deployment")
    for d in deployments:
        check_deployment(path, d, configs, "user 0" in text)


def check_deployment(path, d, configs, explained_root):
    where = f"{path.relative_to(ROOT)} Deployment {d['metadata']['name']}"
    spec = d.get("spec") or {}
    if spec.get("replicas") != 1:
        fail(where, "replicas must be 1 (one certrotd per state folder)")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        fail(where, "strategy must be Recreate (never two at once)")
    pod = (spec.get("template") or {}).get("spec") or {}
    c = certrotd_container(where, pod)
    if c is None:
        return
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cm = [v["configMap"]["name"] for v in volumes.values() if "configMap" in v]
    config = next((configs[n] for n in cm if n in configs), None)
    if config is None:
        fail(where, "no ConfigMap with certrotd.toml in this file is mounted")
        return
    for m in c.get("volumeMounts", []):
        if m.get("name") not in volumes:
            fail(where, f"mount {m.get('name')} has no volume")
    check_security(where, path, pod, c, explained_root)
    check_probes_and_ports(where, c, config)
    check_mounts(where, c, config)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else None
    check_dockerfile()
    manifests = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
    if not manifests:
        fail("deploy/kubernetes", "no manifests")
    for path in manifests:
        try:
            check_manifest(path, binary)
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
            fail(str(path.relative_to(ROOT)), f"does not parse: {e}")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"ok: Dockerfile and {len(manifests)} manifest(s)")


if __name__ == "__main__":
    main()
