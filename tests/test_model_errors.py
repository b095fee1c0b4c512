"""Model loading: an unknown tiny:// name is an error naming the known ones, LoRA adapters saved
to final/ never point into the local cache, float16 on CPU is refused up front."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmrl.models.load import ModelLoadError, load_model_and_tokenizer, save_final
from llmrl.paths import cache_dir

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "recipes" / "tiny" / "math_grpo.yaml"


def _train(tmp_path, *sets):
    args = [sys.executable, "-m", "llmrl.cli", "train", str(TINY), "--set", f"trainer.output_dir={tmp_path / 'run'}"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=180)


def test_tiny_typo_names_the_known_models():
    with pytest.raises(ModelLoadError, match=r"no tiny model 'arithmatic'.*Did you mean 'tiny://arithmetic'.*tiny://code"):
        load_model_and_tokenizer("tiny://arithmatic", device="cpu")
    assert not (cache_dir() / "tiny" / "arithmatic").exists()  # nothing random was built


def test_tiny_typo_in_a_recipe_exits_2(tmp_path):
    proc = _train(tmp_path, "model.name_or_path=tiny://arithmatic")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tiny://arithmetic" in proc.stderr and "Traceback" not in proc.stderr


def _logits(model, tok):
    ids = tok(["1+2="], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_lora_final_names_tiny_base_and_reloads(tmp_path):
    model, tok = load_model_and_tokenizer("tiny://arithmetic", lora_r=4, device="cpu")
    with torch.no_grad():  # make the adapter matter: lora_B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    final = save_final(model, tok, tmp_path / "run" / "final")
    base = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == "tiny://arithmetic"
    again, tok2 = load_model_and_tokenizer(str(final), device="cpu")
    torch.testing.assert_close(_logits(again, tok2), _logits(model, tok))


def test_lora_on_a_cached_base_copies_the_base_into_the_run(tmp_path, monkeypatch):
    from llmrl.models.tiny import build_tiny_model

    monkeypatch.setenv("LLMRL_CACHE_DIR", str(tmp_path / "cache"))
    cached = build_tiny_model(tmp_path / "cache" / "warm_start" / "abc123", hidden_size=32, num_layers=1,
                              num_heads=2, seed=3)  # what a warm start leaves in the cache
    model, tok = load_model_and_tokenizer(str(cached), lora_r=2, device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    final = save_final(model, tok, tmp_path / "run" / "final")
    base = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert str(tmp_path / "cache") not in base and (final / "base_model" / "config.json").is_file()
    shutil.rmtree(tmp_path / "cache")  # cache cleared, run folder moved: the run still loads
    shutil.move(str(tmp_path / "run"), str(tmp_path / "moved"))
    again, tok2 = load_model_and_tokenizer(str(tmp_path / "moved" / "final"), device="cpu")
    torch.testing.assert_close(_logits(again, tok2), _logits(model, tok))


def test_float16_on_cpu_is_refused_with_the_fix():
    with pytest.raises(ModelLoadError, match="float16 is not supported on the CPU.*bfloat16"):
        load_model_and_tokenizer("tiny://arithmetic", dtype="float16", device="cpu")


def test_float16_on_cpu_in_a_recipe_exits_2(tmp_path):
    proc = _train(tmp_path, "model.dtype=float16", "trainer.device=cpu", "model.warm_start=null")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "float16 is not supported on the CPU" in proc.stderr and "Traceback" not in proc.stderr
