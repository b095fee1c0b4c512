"""DP-SGD (llmrl.privacy): accounting of per-group noise against Opacus' own accountant, the budget
filter under arbitrary controller actions, one ledger per run, adapters that really train, corpus
errors, and kill -9 + resume keeping the ledger exact. Real Opacus, real tiny models."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer

from llmrl.config.load import load_recipe
from llmrl.privacy.budget import Budget, BudgetExhausted, epsilon_of
from llmrl.privacy.dp_optimizer import GroupDPOptimizer, effective_noise
from llmrl.sft.train import train_sft

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "tiny" / "private_sft.yaml"
# a very small run: 1-layer width-32 model, 48 rows, 8-row Poisson batches, 6 steps
SMALL = ["model.name_or_path=tiny://notes?hidden_size=32&num_layers=1", "data.args={size: 48, test_size: 8, "
         "num_canaries: 1, canary_repeats: 2}", "sft.batch_size=8", "sft.micro_batch_size=4", "sft.epochs=1",
         "sft.max_length=48", "sft.eval_size=8", "sft.eval_every=2", "sft.exposure_candidates=20",
         "privacy.sac.interval=2", "privacy.sac.updates_per_interval=2", "privacy.sac.hidden=16",
         "logging.progress=false", "logging.plot=false", "trainer.checkpoint_every=2"]


def _model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    return model, x, y


def _dp_step(opt, module, x, y):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(module(x), y).backward()
    opt.step()


def test_equal_groups_account_and_noise_like_opacus_flat_clipping():
    """G equal groups (C/sqrt(G), sigma*sqrt(G)) are flat clipping at (C, sigma): same noise std per
    coordinate and the accountant records sigma_eff = sigma. Opacus' own DPOptimizer is the reference."""
    sigma, C, steps = 0.9, 1.0, 5
    eps = {}
    for kind in ("opacus", "groups"):
        model, x, y = _model_and_batch()
        engine = PrivacyEngine(accountant="rdp")
        module = GradSampleModule(model)
        base = torch.optim.SGD(model.parameters(), lr=0.1)
        if kind == "opacus":
            opt = DPOptimizer(base, noise_multiplier=sigma, max_grad_norm=C, expected_batch_size=16)
        else:
            layers = [list(model[0].parameters()), list(model[2].parameters())]
            G = len(layers)
            opt = GroupDPOptimizer(base, groups=layers, clips=[C / math.sqrt(G)] * G,
                                   sigmas=[sigma * math.sqrt(G)] * G, expected_batch_size=16)
            assert opt.noise_multiplier == pytest.approx(sigma)
            # noise std of each group = sigma_g * C_g = sigma * C, as flat clipping adds
            assert [s * c for s, c in zip(opt.sigmas, opt.clips)] == pytest.approx([sigma * C] * G)
        opt.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=0.1))
        for _ in range(steps):
            _dp_step(opt, module, x, y)
        eps[kind] = engine.get_epsilon(1e-5)
        assert engine.accountant.history[0][0] == pytest.approx(sigma)
    assert eps["groups"] == pytest.approx(eps["opacus"], rel=1e-9)


def test_groups_at_the_same_sigma_are_accounted_at_sigma_over_sqrt_g():
    model, x, y = _model_and_batch()
    engine = PrivacyEngine(accountant="rdp")
    module = GradSampleModule(model)
    groups = [[p] for p in model.parameters()]  # 4 groups
    opt = GroupDPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), groups=groups, clips=[1.0] * 4,
                           sigmas=[2.0] * 4, expected_batch_size=16)
    opt.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=0.1))
    _dp_step(opt, module, x, y)
    assert engine.accountant.history == [(pytest.approx(1.0), 0.1, 1)]   # 2 / sqrt(4)
    assert effective_noise([1.0, 2.0]) == pytest.approx((1 + 0.25) ** -0.5)


