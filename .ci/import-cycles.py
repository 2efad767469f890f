#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Usage: .ci/import-cycles.py SRC_DIR [--depth N] [--graph]

Every file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`). A module depends on another
when its code (comments and a trailing `#[cfg(test)] mod` left out) names a path into it:
`crate::x::y`, `super::x`, or `x::…` for a child module `x` (a `pub use`, a `use`).
Circles are found among the modules cut to the first N path segments (`--depth 1`: the
top-level folders; the default, every module). A child that names its parent's items
depends on the parent; a parent that only declares a child (`mod x;`) does not depend on
it, so impl blocks split across a folder's files are not counted as circles, but a parent
that re-exports a child which in turn uses the parent is.
"""

import argparse
import os
import re
import sys


def modules(root):
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def code_of(path):
    text = open(path, encoding="utf-8").read()
    tests = text.find("#[cfg(test)]\nmod ")
    if tests >= 0:
        text = text[:tests]
    # Line comments (doc comments included); `://` inside URLs is kept.
    return re.sub(r'(?<![:"])//[^\n]*', "", text)


def longest_module(parts, mods):
    for k in range(len(parts), 0, -1):
        if parts[:k] in mods:
            return parts[:k]
    return None


def graph(root, depth):
    mods = modules(root)
    edges = {}
    for mod, path in mods.items():
        src = mod[:depth]
        code = code_of(path)
        targets = set()
        for m in re.finditer(r"\bcrate::((?:[a-z_0-9]+::)*[a-z_0-9]+)", code):
            targets.add(longest_module(tuple(m.group(1).split("::")), mods))
        for m in re.finditer(r"\b((?:super::)+)((?:[a-z_0-9]+::)*[a-z_0-9]+)?", code):
            ups = m.group(1).count("super::")
            if ups > len(mod):
                continue
            rest = tuple(m.group(2).split("::")) if m.group(2) else ()
            base = mod[: len(mod) - ups]
            targets.add(longest_module(base + rest, mods) or (base if base in mods else None))
        for m in re.finditer(r"(?<![:\w])([a-z_0-9]+)::[A-Za-z_0-9{*]", code):
            child = mod + (m.group(1),)
            if child in mods:
                targets.add(child)
        for t in targets:
            if t is None:
                continue
            t = t[:depth]
            if t != src:
                edges.setdefault(src, set()).add(t)
    return edges


def circles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(comp))

    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def name(mod):
    return "::".join(mod) or "crate"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--depth", type=int, default=99)
    ap.add_argument("--graph", action="store_true")
    args = ap.parse_args()
    edges = graph(args.src, args.depth)
    if args.graph:
        for src in sorted(edges):
            print(f"{name(src)} -> {', '.join(name(t) for t in sorted(edges[src]))}")
    found = circles(edges)
    for c in found:
        print("import circle: " + " <-> ".join(name(m) for m in c), file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"{args.src}: no import circle among {len(modules(args.src))} modules")


if __name__ == "__main__":
    main()
