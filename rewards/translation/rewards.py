"""The translation rewards (TRL's contract; registered as ``translation_exemplar``,
``translation_metric`` and ``translation_language``).

Every one reads the columns ``source``, ``reference``, ``exemplar``, ``src_lang`` and
``tgt_lang`` where the data set has them, extracts the translation with the think-then-translate
format check (``require_think``), and runs the hacking gates (``gates``) before scoring: a
broken format or a failed gate scores the reward's lowest value, so no hack beats an honest
attempt. Per-sample details (``format``, ``gate``, ``verdict``, ``judge``, ``error``) go to the
samples log.

Recipe::

    rewards:
      - name: translation_exemplar
        args:
          backend: openai                    # metric (default) | openai | hf
          backend_args: {base_url: http://localhost:8000/v1, model: Qwen/Qwen2.5-72B-Instruct,
                         max_concurrency: 32, cache_dir: runs/judge_cache}
          scale: verdict                     # verdict (better/equal/worse) | grade (1-5)
          verdict_map: {better: 1.0, equal: 0.5, worse: 0.0}
          gates: {length_ratio: [0.5, 1.6]}
"""
from __future__ import annotations

import logging
from typing import Any

from llmrl.rewards.translation.format import extract_translation
from llmrl.rewards.translation.gates import Gates, gate_failure
from llmrl.rewards.translation.judges import LABELS, Comparison, make_judge
from llmrl.rewards.translation.metrics import segment_metric
from llmrl.rewards.types import Scores, completion_text

log = logging.getLogger(__name__)

DEFAULT_VERDICT_MAP = {"better": 1.0, "equal": 0.5, "worse": 0.0}
DEFAULT_GRADE_MAP = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}
COLUMNS = ("source", "reference", "exemplar", "src_lang", "tgt_lang")


def _value_map(scale: str, verdict_map: dict | None) -> dict:
    if verdict_map is None:
        return dict(DEFAULT_GRADE_MAP if scale == "grade" else DEFAULT_VERDICT_MAP)
    want = set(range(1, 6)) if scale == "grade" else set(LABELS)

    def key(k):
        try:
            return int(k) if scale == "grade" else str(k)
        except ValueError:
            return k
    got = {key(k) for k in verdict_map}
    if got != want:
        raise ValueError(f"rewards.args.verdict_map: keys {sorted(got, key=str)} must be exactly "
                         f"{sorted(want, key=str)} for scale {scale!r}")
    return {key(k): float(v) for k, v in verdict_map.items()}


