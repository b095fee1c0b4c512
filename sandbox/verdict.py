"""Trusted-side comparison and test analysis. Nothing here ever runs untrusted code.

* :func:`plan_asserts` classifies assert lines (``assert CALL == LITERAL`` -> pair, other
  single asserts -> replay, anything else -> stmt). The local executor no longer needs it --
  every test runs in its trusted judge (``_judge.py``) -- it is kept for callers that analyse
  tests (for example to see which asserts compare with a literal).
* :func:`apps_stdio_equal` and :func:`apps_call_equal` follow the original APPS harness.

>>> p = plan_asserts(["assert add(1, 2) == 3"], "", "def add(a, b):\\n    return a + b")[0]
>>> p.kind, p.step, p.expected
('pair', {'k': 'expr', 'src': 'add(1, 2)'}, 3)
>>> apps_stdio_equal("1 2 \\n3\\n", "1 2\\n3"), apps_stdio_equal("0.3333333", "0.33333331")
(True, True)
"""
from __future__ import annotations

import ast
import builtins
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AssertPlan", "plan_asserts", "values_equal", "apps_stdio_equal", "apps_call_equal"]

_MISSING = object()


@dataclass
class AssertPlan:
    """How one assert line is checked. ``kind``: pair | is | replay | stmt | invalid."""

    kind: str
    step: dict[str, Any]
    src: str
    expected: Any = None
    names: list[str] = field(default_factory=list)
    error: str = ""
    imports: list[str] = field(default_factory=list)  # program imports the judge re-runs


def _defined_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(callables, all names) bound at top level of a module."""
    callables: set[str] = set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            callables.add(node.name)
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
                        callables.add(n.id)  # `f = lambda ...` / `f = functools.cache(g)`
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names.add((a.asname or a.name).split(".")[0])
    return callables, names


def _parse(src: str) -> ast.Module | None:
    try:
        return ast.parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def plan_asserts(asserts: list[str], setup_code: str, program: str) -> list[AssertPlan]:
    """Plan each assert line (see module doc). The program is only *parsed* here."""
    prog_tree = _parse(program) or ast.Module(body=[], type_ignores=[])
    setup_tree = _parse(setup_code) or ast.Module(body=[], type_ignores=[])
    prog_callables, _ = _defined_names(prog_tree)
    _, setup_names = _defined_names(setup_tree)
    user = prog_callables - setup_names
    # Asserts may use modules the program imported (`== sys.getsizeof(...)`); the judge
    # re-runs only those import statements, never the program.
    imports = [ast.unparse(n) for n in prog_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    plans = [_plan_one(a, user) for a in asserts]
    for p in plans:
        if p.kind == "replay":
            p.imports = imports
    return plans


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _MISSING


def _plan_one(src: str, user: set[str]) -> AssertPlan:
    tree = _parse(src.strip())
    if tree is None:
        return AssertPlan("invalid", {}, src, error="test is not valid Python")
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.Assert):
        test = body[0].test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op, left, right = test.ops[0], test.left, test.comparators[0]
            if isinstance(op, ast.Eq):
                for expr, lit in ((left, right), (right, left)):
                    value = _literal(lit)
                    if value is not _MISSING and _literal(expr) is _MISSING:
                        return AssertPlan("pair", {"k": "expr", "src": ast.unparse(expr)}, src,
                                          expected=value)
            if isinstance(op, ast.Is) and isinstance(right, ast.Constant) and \
                    right.value in (True, False, None) and type(right.value) in (bool, type(None)):
                return AssertPlan("is", {"k": "expr", "src": ast.unparse(left)}, src,
                                  expected=right.value)
        plan = _plan_replay(src, body[0], user)
        if plan is not None:
            return plan
    return AssertPlan("stmt", {"k": "stmt", "src": src}, src)


def _plan_replay(src: str, node: ast.Assert, user: set[str]) -> AssertPlan | None:
    scoped = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
              ast.NamedExpr)
    if any(isinstance(n, scoped) for n in ast.walk(node)):
        return None  # calls may depend on names bound inside the assert
    calls: list[str] = []
    names: set[str] = set()

    def visit(n: ast.AST) -> bool:
        """Collect outermost user calls; False if a user name is used other than as a call."""
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in user:
            calls.append(ast.unparse(n))
            for sub in ast.walk(n):
                if isinstance(sub, ast.Name) and sub.id in user:
                    names.add(sub.id)
            return _only_called(n, user)
        if isinstance(n, ast.Name) and n.id in user:
            return False
        return all(visit(c) for c in ast.iter_child_nodes(n))

    ok = visit(node.test)
    if not ok or not calls:
        return None
    return AssertPlan("replay", {"k": "rec", "calls": calls, "names": sorted(names)}, src,
                      names=sorted(names))


def _only_called(call: ast.Call, user: set[str]) -> bool:
    funcs = {id(c.func) for c in ast.walk(call) if isinstance(c, ast.Call)}
    return all(not (isinstance(n, ast.Name) and n.id in user) or id(n) in funcs
               for n in ast.walk(call))


def values_equal(got: Any, expected: Any) -> bool:
    """``got == expected`` on behaviour-free built-ins (both decoded by the strict serialiser),
    which is exactly what the original assert computes for honest programs."""
    try:
        return bool(got == expected)
    except Exception:  # noqa: BLE001 - e.g. comparing deeply nested structures
        return False


# ---------------------------------------------------------------------------- APPS compare
def _float_close(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return abs(x - y) <= 1e-8 + 1e-5 * abs(y)  # numpy.allclose defaults (rtol=1e-5, atol=1e-8)


def apps_stdio_equal(output: str, expected: str) -> bool:
    """APPS standard-output comparison: per line with trailing whitespace stripped (ignoring
    trailing blank lines), then token-wise, then tokens as floats with allclose."""
    a = [line.rstrip() for line in output.rstrip().splitlines()]
    b = [line.rstrip() for line in expected.rstrip().splitlines()]
    if a == b:
        return True
    ta, tb = output.split(), expected.split()
    if ta == tb:
        return True
    if len(ta) != len(tb) or not ta:
        return False
    return all(x == y or _float_close(x, y) for x, y in zip(ta, tb))


def _tuples_to_lists(x: Any) -> Any:
    if type(x) in (tuple, list):
        return [_tuples_to_lists(v) for v in x]
    if type(x) is dict:
        return {k: _tuples_to_lists(v) for k, v in x.items()}
    return x


def apps_call_equal(output: Any, expected: Any) -> bool:
    """APPS call-based comparison: ``out == expected`` or ``out == expected[0]`` (ground truth
    is often wrapped in a list), tuples compared as lists."""
    out = _tuples_to_lists(output)
    if values_equal(out, expected):
        return True
    return type(expected) is list and len(expected) > 0 and values_equal(out, expected[0])


_BUILTIN_NAMES = frozenset(dir(builtins))
