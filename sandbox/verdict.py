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

__all__ = ["AssertPlan", "plan_asserts", "values_equal", "apps_stdio_equal", "apps_call_equal",
           "apps_call_inputs", "COMPARE_MODES"]

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
# ``compare="apps"`` (the default) is the original APPS harness (hendrycks/apps
# eval/testing_util.py) corner for corner, so pass@k stays comparable with published numbers.
# ``compare="apps_fixed"`` removes what is plainly a bug there (see docs/code.md).
COMPARE_MODES = ("apps", "apps_fixed")


def _close(x: float, y: float) -> bool:
    """numpy.isclose with its defaults (rtol=1e-5, atol=1e-8): equal infinities are close,
    NaN is close to nothing."""
    if x == y:
        return True
    if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
        return False
    return abs(x - y) <= 1e-8 + 1e-5 * abs(y)


def _allclose(xs: list[float], ys: list[float]) -> bool:
    return len(xs) == len(ys) and all(_close(x, y) for x, y in zip(xs, ys))


def _floats(items: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in items]
    except (ValueError, OverflowError):
        return None


def _rounded(sets: list[set[str]]) -> set[frozenset] | None:
    try:
        return {frozenset(round(float(t), 3) for t in s) for s in sets}
    except (ValueError, OverflowError):
        return None


def _stdio_original(output: str, expected: str) -> bool:
    """The original's sequence of fallbacks, on the captured stdout (its lines, as
    ``splitlines()`` gives them) and the expected text."""
    lines = output.splitlines()
    want = expected.strip()
    # 1. the whole text, stripped, as printed or with every line stripped
    if "\n".join(lines).strip() == want or "\n".join(x.strip() for x in lines).strip() == want:
        return True
    # 2. one printed line equal to the whole expected text
    if lines == [expected]:
        return True
    # 3. expected as its lines split on "\n", empty ones dropped *before* stripping (so a
    #    whitespace-only expected line stays, as ""), against the printed lines as they are
    exp = [x.strip() for x in expected.split("\n") if x]
    if lines == exp:
        return True
    # 4. printed lines without empty ones (not stripped); then each line as one float
    out = [x for x in lines if x]
    if out == exp:
        return True
    fo, fe = _floats(out), _floats(exp)
    if fo is not None and fe is not None and _allclose(fo, fe):
        return True
    # 5. line-insensitive: the *set* of per-line token *sets* (order of lines and of tokens,
    #    and repeats, ignored)
    exp_sets = [set(x.split()) for x in exp]
    out_sets = [set(x.split()) for x in out if x.split()]
    if {frozenset(x) for x in out_sets} == {frozenset(x) for x in exp_sets}:
        return True
    # 6. the same with every token a float rounded to 3 decimals
    ro, re_ = _rounded(out_sets), _rounded(exp_sets)
    return ro is not None and re_ is not None and ro == re_


def _stdio_fixed(output: str, expected: str) -> bool:
    """Order-sensitive: lines with trailing whitespace stripped (trailing blank lines
    ignored), else the same tokens, else tokens equal as floats with numpy's allclose."""
    a = [line.rstrip() for line in output.rstrip().splitlines()]
    b = [line.rstrip() for line in expected.rstrip().splitlines()]
    if a == b:
        return True
    ta, tb = output.split(), expected.split()
    if ta == tb:
        return True
    if len(ta) != len(tb) or not ta:
        return False
    for x, y in zip(ta, tb):
        if x != y:
            f = _floats([x, y])
            if f is None or not _close(f[0], f[1]):
                return False
    return True


def apps_stdio_equal(output: str, expected: str, compare: str = "apps") -> bool:
    """APPS standard-output comparison of a program's captured stdout with the expected text.

    ``compare="apps"``: the original harness, including its late fallbacks: each line as one
    float (allclose), then the set of per-line token sets (line order, token order and
    repeated lines ignored), then the same with tokens rounded to 3 decimals.
    ``compare="apps_fixed"``: order-sensitive lines, tokens, and float tokens (allclose).
    """
    if compare == "apps_fixed":
        return _stdio_fixed(output, expected)
    return _stdio_original(output, expected)


def _int_keys(d: dict) -> dict:
    return {int(k): v for k, v in d.items()}


def apps_call_inputs(args: list, compare: str = "apps") -> list:
    """The original undoes JSON's string dict keys: when the first argument is a dict with
    integer-like keys, the arguments become ``[that dict with int keys]`` (it drops any other
    argument, a bug kept by default). ``apps_fixed`` converts every such dict argument."""
    if compare == "apps_fixed":
        out = []
        for a in args:
            if type(a) is dict:
                try:
                    a = _int_keys(a)
                except (ValueError, TypeError):
                    pass
            out.append(a)
        return out
    if args and type(args[0]) is dict:
        try:
            return [_int_keys(args[0])]
        except (ValueError, TypeError):
            pass
    return args


def _expected_original(gt: Any) -> Any:
    if type(gt) is dict:
        try:
            gt = [_int_keys(gt)]
        except (ValueError, TypeError):
            pass
    if type(gt) is list and gt and type(gt[0]) is dict:
        try:
            gt = [_int_keys(gt[0])]
        except (ValueError, TypeError):
            pass
    return gt


def _tuples_to_lists(x: Any) -> Any:
    if type(x) in (tuple, list):
        return [_tuples_to_lists(v) for v in x]
    if type(x) is dict:
        return {k: _tuples_to_lists(v) for k, v in x.items()}
    return x


def apps_call_equal(output: Any, expected: Any, compare: str = "apps") -> bool:
    """APPS call-based comparison of a (strictly deserialised) return value.

    ``compare="apps"`` (the original): expected dicts get int keys (wrapped in a list); a
    returned tuple becomes a list (one level); pass if ``out == expected`` or ``out ==
    expected[0]``, or, for a sequence of tuples, ``[list(x) for x in out] == expected[0]``.
    ``compare="apps_fixed"``: tuples become lists at every depth, dict keys as in the data
    or int-converted, compared with ``expected`` and ``expected[0]``.
    """
    if compare == "apps_fixed":
        out = _tuples_to_lists(output)
        gts = [expected]
        if type(expected) is dict:
            try:
                gts.append(_int_keys(expected))
            except (ValueError, TypeError):
                pass
        if type(expected) is list and expected:
            gts.append(expected[0])
        return any(values_equal(out, g) for g in gts)
    gt = _expected_original(expected)
    out = list(output) if type(output) is tuple else output
    if values_equal(out, gt):
        return True
    if type(gt) is list and gt and values_equal(out, gt[0]):
        return True
    try:
        if type(out[0]) is tuple:
            return values_equal([list(x) for x in out], gt[0])
    except Exception:  # noqa: BLE001 - the original ignores any error here
        pass
    return False


_BUILTIN_NAMES = frozenset(dir(builtins))
