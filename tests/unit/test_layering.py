"""Imports run one way: resources -> mirror -> cache and upstream -> leaves.

Every module of the package is parsed (never imported) and its imports of other
dockerproxy modules collected: at module level, inside functions and under
C{TYPE_CHECKING} alike, since each couples the two modules. The rules hold for
what a module reaches through others too, so no rule can be dodged by a detour.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dockerproxy"

# Modules that know nothing of the rest of the proxy: they import only each other.
LEAVES = frozenset(
    {
        "dockerproxy.accesslog",
        "dockerproxy.accessrecords",
        "dockerproxy.auth",
        "dockerproxy.cachedir",
        "dockerproxy.coalesce",
        "dockerproxy.digests",
        "dockerproxy.edge",
        "dockerproxy.errors",
        "dockerproxy.failures",
        "dockerproxy.headers",
        "dockerproxy.imagerefs",
        "dockerproxy.internals",
        "dockerproxy.meters",
        "dockerproxy.names",
        "dockerproxy.networks",
        "dockerproxy.patterns",
        "dockerproxy.presets",
        "dockerproxy.relay",
        "dockerproxy.searchcache",
        "dockerproxy.shaping",
        "dockerproxy.sizes",
        "dockerproxy.statedir",
        "dockerproxy.taglist",
        "dockerproxy.userfiles",
    }
)
# What the stores (the cache, the fleet's Redis side) must never reach: they know no
# request, no configuration and no upstream.
ABOVE_THE_STORES = (
    "dockerproxy.config",
    "dockerproxy.mirror",
    "dockerproxy.exchange",
    "dockerproxy.resources",
    "dockerproxy.servicetree",
    "dockerproxy.tap",
    "dockerproxy.wiring",
    "dockerproxy.upstream",
    "dockerproxy.routing",
    "dockerproxy.site",
    "dockerproxy.pull",
)
# (modules, what they must never reach)
RULES = [
    (
        "dockerproxy.cache",
        ABOVE_THE_STORES,
    ),
    (
        # The fleet's Redis side sits beside the cache: the mirror uses it, it knows no request.
        "dockerproxy.fleet",
        ABOVE_THE_STORES,
    ),
    (
        "dockerproxy.config",
        (
            "dockerproxy.cache",
            "dockerproxy.mirror",
            "dockerproxy.exchange",
            "dockerproxy.resources",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
            "dockerproxy.upstream",
            "dockerproxy.routing",
        ),
    ),
    (
        "dockerproxy.mirror",
        (
            "dockerproxy.resources",
            "dockerproxy.site",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.upstream",
        (
            "dockerproxy.cache",
            "dockerproxy.mirror",
            "dockerproxy.exchange",
            "dockerproxy.resources",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.exchange",
        (
            "dockerproxy.mirror",
            "dockerproxy.resources",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.pull",
        (
            "dockerproxy.cache",
            "dockerproxy.mirror",
            "dockerproxy.resources",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.resources",
        ("dockerproxy.site", "dockerproxy.servicetree", "dockerproxy.tap", "dockerproxy.wiring"),
    ),
    (
        "dockerproxy.policy",
        (
            "dockerproxy.cache",
            "dockerproxy.mirror",
            "dockerproxy.exchange",
            "dockerproxy.upstream",
            "dockerproxy.resources",
            "dockerproxy.site",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.tokens",
        (
            "dockerproxy.resources",
            "dockerproxy.site",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        # The proxy's identity upstream is part of the upstream layer.
        "dockerproxy.upstreamauth",
        (
            "dockerproxy.cache",
            "dockerproxy.mirror",
            "dockerproxy.exchange",
            "dockerproxy.resources",
            "dockerproxy.clientauth",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.clientauth",
        (
            "dockerproxy.resources",
            "dockerproxy.site",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.tokenservice",
        (
            "dockerproxy.resources",
            "dockerproxy.site",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
    (
        "dockerproxy.rendering",
        (
            "dockerproxy.resources",
            "dockerproxy.tokens",
            "dockerproxy.mirror",
            "dockerproxy.exchange",
            "dockerproxy.site",
            "dockerproxy.servicetree",
            "dockerproxy.tap",
            "dockerproxy.wiring",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def packages_of(module: str) -> list[str]:
    """Importing C{a.b.c} runs C{a/__init__} and C{a/b/__init__} first."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def imported(module: str, nodes: Iterable[ast.AST], parents: bool = True) -> set[str]:
    """The dockerproxy modules the import statements among C{nodes} load (with C{parents},
    the packages that run first too)."""
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name in MODULES:
                found.add(name)
                if parents:
                    found.update(p for p in packages_of(name) if p in MODULES)
    found.discard(module)
    return found


