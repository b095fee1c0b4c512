"""MBPP, APPS and HumanEval: loaders, prompt formats, sandbox tests, and dataset builders.

Every benchmark becomes a list of :class:`CodeProblem` (prompt, sandbox ``Tests``, program
prefix, reference solutions, difficulty), which both the evaluation harness
(:mod:`llmrl.eval.harness`) and the RL dataset builders (``mbpp_dataset`` & co., registered in
``llmrl.data.registry``) use, so a model is trained and evaluated on exactly the same tests.

Data: ``source="auto"`` (the default) reads the first local copy that
:func:`llmrl.paths.find_local_data` finds ($LLMRL_DATA_DIR, ../shared/data next to the checkout,
the llmrl cache; read in place), else the Hugging Face hub (``google-research-datasets/mbpp`` /
``codeparrot/apps`` / ``openai/openai_humaneval``) through ``datasets``; ``"local"`` and
``"hub"`` force one of the two. Both go through the same row normalisers. The offline APPS
subsets (``file=mapcoder128`` / ``coderl5``) have no hub copy, so they are local only.

Prompt formats follow each benchmark's convention:

* MBPP (Austin et al., 2021): problem text + "Your code should satisfy these tests:" + the 3
  asserts.
* APPS (Hendrycks et al., 2021; ``generate_gpt_codes.py``): ``"\\nQUESTION:\\n" + question +
  "\\n" + starter code + "\\nUse Standard Input format"`` (or ``"Use Call-Based format"``) +
  ``"\\nANSWER:\\n"``.
* HumanEval (Chen et al., 2021): the function signature and docstring; the completion is
  appended to it (``program_prefix``).

``style="instruct"`` adds a request for a fenced ```python block, for chat/instruct models
(the trainer's ``data.use_chat_template`` then wraps the text in the model's chat template).

>>> problems = load_mbpp("test")
>>> len(problems), problems[0].task_id
(500, 'mbpp/11')
"""
from __future__ import annotations

import ast
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from llmrl.paths import BENCHMARK_FILES, DataNotFoundError, load_hub_dataset, locate_data
from llmrl.sandbox.jobs import AssertTests, CallTests, StdioTests, Tests

__all__ = [
    "CodeProblem", "load_mbpp", "load_apps", "load_humaneval", "load_benchmark", "BENCHMARKS",
    "mbpp_dataset", "apps_dataset", "humaneval_dataset", "problems_to_dataset", "humaneval_tests",
    "mbpp_split_of", "APPS_DIFFICULTIES", "truncate_completion",
]

Style = Literal["completion", "instruct"]
Source = Literal["auto", "local", "hub"]
APPS_DIFFICULTIES = ("introductory", "interview", "competition")
INSTRUCT_SUFFIX = "\nWrite the complete Python solution in one ```python code block."
BENCHMARKS = ("mbpp", "apps", "humaneval")


