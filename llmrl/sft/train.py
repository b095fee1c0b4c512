"""``task: sft``: supervised fine-tuning on a text corpus, private (DP-SGD) with a ``privacy`` section.

One step, private or not: draw a Poisson batch (each row with probability q = batch_size / N,
from a generator seeded by (seed, step), so a resumed run draws the same batches), split it into
micro-batches, backpropagate the per-sequence token-mean loss, then one optimizer step. With
privacy, every micro-batch but the last is clipped and accumulated without noise (Opacus'
skip-step, as BatchMemoryManager does) and the last adds the noise once; the accountant records
one step at rate q. Every K steps the controller's knobs pass the privacy filter first.

Checkpoints hold the adapters, the optimizer, the ledger (accountant history), the controller
(SAC networks and replay buffer) and the RNG together, so kill -9 + ``--resume`` continues with
exactly the ledger of the checkpoint's step."""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from llmrl.config.schema import RecipeConfig
from llmrl.data.registry import build_dataset
from llmrl.models.load import load_model_and_tokenizer, save_final
from llmrl.progress import progress
from llmrl.sft.corpus import corpus_texts, pad_batch, sequence_nll, tokenize
from llmrl.trainer.checkpoint import load_latest, load_trainable, save_checkpoint, set_rng_state
from llmrl.trainer.loop import pick_device, seed_everything
from llmrl.trainer.updater import build_optimizer


