"""training.end_rules' rule syntax (the measurement itself drafts with the real model: see docs/model-results.md)."""

import argparse

import pytest

from training.end_rules import parse_rule


def test_rules_parse_threshold_holds_and_word():
    assert parse_rule("0.9:1") == (0.9, 1, False)  # the service's +end90
    assert parse_rule("0.95:all") == (0.95, None, False)
    assert parse_rule("0.9:2:word") == (0.9, 2, True)


@pytest.mark.parametrize("bad", ["0.9", "1.0:1", "0.9:1:letters", "x:1"])
def test_malformed_rules_are_refused(bad):
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        parse_rule(bad)
