"""A rollout engine with its own copy of the weights (as a vLLM engine has), for tests that must
notice a missing weight sync: it samples from stale weights until ``sync_weights`` is called."""
import copy

from llmrl.rollout.hf_engine import HFEngine


class CopyingEngine(HFEngine):
    def __init__(self, model, tokenizer, **opts):
        super().__init__(copy.deepcopy(model), tokenizer, **opts)

    def sync_weights(self, policy):
        self.model.load_state_dict(policy.state_dict())


def copying_engine(model, tokenizer, **opts):
    return CopyingEngine(model, tokenizer, **opts)


#: Per sampling call of a VersionRecordingEngine: how many weight syncs it had received, i.e.
#: which policy version (0 = initial weights, k = after step k's update) sampled the batch.
SAMPLED_VERSIONS: list[int] = []


class VersionRecordingEngine(CopyingEngine):
    def __init__(self, model, tokenizer, **opts):
        super().__init__(model, tokenizer, **opts)
        self.version = 0
        SAMPLED_VERSIONS.clear()

    def sync_weights(self, policy):
        super().sync_weights(policy)
        self.version += 1

    def generate_tokens(self, contexts, sampling, *, n=1):
        if not sampling.greedy:   # RL rollouts, not the held-out evaluation
            SAMPLED_VERSIONS.append(self.version)
        return super().generate_tokens(contexts, sampling, n=n)


def version_recording_engine(model, tokenizer, **opts):
    return VersionRecordingEngine(model, tokenizer, **opts)
