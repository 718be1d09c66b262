"""The per-category rule text every host shares."""

from dataclasses import dataclass

import pytest

from heie_client.verdict_rules import (
    DEFAULT_REJECT_BELOW, RuleError, format_rules, parse_reject_if, rejected_categories,
)


@dataclass
class R:
    category: str
    severity: float


def test_rules_read_with_spaces_case_and_semicolons():
    assert parse_reject_if(" Hand>0.5 ; text > 0.3,") == {"hand": 0.5, "text": 0.3}
    assert parse_reject_if("") == {}
    assert format_rules(parse_reject_if("hand>0.5,text>0.3")) == "hand>0.5,text>0.3"


@pytest.mark.parametrize("text, says", [
    ("hands>0.5", "not a region category"),
    ("hand=0.5", "is not a rule"),
    ("hand>x", "is not a number"),
    ("hand>1", "below 1"),
    ("hand>-0.1", "at least 0"),
    ("hand>nan", "at least 0"),
    ("hand>0.2,hand>0.3", "given twice"),
])
def test_bad_rules_say_what_is_wrong(text, says):
    with pytest.raises(RuleError, match=says):
        parse_reject_if(text)


def test_a_region_breaks_its_category_rule_only_above_the_limit():
    rules = parse_reject_if("hand>0.5,text>0.3")
    regions = [R("face", 0.9), R("hand", 0.5), R("text", 0.31), R("hand", 0.7), R("text", 0.8)]
    assert rejected_categories(regions, rules) == ["text", "hand"]
    assert rejected_categories([R("hand", 0.5)], rules) == []


def test_any_applies_to_categories_not_named():
    rules = parse_reject_if("any>0.6,hand>0.2")
    assert rejected_categories([R("face", 0.61), R("hand", 0.3), R("text", 0.6)], rules) == ["face", "hand"]


def test_enum_categories_are_read_by_name():
    import enum

    class Category(enum.IntEnum):
        HAND = 1

    assert rejected_categories([R(Category.HAND, 0.9)], {"hand": 0.5}) == ["hand"]


def test_default_threshold_is_the_lower_edge_of_typical():
    assert DEFAULT_REJECT_BELOW == pytest.approx(0.5417, abs=1e-4)


def test_worst_severities_keep_the_worst_region_per_category():
    from heie_client.verdict_rules import worst_severities

    regions = [R("hand", 0.2), R("text", 0.4), R("hand", 0.7), R("hand", float("nan"))]
    assert worst_severities(regions) == {"hand": 0.7, "text": 0.4}
    assert worst_severities([]) == {}
