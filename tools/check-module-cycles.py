#!/usr/bin/env python3
"""Fail when modules of a crate import each other in a circle.

Every crate of the workspace (a directory with Cargo.toml and src/) is read
as a graph: one node per module (a .rs file, or a directory's mod.rs), an
edge from a module to every module it names in code:
`crate::a::b::Item`, `super::x`, `self::x`, and `child::x` for a module it
declares itself. An edge goes to the deepest module the path names; naming
an item of a module's parent (`crate::edge::App` from `edge::websocket`)
is an edge to the parent like any other. Comments and string literals are
ignored. A strongly connected component with more than one module is a
cycle, printed with one path around it.

Why a checker and not a convention: a circle of modules cannot be read or
changed one piece at a time (quinn-proto's modules import downward only;
docs/architecture.md). A cycle that is really one concept belongs in one
module.

Usage: tools/check-module-cycles.py [repo root]   (exit 1 on a cycle)
       tools/check-module-cycles.py --self-test   (plants cycles in a scratch
                                                    crate; exit 1 if missed)
"""

import os
import re
import sys


def strip_comments_and_strings(src):
    """Source without comments, string and char literals (same length-ish)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", src[i:])
            i += len(m.group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def modules_of(src_dir):
    """{module path tuple: file} for every .rs file under src_dir."""
    mods = {}
    for root, _, files in os.walk(src_dir):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src_dir)[:-3].split(os.sep)
            if rel[0] == "bin":
                continue  # each binary is a crate of its own
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            mods[tuple(rel)] = path
    return mods


PATH = re.compile(r"\b(crate|super|self|[a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
DECL = re.compile(r"\bmod\s+([a-z_][a-z0-9_]*)\s*[;{]")


def edges_of(mod, src, mods):
    """Modules `mod` names."""
    children = {m for m in DECL.findall(src)}
    found = set()
    for head, rest in PATH.findall(src):
        parts = rest.split("::")[1:]
        if head == "crate":
            base = []
        elif head == "self":
            base = list(mod)
        elif head == "super":
            base = list(mod[:-1])
            while parts and parts[0] == "super":
                base, parts = base[:-1], parts[1:]
        elif head in children:
            base, parts = list(mod), [head] + parts
        else:
            continue
        target = tuple(base)
        for p in parts:
            if target + (p,) in mods:
                target = target + (p,)
            else:
                break
        if target != mod and target in mods:
            found.add(target)
    return found


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def a_loop(comp, graph):
    """One path around a component, for the message."""
    comp = set(comp)
    start = min(comp)
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in comp)
        back = [w for w in nxt if w == start]
        if back and len(path) > 1:
            return path + [start]
        fresh = [w for w in nxt if w not in seen]
        if not fresh:
            return path + [nxt[0]] if nxt else path
        path.append(fresh[0])
        seen.add(fresh[0])


def name(m):
    return "::".join(m) or "(crate root)"


def check(root):
    """Print every cycle under `root`; the number found."""
    bad = 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", "node_modules", ".git", "fuzz")]
        if "Cargo.toml" not in files or not os.path.isdir(os.path.join(dirpath, "src")):
            continue
        mods = modules_of(os.path.join(dirpath, "src"))
        graph = {}
        for m, f in mods.items():
            with open(f, encoding="utf-8") as fh:
                graph[m] = edges_of(m, strip_comments_and_strings(fh.read()), mods)
        for comp in cycles(graph):
            bad += 1
            crate = os.path.relpath(dirpath, root)
            loop = " -> ".join(name(m) for m in a_loop(comp, graph))
            print(f"{crate}: modules in a cycle: {', '.join(sorted(name(m) for m in comp))}\n    e.g. {loop}")
    return bad


def self_test():
    """The checker must find cycles planted in a scratch crate, in the
    forms real code has them, and accept the same crate without them."""
    import tempfile

    cases = {
        "siblings (use crate::)": {"a.rs": "use crate::b::B;", "b.rs": "use crate::a::A;"},
        "three in a ring": {
            "a.rs": "use crate::b::B;",
            "b.rs": "fn f() { crate::c::g() }",
            "c.rs": "use super::a;",
        },
        "parent and child": {"m/mod.rs": "mod k;\nuse k::K;", "m/k.rs": "use super::M;"},
    }
    clean = {
        "a.rs": "use crate::b::B; // crate::c::C in a comment\nconst S: &str = \"crate::c\";",
        "b.rs": "",
        "c.rs": "use crate::a::A;",
    }
    failed = 0
    for label, files in list(cases.items()) + [("no cycle", clean)]:
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "src"))
            with open(os.path.join(d, "Cargo.toml"), "w") as f:
                f.write("[package]\nname = \"planted\"\n")
            lib = ["mod " + (os.path.dirname(n) or n[:-3]) for n in files]
            for n, text in files.items():
                path = os.path.join(d, "src", n)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
            with open(os.path.join(d, "src", "lib.rs"), "w") as f:
                f.write(";\n".join(sorted(set(lib))) + ";\n")
            found = check(d)
            want = 0 if files is clean else 1
            if found != want:
                print(f"self-test: {label}: found {found} cycle(s), expected {want}")
                failed += 1
    print("self-test passed" if not failed else f"self-test: {failed} case(s) wrong")
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    bad = check(root)
    if bad:
        print(f"{bad} import cycle(s); move what the modules share into a module of its own")
        return 1
    print("no import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
