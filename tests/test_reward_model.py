"""The ``reward_model`` reward: a sequence-classification model scores prompt + completion
(``logits[:, 0]``), loaded once per (model, device), used from a recipe's ``rewards`` entry
through the trainer's runner. The model is a tiny random Llama classifier built in tmp_path."""
from __future__ import annotations

import math

import pytest
import torch

from llmrl.config.load import RecipeError, validate_recipe
from llmrl.config.schema import RewardSpec
from llmrl.rewards import reward_model as rm
from llmrl.rewards.runner import build_reward_fns, score


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def classifier(request, tmp_path_factory):
    """A tiny random classifier with the project's character tokenizer (which pads on the left):
    Llama (rotary positions) and GPT-2 (learned absolute positions, where left padding would
    shift every position and change the score)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from llmrl.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    ids = dict(num_labels=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if request.param == "llama":
        net = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=128, **ids))
    else:
        net = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2,
                                                       n_positions=128, **ids))
    net.eval()
    path = tmp_path_factory.mktemp(f"rm_{request.param}")
    net.save_pretrained(path)
    tok.save_pretrained(path)
    return path, net, tok


def expected(net, tok, text: str) -> float:
    """The first logit of ``text`` alone (no padding): what the reward must return."""
    with torch.no_grad():
        return float(net(**tok([text], return_tensors="pt")).logits[0, 0])


PROMPTS = ["1+1=", "2+3=", "12-4=", "7+7="]
COMPLETIONS = ["2", "5 because 2+3 is 5", "8", "fourteen?"]


def test_scores_prompt_plus_completion_through_a_recipe_reward(classifier, one_torch_thread):
    path, net, tok = classifier
    spec = RewardSpec(name="reward_model", args={"model": str(path), "batch_size": 3})
    fns = build_reward_fns([spec])
    res = score(PROMPTS, COMPLETIONS, {"answer": ["2", "5", "8", "14"]}, fns, completion_ids=[[1]] * 4)
    assert not res.failures, res.failures
    want = [expected(net, tok, p + c) for p, c in zip(PROMPTS, COMPLETIONS)]
    got = res.per_reward["reward_model"].tolist()
    # batches of 3 and 1 with right padding: each score is the unpadded one (float tolerance)
    assert got == pytest.approx(want, abs=1e-5) and res.total.tolist() == pytest.approx(want, abs=1e-5)
    assert len(set(round(x, 6) for x in got)) == 4 and all(math.isfinite(x) for x in got)


def test_model_is_loaded_once_per_model_and_device(classifier, monkeypatch):
    path, _, _ = classifier
    rm._MODELS.clear()
    loads = []
    from transformers import AutoModelForSequenceClassification

    original = AutoModelForSequenceClassification.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", counting)
    a = rm.reward_model(PROMPTS[:2], COMPLETIONS[:2], model=str(path))
    b = rm.reward_model(PROMPTS[:2], COMPLETIONS[:2], model=str(path), batch_size=1, trainer_state=None)
    assert loads == [str(path)] and a == pytest.approx(b, abs=1e-5)


def test_recipe_args_are_checked_at_load(classifier):
    path, _, _ = classifier
    validate_recipe({"rewards": [{"name": "reward_model", "args": {"model": str(path), "device": "cpu"}}]})
    with pytest.raises(RecipeError, match=r"rewards\[0\].args.batchsize.*Did you mean 'batch_size'"):
        validate_recipe({"rewards": [{"name": "reward_model", "args": {"model": str(path), "batchsize": 4}}]})


def test_a_model_that_cannot_load_is_a_named_failure(tmp_path):
    fns = build_reward_fns([RewardSpec(name="reward_model", args={"model": str(tmp_path / "nope")})])
    res = score(["q"], ["a"], {}, fns)
    assert "reward_model" in res.failures and "cannot load" in res.failures["reward_model"]
