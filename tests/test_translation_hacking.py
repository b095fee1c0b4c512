"""Reward hacking on real WMT22 strings: wrong-language output, a copy of the source, empty
output, the exemplar repeated twice, an overlong answer. None may score above a genuine
reference translation under the default reward (translation_exemplar, metric backend), under
the chrF reward, or under a judge that calls everything 'better' (the gates stop what a fooled
judge lets through). Also: how often the gates wrongly fail genuine translations."""
from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("lingua")

from llmrl.paths import find_local_data  # noqa: E402
from llmrl.rewards.registry import resolve_reward  # noqa: E402
from llmrl.rewards.translation.gates import Gates, gate_failure  # noqa: E402

pytestmark = pytest.mark.requires_data("wmt22")

N = 12  # segments per direction: sentences of 40+ characters (short titles are judged elsewhere)


def _rows(pair: str) -> list[dict]:
    path = find_local_data(f"translation/wmt22/generaltest2022.{pair}.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def wmt():
    """en-de and en-zh segments with both references, plus the same source's reference in two
    other languages (the en-* files share their English sources) for wrong-language output."""
    other = {p: {r["src"]: r["ref"] for r in _rows(p)} for p in ("en-zh", "en-ru", "en-ja", "en-de")}
    out = {}
    for pair, wrong in (("en-de", ("en-ru", "en-zh")), ("en-zh", ("en-de", "en-ja"))):
        rows = [r for r in _rows(pair) if len(r["src"]) >= 40 and "B" in r["refs"]
                and all(r["src"] in other[w] for w in wrong)][:N]
        assert len(rows) == N
        out[pair] = [dict(r, wrong=[other[w][r["src"]] for w in wrong]) for r in rows]
    return out


def _columns(rows):
    # the reference the metric compares with is translator A; the exemplar, translator B
    return dict(source=[r["src"] for r in rows], reference=[r["ref"] for r in rows],
                exemplar=[r["refs"]["B"] for r in rows], src_lang=[r["src_lang"] for r in rows],
                tgt_lang=[r["tgt_lang"] for r in rows])


HACKS = {
    "wrong_language_1": lambda r: r["wrong"][0],
    "wrong_language_2": lambda r: r["wrong"][1],
    "source_copy": lambda r: r["src"],
    "empty": lambda r: "",
    "exemplar_twice": lambda r: r["refs"]["B"] + " " + r["refs"]["B"],
    "overlong": lambda r: r["ref"] + " " + " ".join(x["ref"] for x in [r] * 2),
    "reference_twice": lambda r: r["ref"] + "\n" + r["ref"],
}


def _think(text: str) -> str:
    return f"<think>Translate it faithfully.</think>\n{text}"


def _score(name, rows, texts, **args):
    fn = resolve_reward(name)
    out = fn([""] * len(texts), [_think(t) for t in texts], **args, **_columns(rows))
    return asyncio.run(out) if asyncio.iscoroutine(out) else out


@pytest.mark.parametrize("pair", ["en-de", "en-zh"])
@pytest.mark.parametrize("reward,args", [
    ("translation_exemplar", {}),                         # the default: metric judge, verdict scale
    ("translation_exemplar", {"scale": "grade"}),
    ("translation_metric", {}),                           # chrF
    ("translation_metric", {"metric": "bleu"}),
])
def test_no_hack_scores_above_the_genuine_reference(wmt, pair, reward, args):
    rows = wmt[pair]
    genuine = _score(reward, rows, [r["ref"] for r in rows], **args)
    assert min(genuine) > 0, (genuine, [d for d in genuine.details])  # the gates let genuine ones through
    for hack, make in HACKS.items():
        hacked = _score(reward, rows, [make(r) for r in rows], **args)
        above = [(i, g, h, d) for i, (g, h, d) in enumerate(zip(genuine, hacked, hacked.details)) if h > g]
        assert not above, (hack, above[:3])
        # and each hack is caught by a gate or the format check, not merely scored lower
        assert all(d.get("gate") or d.get("format") for d in hacked.details), (hack, hacked.details[:3])


def test_a_fooled_judge_still_gives_every_hack_the_floor(wmt, monkeypatch):
    """A judge that says 'better' to anything (the blind spot WALAR describes): genuine
    translations get 1.0, every hack 0.0, because the gates run before the judge."""
    from llmrl.rewards.translation import judges

    class Gullible:
        scale = "verdict"
        calls = 0

        async def judge(self, rows):
            Gullible.calls += len(rows)
            return [judges.Verdict("better", raw="better") for _ in rows]

    monkeypatch.setattr(judges, "make_judge", lambda *a, **k: Gullible())
    monkeypatch.setattr("llmrl.rewards.translation.rewards.make_judge", lambda *a, **k: Gullible())
    rows = wmt["en-de"] + wmt["en-zh"]
    assert list(_score("translation_exemplar", rows, [r["ref"] for r in rows])) == [1.0] * len(rows)
    for hack, make in HACKS.items():
        before = Gullible.calls
        assert list(_score("translation_exemplar", rows, [make(r) for r in rows])) == [0.0] * len(rows), hack
        assert Gullible.calls == before, hack  # the judge never saw them


def test_without_gates_the_fooled_judge_is_hacked(wmt, monkeypatch):
    """The control: the same judge with gates off pays the hacks in full (so the test above
    tests the gates, not the judge)."""
    from llmrl.rewards.translation import judges

    class Gullible:
        scale = "verdict"

        async def judge(self, rows):
            return [judges.Verdict("better") for _ in rows]

    monkeypatch.setattr("llmrl.rewards.translation.rewards.make_judge", lambda *a, **k: Gullible())
    rows = wmt["en-de"]
    for hack in ("wrong_language_1", "source_copy", "exemplar_twice"):
        assert list(_score("translation_exemplar", rows, [HACKS[hack](r) for r in rows], gates=False)) == [1.0] * N


def test_format_failures_score_the_lowest_value(wmt):
    rows = wmt["en-de"][:3]
    fn = resolve_reward("translation_exemplar")
    bad = ["no think block " + rows[0]["ref"], "<think>x</think>", "<think>a</think>" + rows[2]["ref"] + "\n\nNote: literal."]
    out = asyncio.run(fn([""] * 3, bad, verdict_map={"better": 2.0, "equal": 1.0, "worse": -1.0}, **_columns(rows)))
    assert list(out) == [-1.0] * 3 and all(d == {"format": "broken"} for d in out.details)


@pytest.mark.parametrize("pair", ["en-de", "de-en", "en-zh", "zh-en", "en-ru", "ru-en", "en-ja", "ja-en", "de-fr", "fr-de"])
def test_gates_pass_genuine_translations(pair):
    """False positives on real references (the first 150 segments): at most 4%. The other
    reference is the length anchor where there is one, else the source."""
    rows = _rows(pair)[:150]
    g = Gates()
    failed = [(r["ref"][:60], why) for r in rows if (why := gate_failure(
        r["ref"], gates=g, source=r["src"], tgt_lang=r["tgt_lang"], src_lang=r["src_lang"],
        exemplar=r["refs"].get("B"))) is not None]
    assert len(failed) <= 0.04 * len(rows), failed


def test_wrong_language_is_named_and_short_titles_are_not_failed():
    g = Gates()
    why = gate_failure("Es tut mir leid, dass Ihre Bestellung zu spät ist.", gates=g, tgt_lang="en", src_lang="de",
                       source="Es tut mir leid, dass Ihre Bestellung zu spät ist.X")
    assert why in ("source_copy", "wrong_language:de")
    assert gate_failure("Es tut mir leid, dass Ihre Bestellung zu spät ist.", gates=Gates(copy=False),
                        tgt_lang="en", src_lang="zh", source="很抱歉您的订单迟到了。") == "wrong_language:de"
    # lingua ranks German first here (de 0.41, en 0.34): the threshold keeps it
    assert gate_failure("LG has a prettier red.", gates=g, tgt_lang="en", src_lang="ja",
                        source="LGのは綺麗に赤として出る。") is None


def test_gates_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"gates: unknown key\(s\) \['lenght_ratio'\]"):
        Gates.of({"lenght_ratio": [0.5, 2]})
    with pytest.raises(ValueError, match="gates.length_ratio"):
        Gates.of({"length_ratio": [2, 1]})
    assert Gates.of(False) is None and Gates.of({"source_length_ratio": [0.3, 3]}).source_length_ratio == (0.3, 3)


