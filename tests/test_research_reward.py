"""DeepResearcher's reward against the spec's reference values (../shared/specs/rewards.md)."""
import pytest

from llmrl.rewards.research import research_em_reward, research_f1_reward, search_r1_em_reward


def wrap(answer: str) -> str:
    return f"<think>looked it up</think><answer>{answer}</answer>"


@pytest.mark.parametrize("completion, gold, expected", [
    (wrap("Rialto Bridge"), "rialto bridge", 1.0),
    (wrap("the Rialto Bridge"), "Rialto Bridge", 0.8),            # P 2/3, R 1 -> 0.8 (articles kept)
    (wrap("Paris Paris France"), "Paris", 2 / 3),                 # set {paris, france}: P 1/2, R 1
    (wrap("Turkey"), "türkiye<|answer_split|>turkey", 1.0),       # max over split golds
    ("<think>unclosed<answer>Paris</answer>", "Paris", -1.0),
    ("<think>no answer</think>", "Paris", -1.0),
    (wrap(""), "Paris", 0.0),
    (wrap("U.S.A."), "usa", 0.0),                                 # "u s a" vs "usa"
    ('<think>a</think><tool_call>{"name": "web_search"}</tool_call>', "Paris", -1.0),   # no answer
    ('<think>a</think><tool_call>{"x": 1}<answer>Paris</answer>', "Paris", -1.0),         # unbalanced call
])
def test_reference_values(completion, gold, expected):
    assert research_f1_reward(["q"], [completion], answers=[gold]) == [pytest.approx(expected, abs=1e-4)]


def test_tool_responses_do_not_count_for_the_format():
    # the environment's text (an unclosed <think> inside a page) must not turn a good answer into -1
    c = ("<think>s</think><tool_call>{}</tool_call><tool_response>page says <think> and <answer>x"
         "</tool_response><think>ok</think><answer>Paris</answer>")
    assert research_f1_reward(["q"], [c], answers=[["Paris"]]) == [1.0]


def test_em_and_search_r1():
    rows = [wrap("The Eiffel Tower"), wrap("Eiffel"), "Eiffel Tower"]
    gold = [["Eiffel Tower"]] * 3
    assert research_em_reward(["q"] * 3, rows, answers=gold) == [1.0, 0.0, -1.0]
    assert search_r1_em_reward(["q"] * 3, rows, answers=gold) == [1.0, 0.0, 0.0]
    assert search_r1_em_reward(["q"] * 3, rows, answers=gold, format_score=0.2) == [1.0, 0.2, 0.0]
    assert research_f1_reward(["q"], [wrap("the Rialto Bridge")], answers=[["Rialto Bridge"]],
                              normalisation="squad") == [1.0]
