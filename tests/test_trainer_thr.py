"""THR inside the RL trainer (spec docs/thr.md): p = 0 is plain GRPO bit for bit,
p != 0 logs its metrics and inspect dump, and THR works with LoRA, with prompt groups split
across micro-batches and with the GSPO-token loss.

The trainer has two THR paths and each test runs both where it matters: "old_forward" (several
epochs or minibatches, or a batch over several micro-batches: THR reads the hidden states of the
old-policy pass, micro-batch by micro-batch) and "fused" (one epoch, one minibatch, one
micro-batch: THR reads the update forward's own hidden states, no old-policy pass).

The THR math itself is tested in tests/test_thr.py; here only the trainer wiring is. All runs
use the untrained tiny model with ``length_reward`` (longer completion = higher reward), so
almost every group has reward variance and therefore correct responses (reward == group max >
group min): THR is active, and a test that compares "THR on" with "off" is not vacuous.
"""
import json
from pathlib import Path

import pytest
import torch

from llmrl.config.load import RecipeError, validate_recipe
from llmrl.trainer import step as step_phases
from llmrl.trainer.loop import rl_step, setup, train


@pytest.fixture(autouse=True)
def one_torch_thread():
    # The tiny model gains nothing from intra-op threads, and on a shared 2-core host two threads
    # per process spin against each other: this file took 4 min with torch's default threads
    # on a loaded host and 20 s with one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


THR_KEYS = ("thr/dominant_frac", "thr/pos_frac", "thr/neg_frac", "thr/tau", "thr/abs_mean", "thr/time_s")


def recipe(out: Path, token_weighting: dict, **sections) -> dict:
    raw = {
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "arithmetic", "train_size": 256, "eval_size": 16},
        "rollout": {"num_generations": 4, "max_completion_length": 6, "max_prompt_length": 32},
        "rewards": [{"name": "reward_fixtures:length_reward"}],
        # 2 epochs x 2 minibatches: THR's token advantages must stay fixed across PPO mini-epochs.
        "algorithm": {"epochs": 2, "num_minibatches": 2, "token_weighting": token_weighting},
        "trainer": {"steps": 3, "prompts_per_step": 8, "micro_batch_size": 32, "lr": 1e-3, "seed": 3,
                    "output_dir": str(out), "eval_every": 0, "checkpoint_every": 0},
        "logging": {"progress": False, "tensorboard": False, "plot": False, "samples_per_step": 0},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def one_step(out: Path, token_weighting: dict, **sections) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor]:
    """Metrics of trainer step 1, the policy weights after it, and the [N, C] token advantages
    the update used (recorded from the trainer's own token-weighting call)."""
    run, state = setup(validate_recipe(recipe(out, token_weighting, **sections)))
    seen: list[torch.Tensor] = []
    apply = run.weighting.apply

    def recording_apply(*args, **kwargs):
        adv_tok, stats = apply(*args, **kwargs)
        seen.append(adv_tok.clone())
        return adv_tok, stats

    run.weighting.apply = recording_apply
    old_passes = []
    real_old_forward = step_phases.old_policy_forward

    def counting_old_forward(*args, **kwargs):
        old_passes.append(1)
        return real_old_forward(*args, **kwargs)

    step_phases.old_policy_forward = counting_old_forward
    try:
        m = rl_step(run, state, 1)
    finally:
        step_phases.old_policy_forward = real_old_forward
        run.logger.close()
    assert len(seen) == 1
    m["test/old_forward_ran"] = bool(old_passes)
    return m, {k: v.detach().clone() for k, v in run.policy.state_dict().items()}, seen[0]


# The two THR paths (module docstring), as recipe sections; with 8 prompts x 4 samples = 32 rows.
PATHS = {
    "old_forward": {"algorithm": {"epochs": 2, "num_minibatches": 2}},  # also: THR fixed across mini-epochs
    "fused": {"algorithm": {"epochs": 1, "num_minibatches": 1}, "trainer": {"micro_batch_size": 32}},
}


def on_path(path: str, **sections) -> dict:
    out = {name: dict(values) for name, values in PATHS[path].items()}
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("policy_loss", ["ppo_clip", "gspo_token"])
def test_p_zero_reweight_is_plain_grpo_bit_for_bit(tmp_path, policy_loss, path):
    sections = on_path(path, algorithm={"policy_loss": policy_loss})
    m_none, w_none, a_none = one_step(tmp_path / "none", {"type": "none"}, **sections)
    m_thr, w_thr, a_thr = one_step(tmp_path / "thr0", {"type": "thr", "p": 0.0, "mode": "reweight"}, **sections)
    assert m_thr["test/old_forward_ran"] == (path == "old_forward"), "the recipe did not select the THR path under test"
    # Not vacuous: THR ran on this batch and found dominant tokens, which p = 0 leaves alone.
    assert m_thr["thr/p"] == 0.0 and m_thr["thr/dominant_frac"] > 0 and m_thr["thr/abs_mean"] > 0
    assert m_none["reward/zero_variance_frac"] < 1
    # Exact equality (spec: "With p = 0 and mode reweight the loss must equal plain GRPO exactly").
    for k in ("loss/policy", "loss/clip_frac", "loss/ratio_mean", "loss/grad_norm", "reward/mean"):
        assert m_thr[k] == m_none[k], k
    assert torch.equal(a_thr, a_none)
    assert differing(w_none, w_thr) == []
    # The same step with p = 0.5 does change the update, so the comparison above can fail.
    m_half, w_half, a_half = one_step(tmp_path / "thr5", {"type": "thr", "p": 0.5}, **sections)
    assert not torch.equal(a_half, a_none)
    assert m_half["loss/policy"] != m_none["loss/policy"]
    assert differing(w_none, w_half), f"p=0.5 with {policy_loss} left every weight as plain GRPO's"