def test_path_is_read_in_place():
    assert Path(find_local_data("translation/wmt22/generaltest2022.en-de.jsonl.gz")).is_file()


def test_gated_wraps_any_reward_and_language_reward_is_binary(wmt):
    """translation_gated puts the gates in front of another reward (here chrF with its own gates
    off); translation_language pays 1 only for the target language."""
    rows = wmt["en-de"][:4]
    inner = {"reward": "translation_metric", "reward_args": {"gates": False, "require_think": False}}
    gated = resolve_reward("translation_gated")
    cols = _columns(rows)
    honest = gated([""] * 4, [r["ref"] for r in rows], **inner, **cols)
    copied = gated([""] * 4, [r["src"] for r in rows], **inner, **cols)
    ungated = gated([""] * 4, [r["src"] for r in rows], **{**inner, "gates": False}, **cols)
    assert min(honest) > 0.5 and list(copied) == [0.0] * 4 and min(ungated) > 0
    assert {d["gate"] for d in copied.details} == {"source_copy"}
    lang = resolve_reward("translation_language")
    assert list(lang([""] * 4, [_think(r["ref"]) for r in rows], **cols)) == [1.0] * 4
    assert list(lang([""] * 4, [_think(r["wrong"][0]) for r in rows], **cols)) == [0.0] * 4
    assert list(lang([""] * 4, [r["ref"] for r in rows], **cols)) == [0.0] * 4  # no think block
