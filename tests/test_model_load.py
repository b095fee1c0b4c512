"""load_model_and_tokenizer: tiny:// models, LoRA, padding setup, clear errors."""
from __future__ import annotations

import pytest
import torch

from llmrl.models.load import ModelLoadError, load_model_and_tokenizer


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_is_built_once_and_deterministic(cache):
    model, tok = load_model_and_tokenizer("tiny://arithmetic", device="cpu")
    folder = cache / "tiny" / "arithmetic"
    assert (folder / "config.json").is_file()
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert next(model.parameters()).dtype == torch.float32
    mtime = (folder / "config.json").stat().st_mtime_ns
    again, _ = load_model_and_tokenizer("tiny://arithmetic", device="cpu")
    assert (folder / "config.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)
    # Options in the query string get their own folder and change the model.
    small, _ = load_model_and_tokenizer("tiny://arithmetic?hidden_size=64&seed=1", device="cpu")
    assert (cache / "tiny" / "arithmetic__hidden_size-64__seed-1").is_dir()
    assert small.config.hidden_size == 64
    with pytest.raises(ModelLoadError, match="unknown"):
        load_model_and_tokenizer("tiny://arithmetic?hidden=64", device="cpu")


def test_lora_freezes_base_and_trains_adapters(cache):
    model, _ = load_model_and_tokenizer("tiny://arithmetic", lora_r=4, device="cpu")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all("lora_" not in n for n in frozen)
    # "all-linear": q,k,v,o + gate,up,down in 2 layers = 14 modules, each with lora_A and lora_B.
    assert len(trainable) == 14 * 2
    # A gradient step reaches only the adapters.
    batch = torch.tensor([[1, 8, 79, 8, 87, 9]])
    model(input_ids=batch, labels=batch).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    # lora_B starts at zero, so at step 0 only lora_B gets a nonzero gradient (dL/dA = B^T ... = 0).
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if "lora_B" in n)


def test_dtype_and_errors(cache, tmp_path, monkeypatch):
    model, _ = load_model_and_tokenizer("tiny://arithmetic", dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model_and_tokenizer("tiny://arithmetic", dtype="float8")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_and_tokenizer(str(tmp_path / "missing-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="Fix:"):
        load_model_and_tokenizer(str(tmp_path / "empty"))
    # Not a folder and no hub: a clear error. Offline mode makes it fail at once (without it,
    # huggingface_hub retries for ~30 s per file before giving up on an unreachable hub).
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="Hugging Face Hub"):
        load_model_and_tokenizer("llmrl-no-such-org/no-such-model-xyz")