@dataclass
class CodeProblem:
    """One benchmark problem, ready for generation (``prompt``) and judging (``tests``).

    ``program_prefix`` is put before the extracted completion (HumanEval: the prompt, since
    the completion is the function body). ``solutions`` are reference programs (complete
    completions: prefix + solution is a full program). ``difficulty`` is APPS's level."""

    task_id: str
    prompt: str
    tests: Tests
    program_prefix: str = ""
    solutions: list[str] = field(default_factory=list)
    difficulty: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The dataset row: what ``code_reward`` reads (``tests`` as a JSON string)."""
        return {"prompt": self.prompt, "task_id": self.task_id, "tests": json.dumps(self.tests.to_dict()),
                "program_prefix": self.program_prefix,
                "answer": self.solutions[0] if self.solutions else "",
                "difficulty": self.difficulty or ""}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist: pass an existing JSON Lines file")
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- MBPP
MBPP_HUB = "google-research-datasets/mbpp"
MBPP_SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}


def mbpp_split_of(task_id: int) -> str:
    """Standard MBPP split by task_id: 1-10 prompt (few-shot), 11-510 test, 511-600
    validation, 601-974 train.

    >>> [mbpp_split_of(i) for i in (1, 11, 511, 974)]
    ['prompt', 'test', 'validation', 'train']
    """
    for name, ids in MBPP_SPLITS.items():
        if task_id in ids:
            return name
    raise ValueError(f"MBPP task_id {task_id} is outside 1..974")


def mbpp_prompt(text: str, asserts: Sequence[str], style: Style = "completion") -> str:
    """MBPP prompt: the problem, then the tests the code must satisfy.

    >>> print(mbpp_prompt("Add two numbers.", ["assert add(1, 2) == 3"]))
    Add two numbers.
    Your code should satisfy these tests:
    assert add(1, 2) == 3
    <BLANKLINE>
    """
    text = text.strip() + "\nYour code should satisfy these tests:\n" + "\n".join(asserts) + "\n"
    return text + INSTRUCT_SUFFIX.lstrip("\n") + "\n" if style == "instruct" else text


def load_mbpp(split: str = "test", *, variant: Literal["full", "sanitized"] = "full", style: Style = "completion",
              source: Source = "auto", challenge_tests: bool = False) -> list[CodeProblem]:
    """MBPP problems of one standard split (``train``/``validation``/``test``/``prompt``/``all``).

    Args:
        variant: ``full`` (974 problems) or ``sanitized`` (427, hand-checked prompts).
        style: ``completion`` or ``instruct`` (asks for a fenced code block).
        source: ``auto`` (first local copy, else the hub), ``local`` or ``hub``
            (``google-research-datasets/mbpp``).
        challenge_tests: also judge with ``challenge_test_list`` (full variant; not standard).
    """
    if split not in (*MBPP_SPLITS, "all"):
        raise ValueError(f"MBPP split {split!r}: use one of {sorted(MBPP_SPLITS)} or 'all'")
    if variant not in ("full", "sanitized"):
        raise ValueError(f"MBPP variant {variant!r}: use 'full' or 'sanitized'")
    relative = BENCHMARK_FILES["mbpp"][0 if variant == "full" else 1]
    path = locate_data(relative, source=source, what="MBPP", hub=MBPP_HUB)
    if path is None:
        ds = load_hub_dataset(MBPP_HUB, variant, relative=relative, what="MBPP", source=source)
        rows = [r for s in ds.values() for r in s]
    elif variant == "full":
        rows = _read_jsonl(path)
    else:
        rows = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for r in sorted(rows, key=lambda r: int(r["task_id"])):
        tid = int(r["task_id"])
        if split != "all" and mbpp_split_of(tid) != split:
            continue
        asserts = list(r["test_list"])
        if variant == "full":
            text, setup = r["text"], r.get("test_setup_code") or ""
            if challenge_tests:
                asserts += list(r.get("challenge_test_list") or [])
        else:
            text, setup = r["prompt"], "\n".join(r.get("test_imports") or [])
        out.append(CodeProblem(task_id=f"mbpp/{tid}", prompt=mbpp_prompt(text, r["test_list"], style),
                               tests=AssertTests(asserts=asserts, setup_code=setup), solutions=[r["code"]],
                               meta={"variant": variant}))
    return out


# --------------------------------------------------------------------------- APPS
APPS_FILES = {"mapcoder128": "apps/apps_train_mapcoder128.jsonl", "coderl5": "apps/apps_train_coderl5.jsonl"}
APPS_HUB = "codeparrot/apps"


def apps_prompt(question: str, starter_code: str, call_based: bool, style: Style = "completion") -> str:
    """APPS prompt exactly as the original ``generate_gpt_codes.py`` builds it.

    >>> apps_prompt("Add.", "", False)
    '\\nQUESTION:\\nAdd.\\nUse Standard Input format\\nANSWER:\\n'
    """
    text = "\nQUESTION:\n" + question
    if starter_code:
        text += "\n" + starter_code
    text += "\nUse Call-Based format" if call_based else "\nUse Standard Input format"
    if style == "instruct":
        text += INSTRUCT_SUFFIX
    return text + "\nANSWER:\n"


def _as_text(x: Any) -> str:
    # Some APPS stdin cases store a list of lines instead of one string; the original harness
    # joins them with newlines.
    if isinstance(x, list):
        return "\n".join(str(v) for v in x)
    return str(x)


def apps_tests(input_output: str | dict) -> Tests:
    """APPS ``input_output`` as sandbox tests: call-based with ``fn_name``, else stdin/stdout."""
    io = json.loads(input_output) if isinstance(input_output, str) else input_output
    if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
        raise ValueError("APPS input_output must be a JSON object with 'inputs' and 'outputs'")
    if io.get("fn_name"):
        return CallTests(fn_name=io["fn_name"], inputs=[list(a) if isinstance(a, list) else [a] for a in io["inputs"]],
                         outputs=list(io["outputs"]))
    return StdioTests(inputs=[_as_text(x) for x in io["inputs"]], outputs=[_as_text(y) for y in io["outputs"]])


def load_apps(split: str = "train", *, file: str = "mapcoder128", difficulty: str | None = None,
              style: Style = "completion", source: Source = "auto") -> list[CodeProblem]:
    """APPS problems (stdin and call-based), with difficulty.

    Args:
        split: ``train`` or ``test``. The offline files hold only APPS *train* problems (see
            the data README); ``test`` comes from the hub (``auto`` or ``hub``).
        file: offline file, ``mapcoder128`` (128 problems with tests, no solutions) or
            ``coderl5`` (5 problems with reference solutions), or a path to a JSON Lines file
            in the same format or in the hub's format.
        difficulty: keep only ``introductory``, ``interview`` or ``competition``.
        source: ``auto`` (default), ``local`` or ``hub`` (``codeparrot/apps``, the whole
            split; ``file`` is then ignored). ``auto`` reads ``file`` locally for ``train`` (a
            named subset has no hub copy, so a missing one is an error, not a silent switch to
            the 5,000-problem hub split) and the hub for ``test``.
    """
    if difficulty is not None and difficulty not in APPS_DIFFICULTIES:
        raise ValueError(f"APPS difficulty {difficulty!r}: use one of {APPS_DIFFICULTIES}")
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"APPS: source={source!r}; use 'auto', 'local' or 'hub'")
    if source == "hub" or (source == "auto" and split != "train"):
        rows = list(load_hub_dataset(APPS_HUB, split=split, difficulties=["all"], trust_remote_code=True,
                                     relative=f"apps ({split} split)", what="APPS", source="hub"))
    else:
        if split != "train":
            raise ValueError(f"APPS split {split!r}: the offline files hold only APPS train problems; use "
                             "split='train', or source='auto'/'hub' (online) for the test split")
        if file in APPS_FILES:
            path = locate_data(APPS_FILES[file], source="local", what=f"APPS ({file})")
        else:
            path = Path(file).expanduser()
        rows = _read_jsonl(path)
    out = []
    for r in rows:
        if not r.get("input_output"):
            continue  # a few hub problems have no tests; they cannot be judged
        if difficulty is not None and r.get("difficulty") != difficulty:
            continue
        tests = apps_tests(r["input_output"])
        sols = r.get("solutions") or []
        if isinstance(sols, str):  # hub format: a JSON string
            sols = json.loads(sols) if sols.strip() else []
        starter = r.get("starter_code") or ""
        out.append(CodeProblem(
            task_id=f"apps/{r.get('split', split)}/{r['problem_id']}",
            prompt=apps_prompt(r["question"], starter, isinstance(tests, CallTests), style),
            tests=tests, solutions=list(sols), difficulty=r.get("difficulty"),
            meta={"io_format": "call" if isinstance(tests, CallTests) else "stdin"}))
    return out


# --------------------------------------------------------------------------- HumanEval
HUMANEVAL_HUB = "openai/openai_humaneval"


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(ast.Name(id=self.new, ctx=node.ctx), node) if node.id == self.old else node


def humaneval_tests(test: str, entry_point: str, prompt: str = "") -> AssertTests:
    """HumanEval's ``check(candidate)`` as sandbox asserts.

    When ``check``'s body is only ``assert`` statements (157 of 164 problems), each becomes
    its own assert with ``candidate`` renamed to the entry point; the other problems (loops,
    helpers inside ``check``) run ``check(entry_point)`` whole. Either way the sandbox's
    trusted judge runs the test code and only the entry point is the program's.

    Helper functions of the ``prompt`` that the tests use (``encode_cyclic`` in HumanEval/38,
    ``encode_shift`` in /50, ``poly`` in /32) go into the setup code, with the prompt's
    imports: the judge then uses the data set's own definitions, so a completion that
    redefines the helper (``def encode_cyclic(s): return s``) cannot make the test trivial.
    """
    module = ast.parse(test)
    check = next((s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check"), None)
    if check is None:
        raise ValueError("HumanEval test has no check(candidate) function")
    param = check.args.args[0].arg if check.args.args else "candidate"
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    rest = ast.unparse([s for s in module.body if s is not check])
    helpers = _prompt_helpers(prompt, entry_point, test)
    if body and all(isinstance(s, ast.Assert) for s in body):
        asserts = [ast.unparse(_Rename(param, entry_point).visit(s)) for s in body]
        return AssertTests(asserts=asserts, setup_code="\n".join(x for x in (helpers, rest) if x))
    return AssertTests(asserts=[f"check({entry_point})"], setup_code="\n".join(x for x in (helpers, test) if x))


def _prompt_helpers(prompt: str, entry_point: str, test: str) -> str:
    """The prompt's imports and those of its complete functions (not the entry point) that
    the test code names; '' when there are none."""
    if not prompt:
        return ""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    used = {n.id for n in ast.walk(ast.parse(test)) if isinstance(n, ast.Name)}
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name != entry_point and n.name in used]
    if not funcs:
        return ""
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return ast.unparse(imports + funcs)


def load_humaneval(split: str = "test", *, style: Style = "completion",
                   source: Source = "auto") -> list[CodeProblem]:
    """The 164 HumanEval problems (there is only a ``test`` split); ``source`` as for MBPP
    (hub: ``openai/openai_humaneval``)."""
    if split not in ("test", "all"):
        raise ValueError(f"HumanEval split {split!r}: HumanEval has only the 'test' split")
    relative = BENCHMARK_FILES["humaneval"][0]
    path = locate_data(relative, source=source, what="HumanEval", hub=HUMANEVAL_HUB)
    if path is None:
        rows = list(load_hub_dataset(HUMANEVAL_HUB, split="test", relative=relative, what="HumanEval", source=source))
    else:
        rows = _read_jsonl(path)
    out = []
    for r in rows:
        prompt = r["prompt"]
        if style == "instruct":
            text = ("Complete the following Python function.\n```python\n" + prompt + "```" + INSTRUCT_SUFFIX)
        else:
            text = prompt
        out.append(CodeProblem(task_id=r["task_id"], prompt=text, tests=humaneval_tests(r["test"], r["entry_point"], prompt),
                               program_prefix=prompt, solutions=[r["canonical_solution"]],
                               meta={"entry_point": r["entry_point"]}))
    return out


# Codex stop sequences (Chen et al., 2021, Sec. 2.3): a base model keeps writing after the
# function; what follows is cut before judging, as the HumanEval paper does.
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def truncate_completion(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut a plain (unfenced) completion at the first stop sequence; fenced ones are untouched.

    >>> truncate_completion("    return x\\n\\ndef other():\\n    pass")
    '    return x\\n'
    """
    if "```" in text:
        return text
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


