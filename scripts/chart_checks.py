#!/usr/bin/env python3
"""chart_checks.py: rules every rendered manifest of the chart must follow, beyond the API schema.

Reads `helm template` output files and checks: every workload container runs as non-root with a
read-only root filesystem, no privilege escalation and all capabilities dropped, has resources
and (for Deployments) liveness and readiness probes on a port it declares; every Deployment has a
terminationGracePeriodSeconds; HPAs and PDBs point at rendered Deployments; PDBs leave a pod to
evict; every Deployment's and Job's pods are selected by exactly one NetworkPolicy, which admits
only the ports its container declares (a Job none), each rule naming its ports, and the worker
roles' metrics port only from named peers; the PrometheusRule carries exactly the rules of
observability/alerts; the ServiceMonitor scrapes ports the Services have. Writes the manifests
kubernetes-validate can check (CRDs left out) to --out.

Usage: chart_checks.py --alerts FILE --out DIR RENDERED.yaml...
"""

import argparse
import os
import sys

import yaml

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)


def check_container(where, c, deployment):
    sc = c.get("securityContext") or {}
    need(sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem not read-only")
    need(sc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed")
    need((sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped")
    need((c.get("resources") or {}).get("requests"), f"{where}: no resource requests")
    if deployment:
        ports = {p["name"] for p in c.get("ports") or []}
        for probe in ("livenessProbe", "readinessProbe"):
            p = c.get(probe)
            need(p is not None, f"{where}: no {probe}")
            if p:
                need(p["httpGet"]["port"] in ports, f"{where}: {probe} port not declared")


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(policy, labels):
    """Whether a NetworkPolicy's podSelector selects pods with these labels (matchLabels only:
    the chart writes no matchExpressions)."""
    sel = policy["spec"]["podSelector"]
    return not sel.get("matchExpressions") and all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())


def check_policy(where, policy, workload):
    """The one NetworkPolicy of a workload's pods admits exactly the ports its container
    declares (the Job's: none), every rule naming its ports (a rule without ports admits all of
    them), and a worker role's metrics port only from named peers."""
    spec = policy["spec"]
    need("Ingress" in spec.get("policyTypes", []), f"{where}: NetworkPolicy does not restrict ingress")
    declared = {(p["containerPort"], p.get("protocol", "TCP"))
                for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
    admitted = set()
    component = pod_labels(workload).get("app.kubernetes.io/component")
    for rule in spec.get("ingress") or []:
        need(rule.get("ports"), f"{where}: an ingress rule without ports admits every port")
        admitted |= {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports") or []}
        if component not in ("edge", "all"):
            need(rule.get("from"), f"{where}: {component}'s port admitted from anywhere")
    need(admitted == declared, f"{where}: NetworkPolicy admits {sorted(admitted)}, the container declares {sorted(declared)}")


def check_file(path, alerts, out_dir):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    services = [d for d in docs if d["kind"] == "Service"]
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        where = f"{os.path.basename(path)} {kind}/{name}"
        if kind in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            psc = pod.get("securityContext") or {}
            need(psc.get("runAsNonRoot") is True, f"{where}: may run as root")
            need(pod.get("automountServiceAccountToken") is False, f"{where}: mounts an API token")
            if kind == "Deployment":
                need(pod.get("terminationGracePeriodSeconds"), f"{where}: no terminationGracePeriodSeconds")
            for c in pod["containers"]:
                check_container(where, c, kind == "Deployment")
        if kind == "HorizontalPodAutoscaler":
            need(("Deployment", d["spec"]["scaleTargetRef"]["name"]) in names, f"{where}: no such Deployment")
        if kind == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            targets = [x for x in docs if x["kind"] == "Deployment" and x["spec"]["selector"]["matchLabels"] == sel]
            need(targets, f"{where}: selects no Deployment")
            # A budget that keeps every pod (at the HPA's minimum, where it rests) blocks drains.
            most = {x["spec"]["scaleTargetRef"]["name"]: x["spec"].get("minReplicas", 1)
                    for x in docs if x["kind"] == "HorizontalPodAutoscaler"}
            for x in targets:
                pods = most.get(x["metadata"]["name"], x["spec"].get("replicas", 1))
                keep = str(d["spec"].get("minAvailable", 0))
                keep = -(-int(keep[:-1]) * pods // 100) if keep.endswith("%") else int(keep)
                need(pods == 0 or keep < pods, f"{where}: keeps {keep} of {pods} pods: no node drain can evict one")
        if kind == "NetworkPolicy":
            need((d["spec"]["podSelector"].get("matchLabels") or {}).get("app.kubernetes.io/component"),
                 f"{where}: selects pods of every component")
            need(any(x["kind"] in ("Deployment", "Job") and selects(d, pod_labels(x)) for x in docs),
                 f"{where}: selects no rendered workload's pods")
        if kind in ("Deployment", "Job"):
            policies = [p for p in docs if p["kind"] == "NetworkPolicy" and selects(p, pod_labels(d))]
            need(len(policies) == 1, f"{where}: its pods are selected by {len(policies)} NetworkPolicies, expected 1")
            if len(policies) == 1:
                check_policy(f"{where} NetworkPolicy/{policies[0]['metadata']['name']}", policies[0], d)
        if kind == "PrometheusRule":
            need(d["spec"] == alerts, f"{where}: rules differ from observability/alerts")
        if kind == "ServiceMonitor":
            ports = {p["name"] for s in services for p in s["spec"]["ports"]}
            for ep in d["spec"]["endpoints"]:
                need(ep["port"] in ports, f"{where}: no Service has port {ep['port']}")
            sel = d["spec"]["selector"]["matchLabels"]
            need(all(all(s["metadata"]["labels"].get(k) == v for k, v in sel.items()) for s in services),
                 f"{where}: does not select every Service")
            # The alerts read the role and keep releases apart by these target labels.
            for ep in d["spec"]["endpoints"]:
                set_labels = {r.get("targetLabel"): r.get("sourceLabels") for r in ep.get("relabelings") or []}
                need(set_labels.get("mesh_role") == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                     f"{where}: endpoint {ep['port']} does not set mesh_role from the pod's component")
                need(set_labels.get("mesh_release") == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                     f"{where}: endpoint {ep['port']} does not set mesh_release from the pod's release")
        if kind == "ConfigMap" and (d["metadata"].get("labels") or {}).get("grafana_dashboard"):
            for body in d["data"].values():
                need(body.strip().startswith("{"), f"{where}: dashboard is not JSON")
    kept = [d for d in docs if d["kind"] not in CRD_KINDS]
    with open(os.path.join(out_dir, os.path.basename(path)), "w") as f:
        yaml.safe_dump_all(kept, f)
    return len(docs), len(docs) - len(kept)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    with open(args.alerts) as f:
        alerts = yaml.safe_load(f)
    for path in args.files:
        total, crds = check_file(path, alerts, args.out)
        print(f"chart checks: {os.path.basename(path)}: {total} manifests ({crds} CRD objects left to promtool/these checks)")
    if problems:
        for p in problems:
            print(f"chart checks: FAIL: {p}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
