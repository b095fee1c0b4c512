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
