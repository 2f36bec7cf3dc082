#!/usr/bin/env python3
"""bench_check.py: checks the JSON lines of a `loadgen all` run (scripts/bench-smoke.sh).

Every figure issue #16 asks for must be there: each scenario once (the fan-out once per group;
the raw message path twice when its first run missed the latency target or fell behind its
rate, never otherwise),
none failed, every integrity count zero, each target with its verdict, each ratio beside a
measured limit, the ceiling rows of throughput, reads, login and latency (the last from a
message's raw path at the same rate and from the machine's speed), latency's messages split by
the machine's speed when they were accepted, and the CPU each watched process used and the
machine's CPU speed beside it. Problem lines fail the check, except the two a slow debug build may cause on a
busy machine (a paced sender falling behind, the mesh still busy after the sockets closed).
The figures themselves are not judged: a debug build's numbers mean nothing.

Usage: bench_check.py --members 40,120 --sizes 100,300 --edges 3 [--peer] [--durable] [--newest] RESULTS.json
(--peer: the run had the Synapse peer, whose two scenarios and CPU are then expected too;
--durable: the run used a release build and a Postgres with fsync and synchronous_commit on,
the conditions the targets are set in; --newest: check only the newest `loadgen all` run of
a file holding many, such as bench/results.json.)
"""

import argparse
import json
import sys

# Problems of speed, not of correctness: a debug mesh on a shared machine may fall behind.
SPEED_PROBLEMS = (
    "the senders reached only",
    "the mesh was still busy",
)
PROCESSES = {"mesh", "nats-server", "postgres", "loadgen"}
TARGETED = {
    "throughput": 1,
    "overload": 3,
    "latency": 1,
    "reads": 2,
    "login": 1,
    "connections": 1,
}
VERSUS = {
    "throughput": {"raw JetStream publish+ack/s", "raw Postgres rows/s"},
    "reads": {"raw NATS request/reply/s", "edge HTTP answers/s without the bus"},
    "login": {"raw argon2id hashes/s"},
    "peer_throughput": {"Synapse persisted msg/s"},
}
CEILINGS = ("throughput", "reads", "login", "latency")
RAW = (
    "raw_jetstream",
    "raw_postgres",
    "raw_request_reply",
    "raw_edge_http",
    "raw_read_parts",
    "raw_argon2id",
    "raw_message_path",
)

problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)


def check_common(name, line, processes):
    results = line.get("results") or {}
    need("error" not in results, f"{name} failed: {results.get('error')}")
    for problem in line.get("problems") or []:
        need(problem.startswith(SPEED_PROBLEMS), f"{name}: {problem}")
    cpu = line.get("cpu") or {}
    seen = {p.get("process") for p in cpu.get("processes") or []}
    need(processes <= seen, f"{name}: CPU of {sorted(processes - seen)} not recorded")
    need(isinstance(cpu.get("busy_share"), (int, float)), f"{name}: no machine CPU busy share")
    need(
        isinstance((cpu.get("speed") or {}).get("windows"), int),
        f"{name}: the machine's CPU speed was not sampled",
    )
    for key, count in (results.get("integrity") or {}).items():
        need(count == 0, f"{name}: integrity {key} = {count}")


def check_targets(name, line):
    targets = line.get("targets") or []
    need(len(targets) >= TARGETED.get(name, 0), f"{name}: {len(targets)} target verdicts")
    for target in targets:
        need(isinstance(target.get("met"), bool), f"{name}: target without a verdict: {target}")
    limits = {v.get("limit_name") for v in line.get("versus") or [] if (v.get("limit") or 0) > 0}
    want = VERSUS.get(name, set())
    need(want <= limits, f"{name}: no ratio beside {sorted(want - limits)}")
    for versus in line.get("versus") or []:
        need(isinstance(versus.get("ratio"), (int, float)), f"{name}: ratio missing in {versus}")
    if name in CEILINGS:
        ceiling = (line.get("results") or {}).get("ceiling")
        need(bool(ceiling), f"{name}: no ceiling row")
        if name == "reads" and ceiling:
            need(
                isinstance(ceiling.get("parts_ratio"), (int, float)),
                "reads: no ceiling from an HTTP answer and a request/reply together",
            )
            need(
                isinstance(ceiling.get("parts_together_kept_up"), bool),
                "reads: no verdict from its parts run together at the target rate",
            )
        if name == "latency" and ceiling:
            need(
                isinstance(ceiling.get("path_p99_ms"), (int, float)),
                "latency: no ceiling from a message's raw path at the same rate",
            )
            need(
                isinstance(ceiling.get("speed_accounts_for_miss"), bool),
                "latency: no ceiling from the machine's speed",
            )


