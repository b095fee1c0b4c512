"""``trainer.push_to_hub``: upload a run's ``final/`` (the model or LoRA adapter, and the
tokenizer) to a Hugging Face Hub model repository at the end of training.

The Hub is whatever ``huggingface_hub`` talks to: huggingface.co, or the endpoint in
``$HF_ENDPOINT`` (a self-hosted or mirror hub). The token comes from ``$HF_TOKEN`` or
``hf auth login``. A push that fails never touches ``final/``: training is done and
saved, and the error says how to push the folder later."""
from __future__ import annotations

from pathlib import Path


class PushToHubError(RuntimeError):
    """The trained model is saved locally but could not be uploaded; the message names the cause."""


def push_final(final_dir: str | Path, repo_id: str, *, commit_message: str | None = None) -> str:
    """Create ``repo_id`` if it does not exist and upload ``final_dir`` to it; returns the commit URL.

    A LoRA adapter's ``base_model/`` copy (a warm-started base that only exists in this machine's
    cache) is uploaded too, so the repository loads on its own."""
    final_dir = Path(final_dir)
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=final_dir,
                                 commit_message=commit_message or f"llmrl: upload {final_dir}")
    except Exception as exc:  # network, auth, permissions, bad repo id: all the same to the user
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
        raise PushToHubError(
            f"trainer.push_to_hub: could not push {final_dir} to {repo_id!r} ({cause}). The trained model is "
            f"saved in {final_dir}; fix the cause (network, `hf auth login` or $HF_TOKEN, the repo id) and "
            f"push it with: hf upload {repo_id} {final_dir}") from None
    return str(getattr(info, "commit_url", info))
