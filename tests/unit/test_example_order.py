"""training.example_order's re-ranking of prompt examples (no model: a fixed example source)."""

import pytest

from radbridge.prompt import Example
from training.example_order import ReRanked

# Ten nearest signed reports, most similar last (as the retriever returns them).
NEAR = [Example(f"f{i}", text, sim, f"r{i}") for i, (text, sim) in enumerate([
    ("Small right pleural effusion with adjacent basilar atelectasis, follow-up advised.", 0.30),
    ("Right pleural effusion.", 0.35),
    ("Cardiomegaly.", 0.40),
    ("No acute disease.", 0.45),
    ("No acute disease.", 0.50),
    ("No acute cardiopulmonary abnormality.", 0.55),
    ("No acute disease.", 0.60),
    ("Heart size normal.", 0.65),
    ("No acute cardiopulmonary process.", 0.70),
    ("No acute disease.", 0.75),
])]  # fmt: skip


class Source:
    def __init__(self):
        self.asked: list[int] = []

    def examples_for(self, findings: str, k: int) -> list[Example]:
        self.asked.append(k)
        return NEAR[-k:]


EFFUSION = "There is a small right pleural effusion. Heart size is normal."


def test_nearest_and_normal_findings_keep_the_retrievers_order():
    assert ReRanked(Source(), "nearest").examples_for(EFFUSION, 2) == NEAR[-2:]
    assert ReRanked(Source(), "match").examples_for("Lungs are clear. Heart size is normal.", 2) == NEAR[-2:]


def test_match_shows_examples_naming_what_the_findings_assert_closest():
    source = Source()
    shown = ReRanked(source, "match").examples_for(EFFUSION, 2)
    assert source.asked == [10]  # re-ranks among the 10 nearest
    assert [ex.ref for ex in shown] == ["r0", "r1"]  # both name the effusion; the more similar one last
    long = ReRanked(Source(), "long").examples_for(EFFUSION, 2)
    assert [ex.ref for ex in long] == ["r1", "r0"]  # among those, the longer impression closest to the question
    assert len(ReRanked(Source(), "match").examples_for(EFFUSION, 5)) == 5


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="order"):
        ReRanked(Source(), "random")
