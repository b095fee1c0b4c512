"""Math reward: extraction, equivalence, chat format, None-safety, worker threads; GSM8K data."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from llmrl.data.gsm8k import gold_answer, gsm8k_dataset
from llmrl.rewards.format import boxed_format_reward, think_answer_format_reward
from llmrl.rewards.math import extract_final_answer, math_reward

# (completion, gold, expected reward, why)
CASES = [
    (r"The total is \boxed{72}.", "72", 1.0, "boxed integer"),
    (r"\boxed{\frac{1}{2}}", "0.5", 1.0, "boxed LaTeX fraction equals decimal gold"),
    ("48 + 24 = 72\n#### 72", "72", 1.0, "GSM8K marker"),
    ("#### 1,234", "1234", 1.0, "thousands separator stripped"),
    ("So she has 3 apples, then 5, answer 8", "8", 1.0, "last number wins"),
    ("first 8 then 9", "8", 0.0, "last number is 9, not 8"),
    ("the answer is 1/2", "0.5", 1.0, "fraction vs decimal via math-verify"),
    ("0.5", "1/2", 1.0, "decimal vs fraction, other direction"),
    (r"\boxed{3} but 4 later", "3", 1.0, "boxed beats a later number"),
    ("72.0", "72", 1.0, "72.0 == 72"),
    ("-7", "-7", 1.0, "negative integer"),
    ("7", "-7", 0.0, "sign matters"),
    (r"\boxed{x^2 + 2x + 1}", "(x+1)^2", 1.0, "symbolic equivalence"),
    (r"\boxed{x^2 + 1}", "(x+1)^2", 0.0, "symbolic non-equivalence"),
    ("I don't know", "5", 0.0, "no number at all"),
    ("", "5", 0.0, "empty completion"),
    (None, "5", 0.0, "None completion"),
]


@pytest.mark.parametrize("completion,gold,expected,why", CASES, ids=[c[3] for c in CASES])
def test_math_reward_table(completion, gold, expected, why):
    assert math_reward(["q"], [completion], answer=[gold]) == [expected], why


def test_extract_final_answer_precedence():
    # boxed > #### > last number; nested braces in boxed are kept whole.
    assert extract_final_answer(r"x \boxed{\frac{a}{b}} y 3") == r"\frac{a}{b}"
    assert extract_final_answer("5 apples\n#### 12\n") == "12"
    assert extract_final_answer("costs $1,500.50 total") == "1500.50"
    assert extract_final_answer("a 2/3 share") == "2/3"
    assert extract_final_answer("nothing") is None
    assert extract_final_answer(None) is None


def test_none_gold_is_not_applicable_and_chat_format():
    chat = [[{"role": "assistant", "content": r"so \boxed{10}"}],
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "it is 11"}]]
    assert math_reward(["q", "q"], chat, answer=["10", "10"]) == [1.0, 0.0]
    assert math_reward(["q", "q"], ["1", "2"], answer=[None, "2"]) == [None, 1.0]
    # A gold that is a whole GSM8K solution is reduced to its final number.
    assert math_reward(["q"], ["72"], answer=["48+24=72\n#### 72"]) == [1.0]
    # Extra dataset columns arrive as kwargs and are ignored.
    assert math_reward(["q"], ["3"], answer=["3"], question=["x"]) == [1.0]


def test_math_reward_in_worker_threads():
    # math-verify's default signal.alarm timeout raises off the main thread; the reward must
    # still give correct scores there (the trainer scores rewards in a thread pool).
    completions = ["1/2", r"\boxed{\frac{2}{4}}", "0.25", "#### 3"]
    golds = ["0.5", "0.5", "0.5", "3"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        scores = pool.submit(math_reward, ["q"] * 4, completions, answer=golds).result(timeout=60)
    assert scores == [1.0, 1.0, 0.0, 1.0]


def test_format_rewards():
    assert think_answer_format_reward(
        ["q"] * 4,
        ["<think>a\nb</think>\n<answer>4</answer>", "<answer>4</answer>",
         "<think>a</think><answer>4</answer> trailing", [{"role": "assistant",
                                                         "content": "<think></think><answer>1</answer>"}]],
    ) == [1.0, 0.0, 0.0, 1.0]
    assert boxed_format_reward(["q"] * 2, [r"so \boxed{4}", "4"]) == [1.0, 0.0]


@pytest.mark.requires_data("gsm8k")
def test_gsm8k_offline_counts_and_fields():
    train, test = gsm8k_dataset("train"), gsm8k_dataset("test")
    assert (len(train), len(test)) == (7473, 1319)  # counts from the data README
    assert set(train.column_names) >= {"prompt", "answer"}
    # First train record (README example): Natalia's clips, 48 + 48/2 = 72.
    assert train[0]["answer"] == "72"
    assert train[0]["prompt"].startswith("Natalia sold clips") and "####" in train[0]["prompt"]
    assert all("," not in a for a in test["answer"])
    assert len(gsm8k_dataset("test", n=5)) == 5
    # The gold solutions themselves score 1.0 against the extracted answers.
    assert math_reward(test["prompt"][:50], test["solution"][:50], answer=test["answer"][:50]) == [1.0] * 50


def test_gsm8k_errors():
    assert gold_answer("a\n#### 1,072") == "1072"
    with pytest.raises(ValueError, match="split"):
        gsm8k_dataset("validation")
    with pytest.raises(ValueError, match="not found"):
        gsm8k_dataset("train", source="/nonexistent/gsm8k")
