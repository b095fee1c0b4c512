"""Tokens/s of the hf and vllm rollout engines on the same model, prompts and lengths (JSON out).

Run it where vLLM is installed (CPU: `make vllm-env`, then
`.venv-vllm/bin/python bench/rollout_engines.py`). Both engines sample the same prompts with the
same settings, with and without per-token log-probs (the trainer asks for them with vLLM), in
one process, alternating rounds so a load change hits both. Also vLLM's own offline throughput
(`LLM.generate` on the same token prompts, no llmrl code around it) for the engine's overhead.
``--server`` adds the server-mode engine (``rollout.vllm.mode: server``: a vLLM server process on
127.0.0.1, sampled over HTTP) and times each vLLM engine's weight push (``sync_weights``)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny://arithmetic")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kv-cache-gib", type=float, default=0.25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--server", action="store_true", help="also the server-mode engine (starts a vLLM server)")
    args = ap.parse_args()

    import torch

    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.rollout.engine import build_engine
    from llmrl.rollout.types import SamplingParams

    torch.manual_seed(0)
    policy, tok = load_model_and_tokenizer(args.model, device=args.device)
    prompts = list(build_dataset("arithmetic", "train", n=args.prompts, seed=0, args={})["prompt"])
    engines = {
        "hf": build_engine("hf", policy, tok, max_prompt_length=64),
        "vllm": build_engine("vllm", policy, tok, max_prompt_length=64,
                             vllm={"kv_cache_gib": args.kv_cache_gib, "max_completion_length": args.max_new_tokens}),
    }
    if args.server:
        engines["vllm_server"] = build_engine("vllm", policy, tok, max_prompt_length=64, vllm={
            "mode": "server", "kv_cache_gib": args.kv_cache_gib, "max_completion_length": args.max_new_tokens})
    ids = engines["hf"].encode(prompts)
    results: dict[str, list[float]] = {}
    syncs: dict[str, list[float]] = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        for logprobs in (False, True):
            s = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, logprobs=logprobs, seed=r)
            for name, eng in engines.items():
                t0 = time.perf_counter()
                batch = eng.generate_tokens(ids, s, n=args.n)
                dt = time.perf_counter() - t0
                if r:
                    results.setdefault(f"{name}{'+logprobs' if logprobs else ''}", []).append(
                        float(batch.completion_mask.sum()) / dt)
        from vllm import SamplingParams as VSP

        llm = engines["vllm"].llm
        vsp = VSP(n=args.n, temperature=1.0, max_tokens=args.max_new_tokens, seed=r)
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": c} for c in ids], vsp, use_tqdm=False)
        dt = time.perf_counter() - t0
        if r:
            results.setdefault("vllm_offline", []).append(sum(len(o.token_ids) for q in outs for o in q.outputs) / dt)
        for name in ("vllm", "vllm_server"):
            if name in engines:
                t0 = time.perf_counter()
                engines[name].sync_weights(policy)
                if r:
                    syncs.setdefault(name, []).append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(json.dumps({
        "model": args.model, "params": sum(p.numel() for p in policy.parameters()), "prompts": args.prompts,
        "n": args.n, "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "device": args.device,
        "tokens_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "tokens_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "ratio_vllm_over_hf": round(med["vllm"] / med["hf"], 3),
        "ratio_vllm_over_hf_logprobs": round(med["vllm+logprobs"] / med["hf+logprobs"], 3),
        "ratio_engine_over_vllm_offline": round(med["vllm"] / med["vllm_offline"], 3),
        **({"ratio_server_over_colocated": round(med["vllm_server"] / med["vllm"], 3),
            "ratio_server_over_colocated_logprobs": round(med["vllm_server+logprobs"] / med["vllm+logprobs"], 3)}
           if args.server else {}),
        "sync_weights_s_median": {k: round(statistics.median(v), 4) for k, v in syncs.items()},
        "load_avg_1m": os.getloadavg()[0],
    }, indent=2))
    if args.server:
        engines["vllm_server"].close()


if __name__ == "__main__":
    main()
