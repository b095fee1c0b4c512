"""Look at THR: which tokens of a group help or hurt its correct responses (``llmrl thr inspect``).

The trainer calls :func:`thr_inspect_records` on a step's tensors and appends the records to a
jsonl file (:func:`write_thr_inspect_jsonl`); ``llmrl thr inspect --samples FILE.jsonl --out
thr.html`` renders them with :func:`render_thr_html` into one self-contained HTML page.

Record format (one JSON object per line, one line per prompt group)::

    {"step": 12,                    # trainer step (int or null)
     "group": 3,                    # group id
     "prompt": "<|user|>1+1=...",   # prompt text (str, may be "")
     "tau": 0.25,                   # the group's dominance threshold (float or null)
     "responses": [                 # the group's responses, in batch order
        {"tokens": ["2", "<eos>"],  # completion tokens as text, one per completion position
         "thr": [0.31, -0.02],      # THR_{j,k} per token (0 for tokens the policy did not generate)
         "dominant": [true, false], # dominant token (reweighted by thr_token_advantages)
         "scored": [true, true],    # token_mask: policy-generated (False: tool / environment text)
         "reward": 1.0, "advantage": 0.87, "correct": true}]}
"""
from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from llmrl.algorithms.thr import ThrScores

__all__ = ["read_thr_inspect_jsonl", "render_thr_html", "thr_inspect_records", "write_thr_inspect_jsonl"]

_RESPONSE_KEYS = ("tokens", "thr", "dominant", "reward", "advantage")


class _Decoder(Protocol):
    def decode(self, token_ids: list[int], /, *args: Any, **kwargs: Any) -> str: ...


def thr_inspect_records(
    *,
    tokenizer: _Decoder,
    completion_ids: Tensor,
    token_mask: Tensor,
    group_ids: Tensor,
    rewards: Tensor,
    advantages: Tensor,
    correct: Tensor,
    scores: ThrScores,
    dominant: Tensor,
    prompts: Sequence[str] | None = None,
    lengths: Tensor | None = None,
    taus: dict[int, float] | None = None,
    step: int | None = None,
    max_groups: int = 4,
) -> list[dict[str, Any]]:
    """Build inspect records (module docstring) for the first ``max_groups`` groups that carry THR.

    Args:
        tokenizer: anything with ``decode(list[int]) -> str`` (a HF tokenizer); tokens are decoded
            one at a time so each shows as the text it adds.
        completion_ids: ``[N, T]`` completion token ids.
        token_mask: ``[N, T]`` 1 on policy-generated tokens.
        group_ids: ``[N]`` prompt group of each response.
        rewards: ``[N]`` scalar rewards; advantages: ``[N]`` (or ``[N, T]``, first token shown).
        correct: ``[N]`` bool anchor set.
        scores: :func:`llmrl.algorithms.thr.token_hidden_reward` output.
        dominant: ``[N, T]`` bool from :func:`llmrl.algorithms.thr.dominant_tokens`.
        prompts: optional prompt text per response (the first of a group is used).
        lengths: optional ``[N]`` number of completion positions to show (tool output included);
            default: up to the last policy-generated token.
        taus: optional threshold per group id, shown in the header.
        step: trainer step written into each record.
        max_groups: how many groups to keep (active groups first, in batch order).
    """
    mask = token_mask.bool().cpu()
    gid = group_ids.cpu()
    active = scores.active.cpu()
    order: list[int] = []
    for g in gid.tolist():  # first appearance order; groups with THR before the others
        if g not in order:
            order.append(g)
    order = [g for g in order if bool(active[gid == g].any())] + [g for g in order if not bool(active[gid == g].any())]
    if lengths is None:
        pos = torch.arange(mask.shape[1])
        lengths = torch.where(mask, pos + 1, torch.zeros_like(pos)).max(-1).values  # [N]
    adv = advantages.cpu().float()
    adv = adv if adv.dim() == 1 else adv[:, 0]
    thr, dom = scores.thr.cpu().float(), dominant.bool().cpu()
    ids, rew, corr = completion_ids.cpu(), rewards.cpu().float(), correct.cpu()
    records: list[dict[str, Any]] = []
    for g in order[:max_groups]:
        rows = (gid == g).nonzero(as_tuple=True)[0].tolist()
        responses = []
        for j in rows:
            n = int(lengths[j])
            responses.append({
                "tokens": [tokenizer.decode([int(t)]) for t in ids[j, :n].tolist()],
                "thr": [round(float(x), 6) for x in thr[j, :n].tolist()],
                "dominant": [bool(x) for x in dom[j, :n].tolist()],
                "scored": [bool(x) for x in mask[j, :n].tolist()],
                "reward": float(rew[j]),
                "advantage": float(adv[j]),
                "correct": bool(corr[j]),
            })
        records.append({
            "step": step,
            "group": int(g),
            "prompt": prompts[rows[0]] if prompts is not None else "",
            "tau": None if taus is None or int(g) not in taus else float(taus[int(g)]),
            "responses": responses,
        })
    return records