# Messages counted as 0 ms because their recipient held them before their sender read the
# `accepted` ack: above this share of those measured they could move p99 (latency.rs).
EARLY_SHARE_LIMIT = 0.001


def check_early(name, line):
    results = line.get("results") or {}
    early = results.get("delivered_before_accept_read")
    measured = (results.get("accept_to_delivery") or {}).get("count") or 0
    need(isinstance(early, int), f"{name}: no count of deliveries before the accepted ack was read")
    if isinstance(early, int):
        need(
            early <= EARLY_SHARE_LIMIT * measured,
            f"{name}: {early} of {measured} delivered before their accepted ack was read",
        )


def check_connections(line, sizes, edges):
    results = line.get("results") or {}
    steps = results.get("steps") or []
    need([s.get("asked") for s in steps] == sizes, f"connections: sizes {steps}")
    for step in steps:
        need(step.get("open") == step.get("asked"), f"connections: opened {step}")
    need(isinstance(results.get("kib_per_connection"), (int, float)), "connections: no KiB per user")
    params = line.get("params") or {}
    need(params.get("edges") == edges, f"connections: {params.get('edges')} edges, not {edges}")
    need((params.get("holders") or 0) >= 1, "connections: no holder process")


DURABLE = ("release build", "Postgres fsync=on synchronous_commit=on")


def check_durable(lines):
    for condition in DURABLE:
        notes = {line.get("note") or "" for line in lines if condition not in (line.get("note") or "")}
        need(not notes, f"not measured with {condition}: {' | '.join(sorted(notes))}")


def check(lines, members, sizes, edges, peer, durable=False):
    """The problems found in `lines` (empty when every figure is there)."""
    problems.clear()
    counts = {}
    for line in lines:
        counts[line["scenario"]] = counts.get(line["scenario"], 0) + 1
    expected = dict.fromkeys(RAW, 1)
    if path_runs_again(lines):
        expected["raw_message_path"] = 2
    expected.update(
        {
            "connections": 1,
            "throughput": 1,
            "overload": 1,
            "latency": 1,
            "latency_headroom": 1,
            "reads": 1,
            "login": 1,
            "fanout": len(members),
        }
    )
    processes = set(PROCESSES)
    if peer:
        expected.update({"peer_throughput": 1, "peer_latency": 1})
        processes.add("synapse")
    need(counts == expected, f"scenarios {counts}, expected {expected}")

    for line in lines:
        name = line["scenario"]
        check_common(name, line, processes)
        check_targets(name, line)
        if name == "connections":
            check_connections(line, sizes, edges)
        if name in ("latency", "latency_headroom"):
            check_early(name, line)
            check_speed(name, line)
    if durable:
        check_durable(lines)
    fanouts = [line for line in lines if line["scenario"] == "fanout"]
    groups = [(line.get("params") or {}).get("members") for line in fanouts]
    need(groups == members, f"fan-out groups {groups}, expected {members}")
    for line in fanouts:
        need((line.get("results") or {}).get("delivered_fraction") == 1.0, "fanout: not all delivered")
    return list(problems)


def check_speed(name, line):
    """The machine's speed was sampled through the scenario, and its messages split by it."""
    results = line.get("results") or {}
    speed = results.get("machine_speed") or {}
    need(
        isinstance(speed.get("windows"), int) and speed["windows"] > 0,
        f"{name}: the machine's speed was not sampled",
    )
    split = [results.get(key) or {} for key in ("accept_to_delivery_at_speed", "accept_to_delivery_slowed")]
    whole = (results.get("accept_to_delivery") or {}).get("count")
    need(
        sum(part.get("count") or 0 for part in split) == whole,
        f"{name}: the messages split by the machine's speed do not add up to those measured",
    )


# The latency target's p99 (ms): a raw message path that misses it is run once more.
LATENCY_TARGET_MS = 50.0


def path_runs_again(lines):
    """Whether the run's first raw message path missed the latency target or fell behind its
    rate, so that a second was due (main.rs: a miss gets one more run and the ceiling counts
    the better one)."""
    paths = [line for line in lines if line["scenario"] == "raw_message_path"]
    if not paths:
        return False
    results = paths[0].get("results") or {}
    p99 = (results.get("accept_to_delivery") or {}).get("p99_ms")
    kept_up = results.get("kept_up")
    return kept_up is False or (isinstance(p99, (int, float)) and p99 >= LATENCY_TARGET_MS)


def first(lines, scenario):
    return next(line for line in lines if line["scenario"] == scenario)


def spoil_path_runs(lines):
    """A second raw message path after a first that met the target, or none after one that
    missed it."""
    paths = [line for line in lines if line["scenario"] == "raw_message_path"]
    if path_runs_again(lines):
        lines.remove(paths[-1])
    else:
        lines.insert(lines.index(paths[0]) + 1, json.loads(json.dumps(paths[0])))