# --------------------------------------------------------------------------- registry
def load_benchmark(name: str, split: str | None = None, **kwargs: Any) -> list[CodeProblem]:
    """``mbpp`` (default split test), ``apps`` (train: offline files) or ``humaneval`` (test)."""
    if name == "mbpp":
        return load_mbpp(split or "test", **kwargs)
    if name == "apps":
        return load_apps(split or "train", **kwargs)
    if name == "humaneval":
        return load_humaneval(split or "test", **kwargs)
    raise ValueError(f"unknown benchmark {name!r}; use one of {BENCHMARKS}")


def problems_to_dataset(problems: Sequence[CodeProblem], *, n: int | None = None, seed: int = 0, shuffle: bool = True):
    """A ``datasets.Dataset`` with the columns ``code_reward`` reads: prompt, tests (JSON),
    program_prefix, answer (first reference solution, for supervised warm starts), task_id,
    difficulty. Shuffled by ``seed`` so a capped ``n`` draws a random subset."""
    import random

    from datasets import Dataset

    rows = [p.row() for p in problems]
    if shuffle:
        random.Random(seed).shuffle(rows)
    if n is not None:
        rows = rows[:n]
    if not rows:
        raise ValueError("no problems left after filtering (split/difficulty); loosen the filters")
    return Dataset.from_list(rows)