def test_one_group_clips_and_noises_exactly_like_opacus():
    """Same generator seed: GroupDPOptimizer with one group yields Opacus' DPOptimizer's gradient."""
    grads = []
    for cls in (DPOptimizer, GroupDPOptimizer):
        model, x, y = _model_and_batch()
        module = GradSampleModule(model)
        base = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(3)
        kw = dict(expected_batch_size=16, generator=gen)
        opt = (cls(base, noise_multiplier=0.7, max_grad_norm=0.05, **kw) if cls is DPOptimizer else
               cls(base, groups=[list(model.parameters())], clips=[0.05], sigmas=[0.7], **kw))
        _dp_step(opt, module, x, y)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


@settings(max_examples=12, deadline=None)
@given(actions=st.lists(st.floats(0.05, 30.0), min_size=1, max_size=6),
       target=st.sampled_from([1.0, 4.0, 8.0]), q=st.sampled_from([0.01, 0.05]), K=st.integers(1, 15))
def test_filter_never_lets_epsilon_exceed_the_target(actions, target, q, K):
    """Whatever noise a controller proposes each interval (random, within or outside bounds), the
    run's real Opacus RDP accountant ends at or under the target, or the run stops before it would."""
    T = K * len(actions)
    budget = Budget(target, 1e-5, q, T, sigma_max=40.0)
    try:
        budget.check_feasible()
    except ValueError:
        return
    acc = RDPAccountant()
    for proposed in actions:
        try:
            factor = budget.filter(acc.history, proposed, K)
        except BudgetExhausted:
            break
        assert factor >= 1.0
        for _ in range(K):
            acc.step(noise_multiplier=proposed * factor, sample_rate=q)
        assert acc.get_epsilon(1e-5) <= target  # also mid-run
    assert acc.get_epsilon(1e-5) <= target


def test_filter_raises_noise_only_when_needed_and_stops_when_nothing_fits():
    b = Budget(4.0, 1e-5, 0.05, 100, sigma_max=5.0)
    assert b.filter([], 50.0, 10) == 1.0            # plenty of noise: untouched
    f = b.filter([], 0.2, 10)
    assert f > 1.0 and b.projected([], 0.2 * f, 10) <= 4.0
    with pytest.raises(BudgetExhausted, match="budget is spent"):
        b.filter([(0.3, 0.05, 60)], 1.0, 10)       # the ledger already spent more than the target
    with pytest.raises(ValueError, match="privacy.sigma_max"):
        Budget(0.1, 1e-5, 0.5, 1000, sigma_max=1.0).check_feasible()


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sac") / "run"
    created = []
    original = PrivacyEngine.__init__

    def counting(self, *a, **k):
        created.append(self)
        original(self, *a, **k)

    PrivacyEngine.__init__ = counting
    try:
        cfg = load_recipe(RECIPE, SMALL + [f"trainer.output_dir={out}", "privacy.target_epsilon=4.0"])
        summary = train_sft(cfg)
    finally:
        PrivacyEngine.__init__ = original
    return summary, created, out


def test_private_sac_run_stays_in_budget_with_one_ledger(sac_run):
    summary, created, out = sac_run
    p = summary["privacy"]
    assert len(created) == 1                                      # one PrivacyEngine, one ledger, per run
    assert sum(h[2] for h in p["ledger"]) == summary["total_steps"] == summary["steps"]
    assert epsilon_of(p["ledger"], 1e-5) == pytest.approx(p["epsilon"])   # Opacus' accountant on the ledger
    assert 0 < p["epsilon"] <= 4.0
    assert len(p["groups"]) > 1 and all(len(t["clips"]) == len(p["groups"]) for t in p["trajectory"])
    assert (out / "sac_policy.pt").is_file() and (out / "final").is_dir()
    assert set(summary["attacks"]) == {"fine_tuned", "base"}
    assert summary["curve"][-1]["val_loss"] < summary["curve"][0]["val_loss"]
    # the other side of the first-step check: the DP updates reached every adapter (LoRA B starts at 0)
    from safetensors.torch import load_file
    final = load_file(out / "final" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in final.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())


