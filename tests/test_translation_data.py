"""WMT22 and number-words loaders, `llmrl exemplars build` (against the project's chat server on
127.0.0.1: resumable, failures retried next run) and `llmrl eval translation`."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("sacrebleu")
pytest.importorskip("num2words")

from llmrl.cli import app  # noqa: E402
from llmrl.data.registry import build_dataset  # noqa: E402
from llmrl.data.translation import number_words_dataset, wmt22_dataset  # noqa: E402

runner = CliRunner()


@pytest.mark.requires_data("wmt22")
def test_wmt22_splits_are_disjoint_fixed_halves_with_the_reward_columns():
    train = wmt22_dataset("train", None, directions="en-de")
    test = wmt22_dataset("test", None, directions="en-de")
    assert len(train) + len(test) == 2037 and not set(train["source"]) & set(test["source"])
    assert 0.4 < len(train) / 2037 < 0.6
    assert list(wmt22_dataset("test", None, seed=5, directions="en-de")["source"]) == list(test["source"])  # seed-free
    row = test[0]
    assert row["src_lang"] == "en" and row["tgt_lang"] == "de" and row["reference"] == row["answer"]
    assert row["source"] in row["prompt"] and "German" in row["prompt"] and row["exemplar"] is None
    both = build_dataset("wmt22", "test", n=6, seed=0, args={"directions": "en-de,zh-en",
                                                             "exemplar_from_reference_b": True})
    assert list(both["pair"]) == ["en-de"] * 3 + ["zh-en"] * 3 and all(both["exemplar"])
    with pytest.raises(ValueError, match="data.args.directions: \\['en-fr'\\]"):
        wmt22_dataset("test", 1, directions="en-fr")


@pytest.mark.requires_data("wmt22")
def test_wmt22_reads_an_exemplars_file_and_names_a_bad_line(tmp_path):
    src = wmt22_dataset("test", 2, directions="en-de")["source"]
    f = tmp_path / "ex.jsonl"
    f.write_text(json.dumps({"source": src[1], "tgt_lang": "de", "exemplar": "EX"}) + "\n")
    assert list(wmt22_dataset("test", 2, directions="en-de", exemplars=str(f))["exemplar"]) == [None, "EX"]
    f.write_text('{"source": "x"}\n')
    with pytest.raises(ValueError, match="exemplars: .* line 1"):
        wmt22_dataset("test", 2, directions="en-de", exemplars=str(f))


def test_number_words_is_ascii_split_by_number_and_deterministic():
    train, test = number_words_dataset("train", None), number_words_dataset("test", None)
    assert len(train) + len(test) == 999 and not set(train["source"]) & set(test["source"])
    assert all(c.isascii() for s in list(train["answer"]) + list(test["answer"]) for c in s)
    both = {r["source"]: r for ds in (train, test) for r in ds}
    row = both["two hundred and thirty-four"]
    assert row["reference"] == row["exemplar"] == "deux cent trente-quatre" and row["prompt"].endswith("=")
    def draw(seed):
        return list(number_words_dataset("train", 5, seed=seed)["source"])
    assert draw(1) == draw(1) != draw(2)


@pytest.fixture()
def translator():
    """The chat server answering 'Translation: <SOURCE UPPERCASED>' (after a think block), or
    nonsense-then-500 for sources containing FAIL."""
    from test_translation_judge import Server

    def reply(messages, params):
        source = messages[-1]["content"].rsplit("\n\n", 1)[1]
        if "FAIL" in source:
            return ""
        return f"<think>easy</think>{source.upper()}"

    s = Server(reply)
    yield s
    s.close()


def test_exemplars_build_resumes_and_retries_failures(translator, tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"source": s, "src_lang": "en", "tgt_lang": "de"} for s in ("one", "two", "FAIL three", "one")]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "ex.jsonl"
    args = ["exemplars", "build", str(data), "--out", str(out), "--model", "m", "--base-url", translator.base_url,
            "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output  # one source got no usable answer
    assert json.loads(res.output.strip().splitlines()[-1]) == {"out": str(out), "written": 2, "skipped": 1,
                                                               "failed": 1}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["source"], x["exemplar"]) for x in lines] == [("one", "ONE"), ("two", "TWO")]  # think block dropped
    asked = translator.requests
    res = runner.invoke(app, args)  # the rerun asks only for the failed one
    assert translator.requests == asked + 1 and json.loads(res.output.strip().splitlines()[-1])["skipped"] == 3
    # the file feeds the wmt22 loader's exemplars key (same record shape)
    from llmrl.data.translation import load_exemplars
    assert load_exemplars(out)[("de", "two")] == "TWO"


def test_exemplars_build_refuses_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": 1}\n')
    res = runner.invoke(app, ["exemplars", "build", str(bad), "--out", str(tmp_path / "o.jsonl"), "--model", "m",
                              "--base-url", "http://127.0.0.1:9/v1"])
    assert res.exit_code == 2 and "line 1" in res.output
    res = runner.invoke(app, ["exemplars", "build", "--out", str(tmp_path / "o.jsonl"), "--model", "m"])
    assert res.exit_code == 2 and "--directions" in res.output


@pytest.mark.requires_data("wmt22")
def test_eval_translation_scores_hypotheses_per_direction_with_cis(tmp_path):
    ds = wmt22_dataset("test", 20, directions="en-de,en-zh")
    hyp = tmp_path / "h.jsonl"
    # en-de: the reference itself (BLEU, chrF 100); en-zh: the English source (chrF near 0)
    hyp.write_text("\n".join(json.dumps({"pair": p, "id": i, "hypothesis": r if p == "en-de" else s})
                             for p, i, r, s in zip(ds["pair"], ds["id"], ds["reference"], ds["source"])) + "\n")
    res = runner.invoke(app, ["eval", "translation", "--hypotheses", str(hyp), "--directions", "en-de,en-zh",
                              "--limit", "20", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)["directions"]
    assert rep["en-de"]["segments"] == 10 and rep["en-de"]["chrf"] == {"score": 100.0, "low": 100.0, "high": 100.0}
    assert rep["en-zh"]["chrf"]["high"] < 10 and rep["en-zh"]["bleu"]["low"] <= rep["en-zh"]["bleu"]["score"]
    hyp.write_text("")
    res = runner.invoke(app, ["eval", "translation", "--hypotheses", str(hyp), "--limit", "2"])
    assert res.exit_code == 2 and "no hypothesis" in res.output
