"""Structure report: lines per module, functions over 80 lines, import cycles (all imports,
including those inside functions), largest files."""

import ast
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".") / "src" / "nudiff"
mods = {}
for p in root.rglob("*.py"):
    name = "nudiff." + ".".join(p.relative_to(root).with_suffix("").parts)
    name = name.removesuffix(".__init__")
    mods[name] = p
graph = {m: set() for m in mods}
long_funcs = []
for m, p in mods.items():
    tree = ast.parse(p.read_text())
    pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("nudiff"):
                for a in node.names:
                    full = f"{base}.{a.name}"
                    graph[m].add(full if full in mods else base)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nudiff"):
                    graph[m].add(a.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > 80:
                long_funcs.append((n, f"{m}.{node.name}"))
graph = {m: {d for d in ds if d in mods and d != m} for m, ds in graph.items()}
# strongly connected components (Tarjan)
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def sc(v):
    index[v] = low[v] = i[0]
    i[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
        if w not in index:
            sc(w)
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
            sccs.append(sorted(comp))


for v in graph:
    if v not in index:
        sc(v)
# ignore package __init__ re-export cycles (parent package <-> its own submodule)
real = [
    c
    for c in sccs
    if not all(
        any(o != x and (o.startswith(x + ".") or x.startswith(o + ".")) for o in c) for x in c
    )
]
sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in mods.items()), reverse=True)
print("modules:", len(mods), "lines:", sum(s for s, _ in sizes))
print("largest:", ", ".join(f"{m.removeprefix('nudiff.')} {s}" for s, m in sizes[:10]))
print("functions over 80 lines:", len(long_funcs))
for n, f in sorted(long_funcs, reverse=True):
    print("  ", n, f)
print("import cycles (strongly connected groups):", len(sccs))
for c in sccs:
    print("  ", " <-> ".join(x.removeprefix("nudiff.") for x in c))