def test_sac_policy_warm_starts_a_later_run(sac_run):
    """The saved policy loads into a new run's controller (same groups), which then acts from interval one."""
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.privacy.engine import build_private

    _, _, out = sac_run
    cfg = load_recipe(RECIPE, SMALL + [f"privacy.sac.warm_start={out / 'sac_policy.pt'}"])
    model, _ = load_model_and_tokenizer(cfg.model.name_or_path, lora_r=8, lora_alpha=16, device="cpu")
    dp = build_private(cfg.privacy, model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1),
                       num_rows=48, batch_size=8, total_steps=6, seed=1)
    saved = torch.load(out / "sac_policy.pt", weights_only=True)["agent"]
    for k, v in saved["nets"]["actor"].items():
        torch.testing.assert_close(dp.controller.agent.actor.state_dict()[k], v)
    assert dp.controller.warmup == 0 and len(dp.controller.agent.buffer) == len(saved["buffer"]) > 0


def test_adapters_not_updated_are_caught(tmp_path):
    """The check after step one: a run whose trainable tensors cannot change (lr so small that
    float32 weights do not move) must fail loudly, not train silently."""
    from llmrl.sft.train import AdapterNotUpdated

    cfg = load_recipe(RECIPE, SMALL + [f"trainer.output_dir={tmp_path / 'r'}", "trainer.lr=1e-30",
                                       "trainer.optimizer=SGD"])
    with pytest.raises(AdapterNotUpdated, match="did not change in the first step"):
        train_sft(cfg)


def test_non_private_lora_run_passes_the_first_step_check(tmp_path):
    """Without DP noise LoRA's A gets an exactly-zero gradient in step one (B starts at 0), so it
    cannot move yet: that is not the opacus#820 symptom and must not stop a non-private run (the
    utility ceiling of bench/dp_utility.py). Its B adapters did move, and the run learned."""
    cfg = load_recipe(RECIPE, SMALL + [f"trainer.output_dir={tmp_path / 'r'}", "privacy=null",
                                       "sft.exposure_candidates=0"])
    summary = train_sft(cfg)
    assert "privacy" not in summary and summary["steps"] == summary["total_steps"]
    assert summary["curve"][-1]["val_loss"] < summary["curve"][0]["val_loss"]


@pytest.mark.parametrize("rows,match", [([{"body": "a note"}], "'text' is not a column"),
                                        ([{"text": "a note"}, {"text": "  "}], "empty or missing")])
def test_corpus_without_text_is_refused(tmp_path, rows, match):
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows * 5))
    cfg = load_recipe(RECIPE, SMALL + [f"trainer.output_dir={tmp_path / 'r'}", "data.name=jsonl",
                                       f"data.args={{path: {f}, test_fraction: 0.2}}"])
    with pytest.raises(ValueError, match=f"sft.text_column: .*{match}"):
        train_sft(cfg)