def test_p_half_logs_thr_metrics_and_inspect_dump_renders(tmp_path):
    from typer.testing import CliRunner

    from llmrl.cli import app

    out = tmp_path / "run"
    cfg = validate_recipe(recipe(out, {"type": "thr", "p": 0.5, "inspect_every": 2},
                                 algorithm={"epochs": 1, "num_minibatches": 1}))
    train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert set(THR_KEYS) <= r.keys(), sorted(set(THR_KEYS) - r.keys())
        assert r["thr/p"] == 0.5
        for k in ("thr/dominant_frac", "thr/pos_frac", "thr/neg_frac"):
            assert 0.0 <= r[k] <= 1.0, (k, r[k])
        assert r["thr/pos_frac"] + r["thr/neg_frac"] <= 1.0 + 1e-9
        assert r["thr/tau"] >= 0.0 and r["thr/abs_mean"] >= 0.0 and r["thr/time_s"] >= 0.0
        assert r["perf/token_weighting_s"] >= 0.0
    assert any(r["thr/dominant_frac"] > 0 for r in steps)

    samples = out / "thr_samples.jsonl"
    records = [json.loads(x) for x in samples.read_text().splitlines()]
    assert records and {r["step"] for r in records} == {2}  # inspect_every=2 over steps 1..3
    resp = records[0]["responses"][0]
    assert len(resp["tokens"]) == len(resp["thr"]) == len(resp["dominant"]) > 0
    assert any(r["correct"] for rec in records for r in rec["responses"])

    html = tmp_path / "x.html"
    res = CliRunner().invoke(app, ["thr", "inspect", "--samples", str(samples), "--out", str(html)])
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "step 2" in page and 'class="t' in page


@pytest.mark.parametrize("path", list(PATHS))
def test_thr_with_lora_updates_only_adapters(tmp_path, path):
    from llmrl.models.load import load_model_and_tokenizer

    m, w, _ = one_step(tmp_path / "lora", {"type": "thr", "p": 0.5}, **on_path(path, model={"lora": {"r": 4, "alpha": 8}}))
    assert m["test/old_forward_ran"] == (path == "old_forward")
    assert m["thr/dominant_frac"] > 0 and torch.isfinite(torch.tensor(m["loss/policy"]))
    assert any("lora_B" in k and w[k].abs().sum() > 0 for k in w), "lora_B must move away from its zero init"
    base = load_model_and_tokenizer("tiny://arithmetic")[0].state_dict()
    for k, v in w.items():
        if "lora_" not in k:
            assert torch.equal(v, base[k.replace("base_model.model.", "").replace(".base_layer", "")]), k


def test_group_split_across_micro_batches_gives_the_same_thr(tmp_path):
    # G = 4 and micro_batch_size = 3: micro-batches [0..2], [3..5], ... cut through every group, so
    # the collector must assemble each group's anchors from several micro-batches. Reference: 16
    # (groups whole, same old-forward path) and 32 (one micro-batch: the fused path).
    tw = {"type": "thr", "p": 0.5}
    one = {"algorithm": {"epochs": 1, "num_minibatches": 1}}
    m_split, _, a_split = one_step(tmp_path / "split", tw, trainer={"micro_batch_size": 3}, **one)
    m_whole, _, a_whole = one_step(tmp_path / "whole", tw, trainer={"micro_batch_size": 16}, **one)
    m_fused, _, a_fused = one_step(tmp_path / "fused", tw, trainer={"micro_batch_size": 32}, **one)
    assert m_split["test/old_forward_ran"] and m_whole["test/old_forward_ran"] and not m_fused["test/old_forward_ran"]
    assert m_whole["thr/dominant_frac"] > 0
    # Same rollouts (same seed), so the token advantages must agree up to float summation order;
    # which tokens are dominant and the sign of their THR must agree exactly.
    for m, a in ((m_split, a_split), (m_fused, a_fused)):
        torch.testing.assert_close(a, a_whole, rtol=1e-5, atol=1e-6)
        for k in ("thr/dominant_frac", "thr/pos_frac", "thr/neg_frac"):
            assert m[k] == m_whole[k], k
        for k in ("thr/tau", "thr/abs_mean", "loss/policy", "loss/grad_norm"):
            assert m[k] == pytest.approx(m_whole[k], rel=1e-4), k
    # (Weights are not compared: Adam's first step turns float noise in a near-zero gradient
    # into an update of up to lr, so they are not a fair equality check.)


def test_thr_with_sequence_level_gspo_is_rejected_at_load(tmp_path):
    with pytest.raises(RecipeError, match="gspo_token"):
        validate_recipe(recipe(tmp_path, {"type": "thr", "p": 0.5}, algorithm={"policy_loss": "gspo"}))