def _rows(n: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
    return [{c: (columns[c][i] if columns.get(c) is not None else None) for c in COLUMNS} for i in range(n)]


def screen(completions, columns: dict[str, Any], *, require_think: bool, gates) -> tuple[list[str | None], list[dict]]:
    """Format check then gates for each completion: the translation (None = failed, scores the
    floor) and its details ({'format': 'broken'} or {'gate': 'source_copy'} ...)."""
    gate_set = Gates.of(gates)
    out: list[str | None] = []
    details: list[dict] = []
    for completion, row in zip(completions, _rows(len(completions), columns)):
        text = extract_translation(completion_text(completion), require_think=require_think)
        if text is None:
            out.append(None)
            details.append({"format": "broken"})
            continue
        why = None if gate_set is None else gate_failure(
            text, gates=gate_set, source=row["source"], tgt_lang=row["tgt_lang"], src_lang=row["src_lang"],
            reference=row["reference"], exemplar=row["exemplar"])
        out.append(None if why else text)
        details.append({"gate": why} if why else {})
    return out, details


async def exemplar_reward(prompts, completions, *, backend: str = "metric", backend_args: dict | None = None,
                          scale: str = "verdict", verdict_map: dict | None = None, prompt: str | None = None,
                          gates: dict | bool = True, require_think: bool = True, **columns) -> Scores:
    """ExTrans: a judge compares the policy's translation with the ``exemplar`` column for the
    same source; the verdict maps to the reward (default better 1.0, equal 0.5, worse 0.0; grades
    1-5 to 0, .25, .5, .75, 1). Format failures, failed gates and judge failures (a request that
    failed after retries, unparsable output; logged) score the map's lowest value. Rows without
    an exemplar score None (not applicable).

    >>> import asyncio
    >>> cols = dict(source=["two"], exemplar=["deux"], reference=["deux"], tgt_lang=["fr"])
    >>> asyncio.run(exemplar_reward(["two>"], ["<think>-</think>deux"], gates=False, **cols))
    [0.5]
    """
    values = _value_map(scale, verdict_map)
    floor = min(values.values())
    judge = make_judge(backend, scale=scale, prompt=prompt, **(backend_args or {}))
    texts, details = screen(completions, columns, require_think=require_think, gates=gates)
    rows = _rows(len(completions), columns)
    scores: list[float | None] = [floor if t is None else None for t in texts]
    todo = [i for i, t in enumerate(texts) if t is not None and rows[i]["exemplar"]]
    verdicts = await judge.judge([Comparison(source=rows[i]["source"] or "", candidate=texts[i],
                                             exemplar=rows[i]["exemplar"], reference=rows[i]["reference"],
                                             src_lang=rows[i]["src_lang"], tgt_lang=rows[i]["tgt_lang"])
                                  for i in todo])
    failed = 0
    for i, v in zip(todo, verdicts):
        details[i].update(verdict=v.label, judge=v.raw)
        if v.label is None or v.label not in values:
            failed += 1
            details[i]["error"] = v.error or f"verdict {v.label!r} not in the map"
            scores[i] = floor
        else:
            scores[i] = values[v.label]
    if failed:
        first = next(d["error"] for d in details if "error" in d)
        log.warning("translation_exemplar: %d of %d judge calls failed (scored %s); first: %s",
                    failed, len(todo), floor, first)
    return Scores(scores, details=details)


def metric_reward(prompts, completions, *, metric: str = "chrf", gates: dict | bool = True,
                  require_think: bool = True, **columns) -> Scores:
    """A reference metric of the translation, 0-1 (chrF / BLEU by sacrebleu with the target's
    tokenizer, COMET / CometKiwi when installed); 0 on a format failure or a failed gate. Rows
    without a reference score None (except CometKiwi, which needs none).

    >>> metric_reward(["two>"], ["deux"], require_think=False, gates=False, reference=["deux"])
    [1.0]
    """
    score = segment_metric(metric)
    texts, details = screen(completions, columns, require_think=require_think, gates=gates)
    out: list[float | None] = []
    for text, row, d in zip(texts, _rows(len(completions), columns), details):
        if text is None:
            out.append(0.0)
        elif not row["reference"] and metric != "cometkiwi":
            out.append(None)
        else:
            out.append(score(text, [row["reference"] or ""], row["source"], row["tgt_lang"]) / 100)
            d[metric] = out[-1]
    return Scores(out, details=details)


def language_reward(prompts, completions, *, gates: dict | bool | None = None, require_think: bool = True,
                    **columns) -> Scores:
    """The lightweight multilingual reward: 1.0 when the format holds and the translation is in
    the target language (and passes the other gates when ``gates`` turns them on), else 0.0.
    By default only the language gate runs."""
    gate_set = Gates.of(gates) if gates is not None else Gates(copy=False, length_ratio=None)
    texts, details = screen(completions, columns, require_think=require_think, gates=gate_set)
    return Scores([0.0 if t is None else 1.0 for t in texts], details=details)


# ---------------------------------------------------------------- recipe-load checks
def _problems(check) -> list[str]:
    try:
        check()
    except ValueError as exc:
        return [str(exc).removeprefix("rewards.args.")]
    return []


def _backend_args_problems(backend: str, backend_args: dict) -> list[str]:
    import inspect

    from llmrl.rewards.chat_client import ChatClient
    from llmrl.rewards.translation.judges import BACKENDS, ChatJudge

    if backend not in BACKENDS:
        return [f"backend: {backend!r} is not one of {sorted(BACKENDS)}"]
    takes = set(inspect.signature(BACKENDS[backend]).parameters) - {"prompt", "scale", "client_args"}
    if BACKENDS[backend] is ChatJudge:  # the rest goes to the client
        takes |= set(inspect.signature(ChatClient).parameters)
    unknown = sorted(set(backend_args) - takes)
    problems = [f"backend_args: unknown key(s) {unknown} for backend {backend!r}; allowed: {sorted(takes)}"] if unknown else []
    if backend == "metric" and "metric" in backend_args:
        problems += _problems(lambda: segment_metric(backend_args["metric"]))
    return problems


def check_exemplar_args(args: dict) -> list[str]:
    """What :func:`exemplar_reward` would refuse in these recipe args, found at recipe load."""
    from llmrl.rewards.translation.judges import SCALES, render_prompt

    scale = args.get("scale", "verdict")
    problems = [] if scale in SCALES else [f"scale: {scale!r} is not one of {SCALES}"]
    if not problems:
        problems += _problems(lambda: _value_map(scale, args.get("verdict_map")))
    problems += _backend_args_problems(args.get("backend", "metric"), dict(args.get("backend_args") or {}))
    if args.get("prompt") is not None:
        if args.get("backend", "metric") == "metric":
            problems.append("prompt: the metric backend uses no prompt; drop it or pick backend: openai / hf")
        else:
            problems += _problems(lambda: render_prompt(args["prompt"], Comparison(source="", candidate="", exemplar="")))
    problems += _problems(lambda: Gates.of(args.get("gates", True)))
    return problems


def check_metric_args(args: dict) -> list[str]:
    """What :func:`metric_reward` would refuse in these recipe args."""
    return _problems(lambda: segment_metric(args.get("metric", "chrf"))) + _problems(
        lambda: Gates.of(args.get("gates", True)))


def check_language_args(args: dict) -> list[str]:
    """What :func:`language_reward` would refuse in these recipe args."""
    return _problems(lambda: Gates.of(args.get("gates")))


exemplar_reward.check_args = check_exemplar_args  # type: ignore[attr-defined]
metric_reward.check_args = check_metric_args  # type: ignore[attr-defined]
language_reward.check_args = check_language_args  # type: ignore[attr-defined]