def all_imports(module: str) -> set[str]:
    return imported(module, ast.walk(ast.parse(MODULES[module].read_text())))


def load_time_imports(module: str) -> set[str]:
    """What importing C{module} needs first: module-level imports, not those in functions or
    under C{if TYPE_CHECKING:}; a package's own C{__init__} has started before any of its
    modules loads, so that is no cycle."""
    nodes: list[ast.AST] = []
    pending = list(ast.parse(MODULES[module].read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
        elif isinstance(node, ast.If | ast.Try):
            pending.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            nodes.append(node)
    return imported(module, nodes, parents=False)


GRAPH = {module: all_imports(module) for module in MODULES}


def reachable(module: str, graph: dict[str, set[str]] = GRAPH) -> dict[str, list[str]]:
    """Every module C{module} reaches, with the chain of imports that gets there."""
    paths = {module: [module]}
    pending = [module]
    while pending:
        current = pending.pop()
        for target in sorted(graph[current]):
            if target not in paths:
                paths[target] = [*paths[current], target]
                pending.append(target)
    del paths[module]
    return paths


def test_the_parser_sees_the_package() -> None:
    assert {"dockerproxy.config", "dockerproxy.cache.store", "dockerproxy.tap"} <= set(MODULES)
    assert "dockerproxy.config" in GRAPH["dockerproxy.routing"]
    assert "dockerproxy.cache.store" in GRAPH["dockerproxy.cache.blobs"]
    assert "dockerproxy.cache.blobs" in GRAPH["dockerproxy.cache.fills"]  # under TYPE_CHECKING
    assert "dockerproxy.cache" in GRAPH["dockerproxy.cache.blobs"]  # its package runs first


@pytest.mark.parametrize(("importers", "forbidden"), RULES)
def test_imports_never_run_back_up(importers: str, forbidden: tuple[str, ...]) -> None:
    for module in sorted(m for m in MODULES if is_under(m, importers)):
        for target, chain in reachable(module).items():
            bad = [prefix for prefix in forbidden if is_under(target, prefix)]
            assert not bad, f"{' -> '.join(chain)}"


def test_leaves_import_only_leaves() -> None:
    for leaf in sorted(LEAVES):
        assert GRAPH[leaf] <= LEAVES | {"dockerproxy"}, f"{leaf} imports {GRAPH[leaf] - LEAVES}"


def test_nothing_in_the_package_imports_the_service_wiring_or_the_admin_command() -> None:
    """Only the commands do: C{dockerproxy} (cli), C{dockerproxy warm --cache-dir}
    (warmdirect, which runs the service tree in the command's process) and
    C{python -m dockerproxy.cache}."""
    for module in sorted(set(MODULES) - {"dockerproxy.cli"}):
        assert "dockerproxy.tap" not in GRAPH[module], module
        if module not in ("dockerproxy.tap", "dockerproxy.warmdirect"):
            assert "dockerproxy.servicetree" not in GRAPH[module], module
        if module != "dockerproxy.warmcli":
            assert "dockerproxy.warmdirect" not in GRAPH[module], module
        if module != "dockerproxy.cache.__main__":
            assert "dockerproxy.cache.admin" not in GRAPH[module], module
    assert "dockerproxy.cli" not in set().union(*GRAPH.values()), "nothing imports the command"


def test_no_import_cycles_when_modules_load() -> None:
    """Only imports inside functions or under TYPE_CHECKING may point back."""
    graph = {module: load_time_imports(module) for module in MODULES}
    for module in sorted(MODULES):
        for target, chain in reachable(module, graph).items():
            assert module not in graph[target], f"{' -> '.join([*chain, module])}"


def test_only_the_service_wiring_reaches_the_admin_side() -> None:
    """The metrics observe the proxy from above: requests as access-log events, the upstream
    client and S3 through dockerproxy.meters; nothing below imports dockerproxy.admin."""
    for module in sorted(MODULES):
        # The commands sit above the wiring they run: the command line (dockerproxy.cli)
        # and `warm --cache-dir` (warmcli, warmdirect).
        commands = ("dockerproxy.cli", "dockerproxy.warmcli", "dockerproxy.warmdirect")
        wiring = ("dockerproxy.servicetree", "dockerproxy.tap")
        if module in commands + wiring or is_under(module, "dockerproxy.admin"):
            continue
        reached = [t for t in reachable(module) if is_under(t, "dockerproxy.admin")]
        assert not reached, f"{module} reaches {reached}"