def write_thr_inspect_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Append records to a jsonl file (one group per line)."""
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_thr_inspect_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate inspect records; errors name the line and the missing key."""
    groups: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e}); each line must be one THR inspect record.") from e
            _validate(rec, where=f"{path}:{lineno}")
            groups.append(rec)
    return groups


def _validate(rec: Any, *, where: str) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("responses"), list):
        raise ValueError(f"{where}: a THR inspect record must be an object with a 'responses' list "
                         f"(see llmrl.algorithms.thr_html for the format).")
    for i, r in enumerate(rec["responses"]):
        missing = [k for k in _RESPONSE_KEYS if k not in r]
        if missing:
            raise ValueError(f"{where}: response {i} lacks {missing}; write records with thr_inspect_records().")
        if not len(r["tokens"]) == len(r["thr"]) == len(r["dominant"]):
            raise ValueError(f"{where}: response {i} has {len(r['tokens'])} tokens but {len(r['thr'])} thr values "
                             f"and {len(r['dominant'])} dominant flags; they must align one per token.")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { font-size: 1.05em; margin: 1.6em 0 .3em; }
.prompt { white-space: pre-wrap; font-family: ui-monospace, monospace; background: #f4f4f4; padding: .4em; }
.resp { margin: .5em 0; padding: .3em .5em; border-left: 4px solid #bbb; }
.resp.correct { border-left-color: #2a2; }
.meta { font-size: .85em; color: #555; margin-bottom: .2em; }
.toks { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.7; }
.t { border-radius: 2px; }
.t.dom { font-weight: bold; text-decoration: underline; }
.t.env { color: #999; font-style: italic; }
.legend span { padding: 0 .4em; margin-right: .5em; }
"""


def _token_span(text: str, value: float, dominant: bool, scored: bool, scale: float) -> str:
    shown = text.replace("\n", "\u23ce\n")  # show newlines, keep the line break
    title = f"THR={value:+.4g}" + (" dominant" if dominant else "") + ("" if scored else " (not policy-generated)")
    cls = "t" + (" dom" if dominant else "") + ("" if scored else " env")
    style = ""
    if scored and value != 0.0 and scale > 0:
        alpha = min(abs(value) / scale, 1.0) * 0.85 + 0.05
        rgb = "40,167,69" if value > 0 else "220,53,69"  # green helps correct responses, red hurts
        style = f' style="background: rgba({rgb},{alpha:.3f})"'
    return f'<span class="{cls}" title="{html.escape(title)}"{style}>{html.escape(shown)}</span>'


def render_thr_html(groups: list[dict[str, Any]], *, title: str = "THR inspect") -> str:
    """Render inspect records as one self-contained HTML page (inline CSS, no scripts).

    Tokens are green where THR > 0 (the token's update helps the group's correct responses) and
    red where THR < 0, with intensity proportional to |THR| / max |THR| of the group; dominant
    tokens are bold and underlined; tokens the policy did not generate are grey. Every response
    shows its reward, advantage and whether it is correct. All text is HTML-escaped.

    >>> page = render_thr_html([{"group": 0, "responses": [{"tokens": ["<a>", "b"], "thr": [0.5, -0.1],
    ...     "dominant": [True, False], "reward": 1.0, "advantage": 0.7, "correct": True}]}])
    >>> "&lt;a&gt;" in page and "<a>" not in page and 'class="t dom"' in page
    True
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="legend"><span style="background: rgba(40,167,69,.6)">THR &gt; 0: helps the correct responses</span>'
        '<span style="background: rgba(220,53,69,.6)">THR &lt; 0: hurts them</span>'
        '<span class="t dom">dominant (reweighted)</span><span class="t env">not policy-generated</span></p>',
    ]
    for i, grp in enumerate(groups):
        _validate(grp, where=f"group #{i}")
        responses = grp["responses"]
        scale = max((abs(float(v)) for r in responses for v in r["thr"]), default=0.0)
        head = [f"group {html.escape(str(grp.get('group', i)))}"]
        if grp.get("step") is not None:
            head.append(f"step {html.escape(str(grp['step']))}")
        if grp.get("tau") is not None:
            head.append(f"tau = {float(grp['tau']):.4g}")
        head.append(f"max |THR| = {scale:.4g}")
        parts.append(f"<h2>{' &middot; '.join(head)}</h2>")
        if grp.get("prompt"):
            parts.append(f'<div class="prompt">{html.escape(str(grp["prompt"]))}</div>')
        for j, r in enumerate(responses):
            scored = r.get("scored") or [True] * len(r["tokens"])
            ok = bool(r.get("correct", False))
            meta = (f"response {j} &middot; reward {float(r['reward']):.4g} &middot; advantage "
                    f"{float(r['advantage']):+.4g}" + (" &middot; correct" if ok else ""))
            toks = "".join(
                _token_span(str(t), float(v), bool(d), bool(sc), scale)
                for t, v, d, sc in zip(r["tokens"], r["thr"], r["dominant"], scored)
            )
            parts.append(f'<div class="resp{" correct" if ok else ""}"><div class="meta">{meta}</div>'
                         f'<div class="toks">{toks}</div></div>')
    if not groups:
        parts.append("<p>No groups to show.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