def _backward(loss: torch.Tensor) -> None:
    """Opacus' per-sample hooks on the first trainable layer see an input that needs no gradient
    (frozen embeddings under LoRA), and torch warns about it on every backward; grad_output is all
    Opacus reads there, so the warning says nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed",
                                category=UserWarning)
        loss.backward()


class AdapterNotUpdated(RuntimeError):
    """A trainable tensor did not change in the first step (opacus#820: LoRA corrupted or detached)."""


def poisson_batch(num_rows: int, sample_rate: float, seed: int, step: int) -> list[int]:
    """Rows of step ``step``: each independently with probability ``sample_rate`` (may be empty)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.nonzero(torch.rand(num_rows, generator=g) < sample_rate).flatten().tolist()


def total_steps(cfg: RecipeConfig, num_rows: int) -> int:
    return max(1, math.ceil(cfg.sft.epochs * num_rows / cfg.sft.batch_size))


@torch.no_grad()
def validation_loss(model: torch.nn.Module, rows: list[list[int]], pad_id: int, batch: int = 64) -> float:
    """Token-weighted mean NLL over ``rows`` (exp of it is the perplexity)."""
    device = next(model.parameters()).device
    tot, cnt = 0.0, 0.0
    for i in range(0, len(rows), batch):
        ids, mask = pad_batch(rows[i:i + batch], pad_id)
        nll, n = sequence_nll(model, ids.to(device), mask.to(device))
        tot, cnt = tot + float(nll.sum()), cnt + float(n.sum())
    return tot / max(cnt, 1.0)


def _loss(module, rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    ids, mask = pad_batch(rows, pad_id)
    nll, n = sequence_nll(module, ids.to(device), mask.to(device))
    return (nll / n).mean()   # token mean per sequence, then batch mean (Opacus loss_reduction="mean")


def _empty_step(params: list[torch.nn.Parameter]) -> None:
    """An empty Poisson batch still takes a (noise-only) step: the accountant assumed it would."""
    for p in params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


def train_sft(cfg: RecipeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run ``task: sft``; returns (and writes to summary.json) what the run spent and measured."""
    from llmrl.privacy.attacks import canary_exposure, membership_auc
    from llmrl.privacy.errors import BudgetExhausted

    tc, sc, pc = cfg.trainer, cfg.sft, cfg.privacy
    out = Path(tc.output_dir)
    seed_everything(tc.seed)
    device = pick_device(tc.device)
    # the corpus first: a bad text column fails before any model loads
    source = f"data.name {cfg.data.name!r}"
    train_texts = corpus_texts(build_dataset(cfg.data.name, "train", n=cfg.data.train_size, seed=tc.seed,
                                             args=cfg.data.args), sc.text_column, source + " (train)")
    eval_texts = corpus_texts(build_dataset(cfg.data.name, "test", n=sc.eval_size or None, seed=tc.seed,
                                            args=cfg.data.args), sc.text_column, source + " (test)") if sc.eval_size else []
    lora = cfg.model.lora
    # device before LoRA (load_model_and_tokenizer moves the model, then attaches adapters): opacus#820
    model, tok = load_model_and_tokenizer(
        cfg.model.name_or_path, dtype=cfg.model.dtype, device=str(device), trust_remote_code=cfg.model.trust_remote_code,
        lora_r=lora.r if lora else None, lora_alpha=lora.alpha if lora else 16,
        lora_dropout=lora.dropout if lora else 0.0, lora_target_modules=lora.target_modules if lora else None)
    if pc is not None and cfg.model.dtype != "float32":
        raise ValueError("model.dtype: private training keeps the trained weights in float32 (per-sample gradients "
                         "and noise in half precision break the accounting's assumptions). Allowed: float32")
    train_rows, eval_rows = tokenize(tok, train_texts, sc.max_length), tokenize(tok, eval_texts, sc.max_length)
    N, T = len(train_rows), total_steps(cfg, len(train_texts))
    q = min(sc.batch_size / N, 1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(tc.optimizer, params, lr=tc.lr, weight_decay=tc.weight_decay, args=tc.optimizer_args)

    dp = None
    module: torch.nn.Module = model
    if pc is not None:
        try:
            from llmrl.privacy.engine import build_private
        except ImportError as exc:
            raise ValueError(f"privacy: DP-SGD needs Opacus ({exc}). Fix: pip install 'llmrl[privacy]'") from None

        dp = build_private(pc, model, optimizer, num_rows=N, batch_size=sc.batch_size, total_steps=T, seed=tc.seed)
        module, optimizer = dp.module, dp.optimizer

    start, curve, metrics = 0, [], []
    restored_window, restored_ema = None, None
    if resume and (found := load_latest(out)) is not None:
        _, weights, state = found
        load_trainable(model, weights)
        optimizer.load_state_dict(state["optimizer"])
        start, curve, metrics = state["step"], state["curve"], state["metrics"]
        if dp is not None:
            dp.engine.accountant.history = [tuple(h) for h in state["ledger"]]
            dp.controller.load_state_dict(state["controller"])
            dp.trajectory = state["trajectory"]
            restored_window, restored_ema = state["window"], state["ema"]
            if start % (pc.sac.interval) and dp.trajectory:  # mid-interval: the knobs in force at the checkpoint
                dp.restore(dp.trajectory[-1])
            optimizer.max_grad_norm = state["clip"]  # adaptive clipping moved it after the interval began
        set_rng_state(state["rng"])
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(step: int) -> Path:
        state = {"optimizer": optimizer.state_dict(), "curve": curve, "metrics": metrics}
        if dp is not None:
            state.update(ledger=[list(h) for h in dp.ledger], controller=dp.controller.state_dict(),
                         trajectory=dp.trajectory, window=window, ema=ema, clip=float(optimizer.max_grad_norm))
        return save_checkpoint(out, step, model, state, keep=tc.keep_checkpoints)

    def evaluate(step: int) -> float:
        model.eval()
        loss = validation_loss(model, eval_rows, tok.pad_token_id) if eval_rows else float("nan")
        model.train()
        curve.append({"step": step, "val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)),
                      **({"epsilon": dp.epsilon()} if dp else {})})
        return loss

    if not curve:
        evaluate(0)
    K = pc.sac.interval if pc is not None else T
    first = [p.detach().clone() for p in params] if start == 0 else None
    window: dict[str, Any] = restored_window or {"norms": [], "start": [p.detach().clone() for p in params],
                                                 "eps": dp.epsilon() if dp else 0.0}
    ema: list[float] | None = restored_ema
    stopped, done = None, start
    t0 = time.time()
    bar = progress(total=T, initial=start, desc="sft" + (" (private)" if dp else ""), enabled=cfg.logging.progress)

    def observation(step: int):
        from llmrl.privacy.controllers import Observation

        nonlocal ema
        norms = ([sum(c) / len(c) for c in zip(*window["norms"])] if window["norms"]
                 else [0.0] * len(dp.group_names))
        ema = norms if ema is None else [0.7 * e + 0.3 * n for e, n in zip(ema, norms)]
        upd = math.sqrt(sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(params, window["start"])))
        wn = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in params))
        return Observation(progress=step / T, epsilon_frac=dp.epsilon() / pc.target_epsilon, noisy_norms=norms,
                           noisy_norms_ema=ema, update_ratio=upd / max(wn, 1e-12), val_loss=curve[-1]["val_loss"],
                           val_loss_start=curve[0]["val_loss"],
                           pace_sigma=dp.pace_noise() if pc.controller == "sac" else None)

    try:
        for step in range(start, T):
            if dp is not None and step % K == 0:  # interval boundary: feedback, propose, filter
                obs = observation(step)
                if step > 0:
                    metrics.append({"step": step, **dp.controller.feedback(obs, (dp.epsilon() - window["eps"])
                                                                            / pc.target_epsilon)})
                dp.apply(dp.controller.propose(obs), min(K, T - step))
                window = {"norms": [], "start": [p.detach().clone() for p in params], "eps": dp.epsilon()}
            batch = poisson_batch(N, q, tc.seed, step)
            optimizer.zero_grad(set_to_none=True)
            micro = [batch[i:i + sc.micro_batch_size] for i in range(0, len(batch), sc.micro_batch_size)]
            loss_sum = 0.0
            if dp is not None and not micro:
                _empty_step(params)
            for j, rows in enumerate(micro):
                loss = _loss(module, [train_rows[i] for i in rows], tok.pad_token_id, device)
                _backward(loss)
                loss_sum += float(loss.detach()) * len(rows)
                if dp is not None and j < len(micro) - 1:
                    optimizer.signal_skip_step(True)   # clip + accumulate now, noise once at the last micro-batch
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            if dp is None:
                if tc.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
                if micro:  # a mean over micro-batches: rescale the summed micro-batch means
                    for p in params:
                        if p.grad is not None:
                            p.grad /= len(micro)
            optimizer.step()
            if dp is not None:
                window["norms"].append(optimizer.noisy_group_norms() if hasattr(optimizer, "noisy_group_norms")
                                       else [math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))])
            if first is not None:
                # an exactly-zero gradient may legitimately leave a tensor in place: LoRA's A at init (B = 0)
                # without DP noise. A missing or non-zero gradient that moved nothing is the opacus#820 symptom.
                frozen = [n for (n, p) in ((n, p) for n, p in model.named_parameters() if p.requires_grad)
                          if torch.equal(p.detach(), first[[id(x) for x in params].index(id(p))])
                          and (p.grad is None or bool(p.grad.any()))]
                if frozen:
                    raise AdapterNotUpdated(
                        f"{len(frozen)} trainable tensors did not change in the first step (e.g. {frozen[0]}): the "
                        "adapters are not being trained (opacus#820: move the model to its device before "
                        "get_peft_model; every trainable tensor must receive a gradient)")
                first = None
            done = step + 1
            if done % sc.eval_every == 0 or done == T or (dp is not None and done % K == 0):
                evaluate(done)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / max(len(batch), 1):.3f}",
                            **({"eps": f"{dp.epsilon():.2f}"} if dp else {}))
            if tc.checkpoint_every and done % tc.checkpoint_every == 0 and done < T:
                checkpoint(done)
    except BudgetExhausted as exc:
        stopped = str(exc)
        done = sum(h[2] for h in dp.ledger)
    finally:
        bar.close()
    final_ckpt = checkpoint(done)

    summary: dict[str, Any] = {"task": "sft", "steps": done, "steps_this_session": done - start, "total_steps": T, "rows": N, "sample_rate": q,
                               "seconds": time.time() - t0, "curve": curve, "val_loss": curve[-1]["val_loss"],
                               "val_ppl": curve[-1]["val_ppl"], "checkpoint": str(final_ckpt), "metrics": metrics}
    if dp is not None:
        summary["privacy"] = {
            "controller": pc.controller, "accountant": pc.accountant, "epsilon": dp.epsilon(),
            "epsilon_prv": dp.epsilon_prv(), "delta": pc.delta, "target_epsilon": pc.target_epsilon,
            "baseline_sigma": dp.baseline_sigma, "groups": dp.group_names, "trajectory": dp.trajectory,
            "ledger": [list(h) for h in dp.ledger], "stopped": stopped}
        if pc.controller == "sac":
            torch.save(dp.controller.state_dict(), out / "sac_policy.pt")
    summary["attacks"] = _attacks(cfg, model, tok, train_texts, eval_texts, canary_exposure, membership_auc)
    if stopped is None:
        save_final(model, tok, out / "final")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if dp is not None and cfg.logging.plot:
        from llmrl.privacy.report import plot_trajectory

        plot_trajectory(summary, out / "privacy.png")
    if stopped is not None:
        raise BudgetExhausted(f"{stopped} (checkpoint: {final_ckpt})")
    return summary


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures a person reads first (the whole record is in summary.json)."""
    out = {k: summary[k] for k in ("steps", "total_steps", "val_ppl")}
    if "privacy" in summary:
        p = summary["privacy"]
        out.update({f"privacy/{k}": p[k] for k in ("controller", "accountant", "epsilon", "epsilon_prv", "delta",
                                                   "target_epsilon")})
        if p["stopped"]:
            out["privacy/stopped"] = p["stopped"]
    for who, res in summary["attacks"].items():
        out.update({f"{who}/{k}": v for k, v in res.items()})
    return out


def _attacks(cfg: RecipeConfig, model, tok, train_texts, eval_texts, canary_exposure, membership_auc) -> dict:
    """Canary exposure (clinical_notes: its planted canaries) and loss-threshold MIA AUC, fine-tuned vs base."""
    from llmrl.privacy.corpus import canaries

    model.eval()
    planted = canaries(cfg.trainer.seed, cfg.data.args.get("num_canaries", 4)) if cfg.data.name == "clinical_notes" else []
    members = [t for t in train_texts if not any(t.startswith(c.prefix) for c in planted)][:len(eval_texts)]

    def measure() -> dict[str, float]:
        res = {"mia_auc": membership_auc(model, tok, members, eval_texts) if eval_texts else float("nan")}
        if planted and cfg.sft.exposure_candidates:
            res["canary_exposure"] = sum(canary_exposure(model, tok, c, num_candidates=cfg.sft.exposure_candidates)
                                         for c in planted) / len(planted)
        return res

    result = {"fine_tuned": measure()}
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            result["base"] = measure()
    model.train()
    return result
