"""trainer.push_to_hub uploads final/ at the end of training; a failed push exits 1 naming the
cause and leaves final/ and summary.json in place.

The upload goes through huggingface_hub to a local hub-compatible server (``FakeHub``: the
repo-create, preupload and commit endpoints of the Hub API, every file uploaded inline), found
through $HF_ENDPOINT like any self-hosted hub. ``test_push_to_the_real_hub`` pushes to
huggingface.co when $LLMRL_TEST_HUB_REPO names a repo to write to (and a token is set), and is
skipped otherwise."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


class FakeHub:
    """A local server speaking the part of the Hub API that ``HfApi.create_repo`` and
    ``HfApi.upload_folder`` use; committed files land in ``root/<repo_id>/``."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._reply({"error": "not found"}, 404)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append(("POST", self.path))
                if self.headers.get("Authorization") != "Bearer hf_fake_token":
                    return self._reply({"error": "Invalid credentials"}, 401)
                if self.path == "/api/validate-yaml":  # the model card's metadata (peft writes a README.md)
                    return self._reply({})
                if self.path == "/api/repos/create":
                    req = json.loads(body)
                    return self._reply({"url": f"{hub.url}/{req['organization']}/{req['name']}"})
                repo = "/".join(self.path.split("/")[3:5])  # /api/models/<user>/<name>/<verb>/<revision>
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
                if "/commit/" in self.path:
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            target = hub.root / repo / item["value"]["path"]
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(base64.b64decode(item["value"]["content"]))
                    return self._reply({"commitUrl": f"{hub.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
                self._reply({"error": "not found"}, 404)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    yield hub
    hub.close()


def _train(tmp_path: Path, env: dict, **trainer) -> subprocess.CompletedProcess:
    recipe = {
        "model": {"name_or_path": "tiny://arithmetic", "lora": {"r": 2, "alpha": 4}},
        "data": {"name": "arithmetic", "train_size": 8, "eval_size": 0},
        "rollout": {"num_generations": 2, "max_completion_length": 4, "max_prompt_length": 32},
        "rewards": [{"name": "reward_fixtures:length_reward"}],
        "trainer": {"steps": 1, "prompts_per_step": 2, "micro_batch_size": 4, "device": "cpu", "num_threads": 1,
                    "output_dir": str(tmp_path / "run"), "eval_every": 0, "checkpoint_every": 0, **trainer},
        "logging": {"progress": False, "tensorboard": False, "plot": False},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    pythonpath = os.pathsep.join([str(REPO / "tests"), base.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "llmrl.cli", "train", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={**base, "PYTHONPATH": pythonpath, **env})


def test_final_adapter_and_tokenizer_are_pushed(tmp_path, fake_hub):
    proc = _train(tmp_path, {"HF_ENDPOINT": fake_hub.url, "HF_TOKEN": "hf_fake_token"}, push_to_hub="me/tiny-grpo")
    assert proc.returncode == 0, proc.stderr[-3000:]
    final, pushed = tmp_path / "run" / "final", fake_hub.root / "me" / "tiny-grpo"
    local = sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file())
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"} <= set(local)
    assert sorted(p.relative_to(pushed).as_posix() for p in pushed.rglob("*") if p.is_file()) == local
    for name in local:
        assert (pushed / name).read_bytes() == (final / name).read_bytes(), name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["pushed_to"].startswith(f"{fake_hub.url}/me/tiny-grpo/commit/")


@pytest.mark.parametrize("env", ["unreachable", "bad_token"])
def test_failed_push_exits_1_with_the_cause_and_keeps_final(tmp_path, fake_hub, env):
    hub_env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_fake_token"} if env == "unreachable" else \
        {"HF_ENDPOINT": fake_hub.url, "HF_TOKEN": "hf_wrong"}
    proc = _train(tmp_path, hub_env, push_to_hub="me/tiny-grpo")
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = " ".join(proc.stderr.split())
    assert "trainer.push_to_hub: could not push" in err and "'me/tiny-grpo'" in err
    assert ("Connection" in err) if env == "unreachable" else ("401" in err or "Invalid credentials" in err), err
    assert "hf upload me/tiny-grpo" in err and "Traceback" not in proc.stderr
    final = tmp_path / "run" / "final"
    assert (final / "adapter_model.safetensors").is_file() and (final / "tokenizer_config.json").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 1


def test_push_to_the_real_hub(tmp_path):
    repo = os.environ.get("LLMRL_TEST_HUB_REPO")
    if not repo or not (os.environ.get("HF_TOKEN") or (Path.home() / ".cache/huggingface/token").is_file()):
        pytest.skip("pushing to huggingface.co needs $LLMRL_TEST_HUB_REPO (a model repo you may write to) and a "
                    "token ($HF_TOKEN or hf auth login); the same push is tested against a local hub above")
    import urllib.request

    try:
        urllib.request.urlopen("https://huggingface.co/api/whoami-v2", timeout=5)
    except OSError as exc:
        if not getattr(exc, "code", None):  # an HTTP status means the hub answered
            pytest.skip(f"huggingface.co is unreachable from here ({exc})")
    proc = _train(tmp_path, {}, push_to_hub=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed_to" in json.loads((tmp_path / "run" / "summary.json").read_text())