# Each spoils one thing in a copy of a run that passed; the check must then fail.
MUTATIONS = {
    "a scenario missing": lambda ls: ls.remove(first(ls, "reads")),
    "a scenario failed": lambda ls: first(ls, "login")["results"].update(error="refused"),
    "a message stored twice": lambda ls: first(ls, "throughput")["results"]["integrity"].update(
        stored_twice=1
    ),
    "a problem line": lambda ls: first(ls, "fanout")["problems"].append("3 message frames never arrived"),
    "a ratio without its limit": lambda ls: first(ls, "reads")["versus"].pop(),
    "no ceiling row": lambda ls: first(ls, "login")["results"].pop("ceiling"),
    "no read ceiling from its parts": lambda ls: first(ls, "reads")["results"]["ceiling"].pop(
        "parts_ratio"
    ),
    "no read ceiling from its parts run together": lambda ls: first(ls, "reads")["results"][
        "ceiling"
    ].pop("parts_together_kept_up"),
    "a target without a verdict": lambda ls: first(ls, "latency")["targets"].clear(),
    "no latency ceiling from the raw path": lambda ls: first(ls, "latency")["results"]["ceiling"].pop(
        "path_p99_ms"
    ),
    "no latency ceiling from the machine's speed": lambda ls: first(ls, "latency")["results"][
        "ceiling"
    ].pop("speed_accounts_for_miss"),
    "the machine's speed not sampled": lambda ls: first(ls, "latency_headroom")["results"].pop(
        "machine_speed"
    ),
    "a scenario without the machine's CPU speed": lambda ls: first(ls, "overload")["cpu"].pop("speed"),
    "a split by speed that loses messages": lambda ls: first(ls, "latency")["results"][
        "accept_to_delivery_slowed"
    ].update(count=first(ls, "latency")["results"]["accept_to_delivery_slowed"]["count"] + 1),
    "a raw path run again, or not, against its first run's verdict": lambda ls: spoil_path_runs(ls),
    "a process's CPU missing": lambda ls: first(ls, "overload")["cpu"]["processes"].pop(),
    "connections cut short": lambda ls: first(ls, "connections")["results"]["steps"][-1].update(open=1),
    "a group not all delivered": lambda ls: first(ls, "fanout")["results"].update(delivered_fraction=0.99),
    "too many deliveries before the accepted ack": lambda ls: first(ls, "latency")["results"].update(
        delivered_before_accept_read=first(ls, "latency")["results"]["accept_to_delivery"]["count"] // 500
    ),
}


# Spoils only a check of durable conditions can see.
DURABLE_MUTATIONS = {
    "Postgres without fsync": lambda ls: first(ls, "throughput").update(
        note=first(ls, "throughput")["note"].replace("fsync=on", "fsync=off")
    ),
    "a debug build": lambda ls: first(ls, "latency").update(
        note=first(ls, "latency")["note"].replace("release build", "debug build")
    ),
}


def mutations(durable):
    return {**MUTATIONS, **(DURABLE_MUTATIONS if durable else {})}


def self_test(lines, members, sizes, edges, peer, durable=False):
    """Problems of the check itself: a spoiled run it would let pass."""
    missed = []
    for what, spoil in mutations(durable).items():
        copy = json.loads(json.dumps(lines))
        spoil(copy)
        if not check(copy, members, sizes, edges, peer, durable):
            missed.append(f"the check passes a run with {what}")
    return missed


def newest_run(lines):
    """The lines of the newest `loadgen all` run (each line names its run's start time)."""
    times = [line["time"] for line in lines if line.get("command") == "all"]
    return [line for line in lines if times and line["time"] == max(times)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", required=True)
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--edges", type=int, required=True)
    parser.add_argument("--peer", action="store_true")
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--newest", action="store_true")
    parser.add_argument("results")
    args = parser.parse_args()
    members = [int(m) for m in args.members.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    with open(args.results, encoding="utf-8") as f:
        lines = [json.loads(text) for text in f if text.strip()]
    if args.newest:
        lines = newest_run(lines)

    found = check(lines, members, sizes, args.edges, args.peer, args.durable)
    if not found:
        found = self_test(lines, members, sizes, args.edges, args.peer, args.durable)
    if found:
        print("bench check: FAILED", file=sys.stderr)
        for problem in found:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(1)
    run = f" of the run of {lines[0]['time']}" if args.newest and lines else ""
    conditions = ", measured in the targets' conditions" if args.durable else ""
    print(
        f"bench check: {len(lines)} scenario results{run}, every figure present{conditions}; "
        f"each of {len(mutations(args.durable))} spoiled copies fails the check",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