def _dataset_split(split: str, mapping: dict[str, str]) -> str:
    return mapping.get(split, split)


def mbpp_dataset(*, split: str, n: int | None, seed: int, variant: str = "full", style: Style = "completion",
                 source: str = "auto"):
    """Registry builder (``data.name: mbpp``). The trainer's ``test`` split is MBPP's test
    split; ``train`` is MBPP's train split (601-974)."""
    return problems_to_dataset(load_mbpp(split, variant=variant, style=style, source=source), n=n, seed=seed)  # type: ignore[arg-type]


def apps_dataset(*, split: str, n: int | None, seed: int, file: str = "mapcoder128", difficulty: str | None = None,
                 style: Style = "completion", source: str = "auto", test_file: str | None = "coderl5"):
    """Registry builder (``data.name: apps``). Offline only APPS train problems exist, so the
    trainer's ``test`` split reads ``test_file`` (default the 5 CodeRL problems) unless
    ``source: hub`` (or ``auto`` with ``test_file: null``: APPS's test split from the hub)."""
    if split != "train" and (source == "local" or (source == "auto" and test_file is not None)):
        if test_file is None:
            raise ValueError("data.args.test_file: the offline APPS files hold only train problems; name a "
                             "file for held-out evaluation or use source: hub")
        return problems_to_dataset(load_apps("train", file=test_file, difficulty=difficulty, style=style,
                                             source="local"), n=n, seed=seed)
    return problems_to_dataset(load_apps(split, file=file, difficulty=difficulty, style=style, source=source),  # type: ignore[arg-type]
                               n=n, seed=seed)


def humaneval_dataset(*, split: str, n: int | None, seed: int, style: Style = "completion", source: str = "auto"):
    """Registry builder (``data.name: humaneval``): evaluation only (every split is HumanEval's test)."""
    return problems_to_dataset(load_humaneval("test", style=style, source=source), n=n, seed=seed)  # type: ignore[arg-type]