def test_cli_exits_2_on_a_corpus_without_its_text_column(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"body": "a note"}\n' * 5)
    sets = SMALL + [f"trainer.output_dir={tmp_path / 'r'}", "data.name=jsonl", f"data.args={{path: {f}}}"]
    proc = subprocess.run([sys.executable, "-m", "llmrl.cli", "train", str(RECIPE), *sum((["--set", s] for s in sets), [])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "sft.text_column: 'text' is not a column" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_kill_9_and_resume_keep_the_ledger_exact(tmp_path):
    """A run killed with SIGKILL after its step-4 checkpoint and resumed ends with the same ledger
    (and epsilon) as the same run uninterrupted."""
    sets = SMALL + ["sft.epochs=1.5", "sft.exposure_candidates=0"]  # 9 steps, checkpoints every 2

    def cmd(out, *extra):
        return [sys.executable, "-m", "llmrl.cli", "train", str(RECIPE), *extra,
                *sum((["--set", s] for s in sets + [f"trainer.output_dir={out}"]), [])]

    ref = subprocess.run(cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_0000004").is_dir():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its step-4 checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    res = subprocess.run(cmd(killed, "--resume"), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = (json.loads((d / "summary.json").read_text())["privacy"] for d in (tmp_path / "ref", killed))
    assert b["ledger"] == a["ledger"] and b["epsilon"] == a["epsilon"] and b["trajectory"] == a["trajectory"]


def test_sac_zero_action_is_fixed_dp_sgd_and_the_noise_paces_the_budget(tmp_path):
    """The SAC hyper-policy acts relative to fixed DP-SGD: its zero action sets fixed's knobs (the
    groups' combined clip is fixed's C, the accounted noise is fixed's sigma) and, once a run has
    spent less (more) than fixed would have, the zero action's noise goes down (up) to finish on budget."""
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.privacy.controllers import Observation
    from llmrl.privacy.engine import build_private

    cfg = {c: load_recipe(RECIPE, SMALL + [f"privacy.controller={c}", "privacy.target_epsilon=4.0"]) for c in ("fixed", "sac")}
    dp = {}
    for c in ("fixed", "sac"):
        model, _ = load_model_and_tokenizer(cfg[c].model.name_or_path, lora_r=8, lora_alpha=16, device="cpu")
        dp[c] = build_private(cfg[c].privacy, model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                              lr=0.1), num_rows=48, batch_size=8, total_steps=6, seed=0)
    fixed, sac = dp["fixed"].controller.knobs, dp["sac"].controller
    G = sac.num_groups
    zero = torch.zeros(G + 1)
    knobs = sac.knobs_of(zero, dp["sac"].pace_noise())
    assert G > 1 and dp["sac"].pace_noise() == dp["fixed"].baseline_sigma   # empty ledger: on fixed's schedule
    assert math.sqrt(sum(c * c for c in knobs.clips)) == pytest.approx(fixed.clips[0], rel=1e-12)
    assert effective_noise(knobs.sigmas) == pytest.approx(fixed.sigmas[0], rel=1e-12)
    assert knobs.clips == sac.baseline.clips and knobs.sigmas == sac.baseline.sigmas
    # the untrained policy explores close to the zero action
    obs = Observation(progress=0.0, epsilon_frac=0.0, noisy_norms=[1.0] * G, noisy_norms_ema=[1.0] * G,
                      update_ratio=0.0, val_loss=1.0, val_loss_start=1.0)
    assert sac.agent.act(sac.features(obs)).abs().max() < 0.5
    # a full action moves each knob by at most action_range, inside the configured bounds
    far = sac.knobs_of(torch.ones(G + 1))
    assert far.clips == pytest.approx([2.0 * c for c in sac.baseline.clips])
    assert effective_noise(far.sigmas) == pytest.approx(2.0 * fixed.sigmas[0])
    # pacing: after 3 of 6 steps at more (less) noise than fixed, the reference noise drops (rises)
    b = dp["sac"].baseline_sigma
    # and no interval may spend so much that the rest of the run needs more than action_range x fixed's noise
    assert dp["sac"].budget.sigma_max == pytest.approx(2.0 * b) and dp["fixed"].budget.sigma_max == 20.0
    for sigma, below in ((2 * b, True), (0.97 * b, False)):
        dp["sac"].engine.accountant.history[:] = [(sigma, 8 / 48, 3)]
        pace = dp["sac"].pace_noise()
        assert (pace < b) if below else (pace > b)
        assert effective_noise(sac.knobs_of(zero, pace).sigmas) == pytest.approx(pace, rel=1e-12)  # the zero action follows it
        # the rest at the pace noise lands on the budget: within it, and close to it
        assert 3.9 <= epsilon_of([(sigma, 8 / 48, 3), (pace, 8 / 48, 3)], 1e-5) <= 4.0
