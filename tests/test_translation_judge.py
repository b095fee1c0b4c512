"""The OpenAI-compatible judge client against a real HTTP server on 127.0.0.1 (the project's
chat server, started by the test): timeouts, 429/500 with retries, malformed bodies and judge
output, the disk cache; the metric and HF judges; the exemplar reward through each backend."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("sacrebleu")
from aiohttp import web  # noqa: E402

from llmrl.rewards.chat_client import ChatClient, ChatError  # noqa: E402
from llmrl.rewards.chat_server import hf_reply, make_app  # noqa: E402
from llmrl.rewards.translation import judges  # noqa: E402
from llmrl.rewards.translation.judges import Comparison, MetricJudge, parse_verdict  # noqa: E402
from llmrl.rewards.translation.rewards import exemplar_reward  # noqa: E402


def _rule_judge(messages, params):
    """A deterministic judge: 'better' when the candidate (after 'Translation A:') equals the
    exemplar (after 'Translation B:'), else 'worse'; 'no idea' for anything containing ZZZ."""
    text = messages[-1]["content"]
    if "ZZZ" in text:
        return "no idea"
    a = text.split("Translation A:\n", 1)[1].split("\n\nTranslation B:", 1)[0]
    b = text.split("Translation B:\n", 1)[1].split("\n\n", 1)[0]
    return "Better." if a == b else "worse"


class Server:
    """The project's chat server on 127.0.0.1:<free port> in a thread, with a fault script:
    each request pops the next entry (429, 500, 'slow', 'malformed'); an empty script serves."""

    def __init__(self, reply, model_name="judge"):
        self.script: list = []
        self.requests = 0
        self.times: list[float] = []
        self.in_flight = self.max_in_flight = 0

        @web.middleware
        async def faults(request, handler):
            self.requests += 1
            self.times.append(time.monotonic())
            what = self.script.pop(0) if self.script else None
            if what in (429, 500):
                return web.json_response({"error": "injected"}, status=what, headers={"Retry-After": "0"}
                                         if what == 429 else {})
            if what == "slow":
                await asyncio.sleep(2.0)
            if what == "malformed":
                return web.Response(text="{not json", content_type="application/json")
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(0.02)  # long enough for concurrent requests to overlap
                return await handler(request)
            finally:
                self.in_flight -= 1

        self.app = make_app(reply, model_name=model_name)
        self.app.middlewares.append(faults)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start():
            self.runner = web.AppRunner(self.app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        assert started.wait(10)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture()
def server():
    s = Server(_rule_judge)
    yield s
    s.close()


def _client(server, **kw):
    kw = {"timeout_s": 5.0, "retries": 3, "backoff_s": 0.05, **kw}
    return ChatClient(server.base_url, "judge", **kw)


def _ask(client, text="Translation A:\nx\n\nTranslation B:\nx\n\n"):
    async def go():
        try:
            return await client.complete([{"role": "user", "content": text}], temperature=0)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_a_plain_request_round_trips(server):
    assert _ask(_client(server)) == "Better."
    assert server.requests == 1


def test_429_and_500_are_retried_with_backoff_then_succeed(server):
    server.script = [429, 500, 500]
    client = _client(server, backoff_s=0.1)
    assert _ask(client) == "Better."
    assert server.requests == 4 and client.stats["retries"] == 3
    gaps = [b - a for a, b in zip(server.times, server.times[1:])]
    # 429 sent Retry-After: 0 (no wait); then 0.1 * 2**1 and 0.1 * 2**2 of backoff
    assert gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps


def test_retries_run_out_into_a_chat_error_naming_the_status(server):
    server.script = [500] * 3
    with pytest.raises(ChatError, match="HTTP 500"):
        _ask(_client(server, retries=2))
    assert server.requests == 3


def test_a_4xx_other_than_429_is_not_retried(server):
    client = _client(server)

    async def go():
        try:  # 'messages' not a list: the server answers 400
            return await client.complete("not a list")  # type: ignore[arg-type]
        finally:
            await client.aclose()
    with pytest.raises(ChatError, match="HTTP 400"):
        asyncio.run(go())
    assert server.requests == 1


def test_a_timeout_is_retried_and_a_second_one_fails(server):
    server.script = ["slow"]
    client = _client(server, timeout_s=0.5, retries=1)
    t0 = time.monotonic()
    assert _ask(client) == "Better."  # the first try timed out, the retry was served
    assert server.requests == 2 and time.monotonic() - t0 < 2.0
    server.script = ["slow", "slow"]
    with pytest.raises(ChatError, match="TimeoutError"):
        _ask(_client(server, timeout_s=0.5, retries=1))


def test_a_malformed_body_is_a_chat_error(server):
    server.script = ["malformed"]
    with pytest.raises(ChatError, match="malformed"):
        _ask(_client(server))


def test_cache_hits_skip_the_server_and_a_changed_request_misses(server, tmp_path):
    client = _client(server, cache_dir=tmp_path)
    assert _ask(client) == "Better." and server.requests == 1
    again = _client(server, cache_dir=tmp_path)  # a new process reads the same folder
    assert _ask(again) == "Better." and server.requests == 1 and again.stats["cache_hits"] == 1
    assert _ask(again, "Translation A:\ny\n\nTranslation B:\nx\n\n") == "worse" and server.requests == 2
    [entry] = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")
               if json.loads(p.read_text())["content"] == "worse"]
    assert entry["request"]["messages"][0]["content"].startswith("Translation A:\ny")
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_concurrency_is_capped(server):
    client = _client(server, max_concurrency=2)

    async def go():
        try:
            return await asyncio.gather(*(client.complete([{"role": "user", "content": f"ZZZ {i}"}])
                                          for i in range(6)))
        finally:
            await client.aclose()
    assert asyncio.run(go()) == ["no idea"] * 6
    assert server.requests == 6 and server.max_in_flight == 2


# ------------------------------------------------------------------ verdicts through the reward
def _cols(n, exemplar="Hallo Welt, wie geht es dir heute?", reference="Hallo Welt, wie geht es dir heute?"):
    return dict(source=["Hello world, how are you today?"] * n, exemplar=[exemplar] * n,
                reference=[reference] * n, src_lang=["en"] * n, tgt_lang=["de"] * n)


def test_exemplar_reward_through_the_openai_backend_scores_parse_failures_as_failures(server, caplog):
    completions = ["<think>ok</think>Hallo Welt, wie geht es dir heute?",   # == exemplar: better
                   "<think>ok</think>Hallo Welt, wie geht es Ihnen heute?",   # differs: worse
                   "<think>ok</think>Hallo Welt, wie geht es dir heute ZZZ?",  # judge says 'no idea'
                   "Hallo Welt, wie geht es dir heute?"]                       # no think block
    args = dict(backend="openai", backend_args={"base_url": server.base_url, "model": "judge", "backoff_s": 0.01})
    before = {id(s) for s in _open_sessions()}  # (sessions other tests keep on the reward runner's loop)
    out = asyncio.run(exemplar_reward(["p"] * 4, completions, **args, **_cols(4)))
    assert list(out) == [1.0, 0.0, 0.0, 0.0]
    assert out.details[0]["verdict"] == "better" and out.details[2]["error"] == "unparsable judge output"
    assert out.details[3] == {"format": "broken"}
    assert server.requests == 3  # the broken format never reached the judge
    assert "1 of 3 judge calls failed" in caplog.text
    # the loop asyncio.run made is gone: the judge's session on it was closed, not leaked
    assert not [s for s in _open_sessions() if id(s) not in before]


def _open_sessions() -> list:
    import gc

    import aiohttp
    return [s for s in gc.get_objects() if type(s) is aiohttp.ClientSession and not s.closed]


def test_exemplar_reward_scores_a_dead_judge_as_failures_without_raising(server):
    server.script = [500] * 10
    args = dict(backend="openai", backend_args={"base_url": server.base_url, "model": "judge", "retries": 1,
                                                "backoff_s": 0.01})
    out = asyncio.run(exemplar_reward(["p"], ["<think>.</think>Hallo Welt, wie geht es dir heute?"],
                                      **args, **_cols(1)))
    assert list(out) == [0.0] and "HTTP 500" in out.details[0]["error"]


def test_grade_scale_and_a_custom_map(server):
    def grader(messages, params):
        return "Grade: 4"
    s = Server(grader)
    try:
        args = dict(backend="openai", scale="grade", verdict_map={1: -1, 2: 0, 3: 0.2, 4: 0.7, 5: 1},
                    backend_args={"base_url": s.base_url, "model": "judge"})
        out = asyncio.run(exemplar_reward(["p"], ["<think>.</think>Hallo Welt, wie geht es dir heute?"],
                                          **args, **_cols(1)))
        assert list(out) == [0.7]
        bad = asyncio.run(exemplar_reward(["p"], ["no think"], **args, **_cols(1)))
        assert list(bad) == [-1.0]  # format failure = the map's lowest value
    finally:
        s.close()
    with pytest.raises(ValueError, match="verdict_map"):
        asyncio.run(exemplar_reward(["p"], ["x"], scale="grade", verdict_map={"better": 1}, **_cols(1)))


def test_metric_judge_verdicts_by_hand():
    ref = "Sie können jederzeit wiederkommen"
    j = MetricJudge(metric="chrf", margin=1.0)
    row = dict(source="You can come back any time", reference=ref)
    assert j.one(Comparison(candidate=ref, exemplar=ref, **row)).label == "equal"            # 100 vs 100
    assert j.one(Comparison(candidate=ref, exemplar="Sie kommen", **row)).label == "better"
    assert j.one(Comparison(candidate="Sie kommen", exemplar=ref, **row)).label == "worse"
    g = MetricJudge(metric="chrf", scale="grade")
    assert g.one(Comparison(candidate=ref, exemplar=ref, **row)).label == 5
    assert g.one(Comparison(candidate="xyz", exemplar=ref, **row)).label == 1                # chrF 0 -> 1 + 0
    assert j.one(Comparison(candidate=ref, exemplar=ref, source="s")).error == "no reference for the metric judge"


def test_parse_verdict_takes_the_first_label_and_lone_digits_only():
    assert parse_verdict("worse, not better", "verdict").label == "worse"
    assert parse_verdict("10/10", "grade").error and parse_verdict("3.5", "grade").error
    assert parse_verdict("I give it a 2", "grade").label == 2


def test_unknown_backend_and_template_field_are_value_errors():
    with pytest.raises(ValueError, match="backend: 'gpt' is not one of"):
        judges.make_judge("gpt")
    with pytest.raises(ValueError, match=r"unknown field 'src'"):
        judges.render_prompt("{src}", Comparison(source="a", candidate="b", exemplar="c"))
    with pytest.raises(ValueError, match="base_url"):
        judges.make_judge("openai", base_url="", model="m")


def test_the_project_server_around_a_local_tiny_model_judges_through_the_hf_path(tmp_path, one_torch_thread):
    """A real local model behind the server: a random tiny model answers noise, which the reward
    scores as a parse failure; the HF judge backend gives the same text in-process."""
    from llmrl.models.tiny import build_tiny_model

    path = str(build_tiny_model(tmp_path / "judge", hidden_size=32, num_layers=1, num_heads=2))
    s = Server(hf_reply(path), model_name=path)
    try:
        template = "{candidate}|{exemplar}="
        out = asyncio.run(exemplar_reward(
            ["p"], ["<think>.</think>Hallo Welt, wie geht es dir heute?"], backend="openai", prompt=template,
            backend_args={"base_url": s.base_url, "model": path, "max_tokens": 6}, gates=False, **_cols(1)))
        served = out.details[0]["judge"]
        local = judges.HFJudge(model=path, prompt=template, max_new_tokens=6)
        [v] = asyncio.run(local.judge([Comparison(source="Hello world, how are you today?",
                                                  candidate="Hallo Welt, wie geht es dir heute?",
                                                  exemplar="Hallo Welt, wie geht es dir heute?")]))
        assert v.raw == served and s.requests == 1
        assert list(out) == ([0.0] if v.label is None else [{"better": 1.0, "equal": 0.5, "worse": 0.0}[v.label]])
    finally:
        s.close()


def test_bad_reward_args_are_refused_at_recipe_load_naming_the_key():
    from llmrl.config.load import RecipeError, load_recipe

    recipe = "recipes/tiny/translation_grpo.yaml"
    load_recipe(recipe, [])  # the shipped recipe is valid
    cases = {"rewards.0.args.backend=gpt": r"rewards\[0\]\.args\.backend: 'gpt' is not one of",
             "rewards.0.args.scale=stars": r"rewards\[0\]\.args\.scale: 'stars'",
             "rewards.0.args.backend_args.metric=meteor": r"rewards\[0\]\.args\.metric: 'meteor'",
             "rewards.0.args.gates.lenght_ratio=[1,2]": r"rewards\[0\]\.args\.gates: unknown key\(s\) \['lenght_ratio'\]",
             "rewards.0.args.verdict_map.6=1": r"rewards\[0\]\.args\.verdict_map: keys"}
    for override, message in cases.items():
        with pytest.raises(RecipeError, match=message):
            load_recipe(recipe, [override])
