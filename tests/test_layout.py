"""The package's shape follows its data flow: folders by step, imports pointing downstream only, no circles."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "internvl_cli"
# Heavy libraries that only the engines (and the quantizer, which drives gptqmodel) may import.
ENGINE_ONLY = ("torch", "transformers", "llguidance", "vllm", "gptqmodel", "xgrammar")
# The folders in data-flow order: a folder may use the ones before it, never the ones after it. Beside the steps
# proper (documents, engine, tasks, runs) stand what engines are built from: the machine (hardware), the
# checkpoint (models), decoding control, and JSON Schemas (schema), which tasks hand to engines as constraints.
FOLDERS = ("documents", "hardware", "models", "decoding", "schema", "engine", "tasks", "runs", "scoring", "cli")
MAY_NOT_IMPORT = {folder: FOLDERS[i + 1:] for i, folder in enumerate(FOLDERS[:-1])}
# Modules at the package top that every step uses (typed failures, record flags, shipped files, quiet libraries):
# below every folder, so they import none.
FOUNDATION = ("errors", "flags", "resources", "quiet")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """Every internvl_cli module `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in MODULES)
    found.discard(name)
    return found


def with_packages(names: set[str]) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too."""
    out = set(names)
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {n for n in out if n in MODULES}


GRAPH = {name: with_packages(imported_modules(name, path)) for name, path in MODULES.items()}


def test_every_folder_says_which_step_it_owns():
    for name, path in MODULES.items():
        first = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert first and first.strip(), f"{name} has no docstring saying what it owns"
    for folder in FOLDERS:
        assert (PACKAGE / folder / "__init__.py").is_file()


def test_no_import_circles():
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if target == name or name.startswith(target + "."):
                continue  # a module importing its own package is executing it already
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target] if target in trail else [name, target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("step", sorted(MAY_NOT_IMPORT))
def test_imports_point_downstream(step):
    for name, targets in GRAPH.items():
        if not name.startswith(f"internvl_cli.{step}"):
            continue
        for target in targets:
            later = target.split(".")[1] if "." in target else ""
            assert later not in MAY_NOT_IMPORT[step], f"{name} imports {target}: {step} comes before {later}"


@pytest.mark.parametrize("module", FOUNDATION)
def test_the_foundation_imports_no_step(module):
    name = f"internvl_cli.{module}"
    assert name in MODULES
    steps = {target.split(".")[1] for target in GRAPH[name] if target.count(".") >= 1}
    assert not steps & set(FOLDERS), f"{name} imports {sorted(steps & set(FOLDERS))}: it sits below every step"


def test_no_module_probes_a_task_or_an_engine():
    """Tasks and engines declare their optional abilities (with defaults in tasks/base.py and engine/base.py), so
    nothing asks them with getattr or hasattr whether they have one."""
    probes = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
                target = ast.unparse(node.args[0]) if node.args else ""
                if target.split(".")[-1] in ("task", "engine", "_task", "_engine"):
                    probes.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert not probes, probes


def test_no_module_but_the_cli_imports_the_cli():
    for name, targets in GRAPH.items():
        if name == "internvl_cli.cli" or name.startswith("internvl_cli.cli."):
            continue
        assert not any(t == "internvl_cli.cli" or t.startswith("internvl_cli.cli.") for t in targets), name


def test_importing_any_module_loads_no_engine_library():
    """Each module alone, in a fresh process: torch and friends arrive only when an engine needs them.

    Outside engine/ nothing heavy is imported at all; engine modules may import their grammar library, but
    torch, transformers and vLLM only inside the functions that load or run a model.
    """
    code = (
        "import importlib, json, os, sys\n"
        f"names = {sorted(MODULES)!r}\n"
        "for name in names:\n"
        "    reader, writer = os.pipe()\n"
        "    if os.fork() == 0:\n"
        "        importlib.import_module(name)\n"
        f"        libs = [m for m in {ENGINE_ONLY!r} if m in sys.modules]\n"
        "        os.write(writer, json.dumps([name, libs]).encode() + b'\\n')\n"
        "        os._exit(0)\n"
        "    os.close(writer)\n"
        "    print(os.read(reader, 65536).decode(), end='')\n"
        "    os.wait()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = dict(json.loads(line) for line in done.stdout.splitlines())
    assert set(loaded) == set(MODULES)
    for name, libs in loaded.items():
        allowed = {"llguidance"} if name.startswith(("internvl_cli.engine.", "internvl_cli.decoding.")) else set()
        assert set(libs) <= allowed, f"{name} imports {sorted(set(libs) - allowed)} at module level"


def test_the_run_layer_is_free_of_torch():
    code = "import sys, internvl_cli.runs.batch; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_readme_layout_lists_every_module():
    """README's layout section is the map of the tree: every module named under its folder, nothing that is gone."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed: set[str] = set()
    folder = ""
    for line in block.splitlines():
        if not line.startswith("  ") or not line.strip():
            continue
        words = line.split()
        entry = " ".join(words[:next((i for i, w in enumerate(words) if not w.rstrip(",").endswith((".py", "/"))),
                                     len(words))])
        depth = (len(line) - len(line.lstrip())) // 2
        if depth == 1 and entry.endswith("/"):
            folder = entry
            continue
        if depth == 1:
            folder = ""
        listed.update(folder + name.strip() for name in entry.split(",") if name.strip().endswith(".py"))
    actual = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
              if path.name not in ("__init__.py", "__main__.py") or path.parent.name == "cli" and path.name == "__init__.py"}
    assert listed == actual, f"missing from README: {sorted(actual - listed)}; gone: {sorted(listed - actual)}"


# What builds a run: the task classes and the engine loaders. Only the assembly (runs/assembly.py) calls them.
RUN_BUILDERS = {"OcrTask", "ChartTask", "ExtractTask", "PageTask", "load_engine", "TransformersEngine",
                "VllmEngine", "ServerEngine", "AutoEngine"}


def test_the_cli_builds_no_task_and_no_engine():
    """Every command gets its engine and task from the one assembly: cli/ imports no task module's classes, no
    engine loader, and names none of them."""
    builders = []
    for name, path in MODULES.items():
        if not name.startswith("internvl_cli.cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(alias.name in RUN_BUILDERS for alias in node.names):
                builders.append(f"{name}:{node.lineno} imports {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("engine",) \
                    and node.module not in ("engine.base", "engine.auto"):  # their constants, for help texts
                builders.append(f"{name}:{node.lineno} imports from {node.module}")
            elif isinstance(node, (ast.Name, ast.Attribute)) and (getattr(node, "id", None) or
                                                                   getattr(node, "attr", None)) in RUN_BUILDERS:
                builders.append(f"{name}:{node.lineno} names {ast.unparse(node)}")
        for target in GRAPH[name]:
            if target in ("internvl_cli.tasks.ocr", "internvl_cli.tasks.chart", "internvl_cli.tasks.extract",
                          "internvl_cli.tasks.pagewise", "internvl_cli.engine.hf", "internvl_cli.engine.vllm",
                          "internvl_cli.engine.server"):
                builders.append(f"{name} imports {target}")
    assert not builders, builders


def test_the_cli_starts_without_the_schema_validator():
    """jsonschema (with its format checkers) takes seconds to import: `internvl --version`, `status` and a cron
    rerun over a finished folder must not pay for it; only extract does, when it loads a schema."""
    code = "import sys, internvl_cli.cli, internvl_cli.runs.assembly; print('jsonschema' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
