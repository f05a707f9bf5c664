#!/usr/bin/env python3
"""Checks what the manifest promises about versions, from `cargo metadata`.

1. MSRV: the declared `rust-version` is at least the `rust-version` of every
   package in the library's normal (and build) dependency graph, with all
   features, for every target platform, as the lockfile resolves it.
2. Lower bounds: each direct dependency's declared requirement admits no
   version older than one that some other package in the lockfile requires
   (e.g. `tower = "0.5"` while axum needs `tower >= 0.5.2`): a declared lower
   bound that the tree itself rules out is a promise nobody has built with.

Run from the workspace root: `python3 .ci/deps.py`. Exit status 1 on a
finding. Needs only cargo and python3 (no network with a warm registry).
"""
import json
import re
import subprocess
import sys

ROOT = "tower-quality-gate"


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def version_tuple(v):
    """'1.89', '1.89.0', '1.89.0-beta' -> (1, 89, 0)."""
    nums = [int(x) for x in re.findall(r"\d+", v.split("-")[0])[:3]]
    return tuple(nums + [0] * (3 - len(nums)))


def req_minimum(req):
    """The lowest version a requirement admits (caret, tilde, =, >=, bare, *).

    Returns None when the requirement puts no lower bound (`*`, `<x`)."""
    best = None
    for part in req.split(","):
        part = part.strip()
        m = re.match(r"^(\^|~|=|>=|>)?\s*v?(\d+)(?:\.(\d+|\*))?(?:\.(\d+|\*))?", part)
        if not m or part.startswith("<") or part == "*":
            continue
        op = m.group(1) or "^"
        nums = [int(g) if g and g != "*" else 0 for g in m.group(2, 3, 4)]
        if op == ">":
            nums[2] += 1
        t = tuple(nums)
        best = t if best is None or t > best else best
    return best


def fmt(t):
    return ".".join(str(x) for x in t)


def main():
    meta = metadata()
    root = next(p for p in meta["packages"] if p["name"] == ROOT and p["source"] is None)
    failures = 0

    # The library's graph as a user builds it (resolver 2: no dev-dependency
    # features), normal and build edges, all features, every target.
    tree = subprocess.run(
        ["cargo", "tree", "-p", ROOT, "-e", "normal,build", "--all-features", "--target", "all",
         "--prefix", "depth", "--format", "{p}", "--locked"],
        check=True, capture_output=True, text=True,
    ).stdout
    in_graph, edges, path = set(), set(), []
    for line in tree.splitlines():
        m = re.match(r"^(\d+)(\S+) v(\S+)", line)
        if not m:
            continue
        depth, node = int(m.group(1)), (m.group(2), m.group(3))
        in_graph.add(node)
        del path[depth:]
        if path:
            edges.add((path[-1], m.group(2)))  # (parent package, child name)
        path.append(node)
    graph = [p for p in meta["packages"] if (p["name"], p["version"]) in in_graph and p["id"] != root["id"]]

    # 1. MSRV.
    declared = version_tuple(root["rust_version"] or "0")
    needed = sorted(
        ((version_tuple(p["rust_version"]), p["name"], p["version"]) for p in graph if p.get("rust_version")),
        reverse=True,
    )
    top = needed[0] if needed else ((0, 0, 0), "-", "-")
    print(f"rust-version: declared {fmt(declared)}; the {len(graph)} packages of the library's graph "
          f"(all features, all targets) need {fmt(top[0])} ({top[1]} {top[2]})")
    for rv, name, version in needed:
        if rv > declared:
            print(f"  error: {name} {version} declares rust-version {fmt(rv)} > {fmt(declared)}")
            failures += 1

    # 2. Lower bounds of the library's direct normal dependencies: at least
    # what any package of the locked graph requires of the same crate.
    for d in root["dependencies"]:
        if d["kind"] is not None:
            continue
        name = d.get("package") or d["name"]
        ours = req_minimum(d["req"]) or (0, 0, 0)
        need, who = ours, None
        for p in graph:
            for other in p["dependencies"]:
                if (other.get("package") or other["name"]) != name or ((p["name"], p["version"]), name) not in edges:
                    continue
                theirs = req_minimum(other["req"])
                if theirs and theirs[0] == ours[0] and (ours[0] > 0 or theirs[1] == ours[1]) and theirs > need:
                    need, who = theirs, f"{p['name']} {p['version']} requires {other['req']}"
        if who:
            print(f"  error: {name} = \"{d['req']}\" admits {fmt(ours)}, but {who}: "
                  f"declare at least \"{fmt(need)}\"")
            failures += 1
    print("lower bounds: " + ("ok" if failures == 0 else f"{failures} finding(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
