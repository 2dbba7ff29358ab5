"""The dynamic-group filter language: what it matches, how it orders versions, and that
every malformed filter is refused with the position and what was expected there."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.errors import InvalidRequest
from garrison.fleet.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_VALUES,
    AllOf,
    AnyOf,
    Condition,
    Facts,
    Not,
    parse_filter,
    version_key,
)

EDGE = Facts(
    model="edge-gw-2",
    serial="DM-1000",
    firmware="2.0.9",
    agent="0.4.0",
    slot="a",
    slot_state="committed",
    tags=frozenset({"line-3", "berlin"}),
    apps={"modbus-bridge": "1.2.0"},
)
BARE = Facts(model="edge-gw-2", serial="DM-2000")  # enrolled, never reported


def matches(text: str, facts: Facts = EDGE) -> bool:
    return parse_filter(text).matches(facts)


def test_the_example_of_the_issue() -> None:
    text = (
        'model == "edge-gw-2" and (tag == "line-3" or firmware < "2.1.0") and not app.modbus-bridge'
    )
    flt = parse_filter(text)
    assert flt.text == text
    assert flt.root == AllOf(
        (
            Condition("model", "==", ("edge-gw-2",)),
            AnyOf(
                (
                    Condition("tag", "==", ("line-3",)),
                    Condition("firmware", "<", ("2.1.0",)),
                )
            ),
            Not(Condition("app.modbus-bridge", "has")),
        )
    )
    assert not flt.matches(EDGE)  # it runs modbus-bridge
    assert flt.matches(Facts("edge-gw-2", "X", firmware="2.0.0"))
    assert not flt.matches(Facts("edge-gw-2", "X", firmware="2.1.0"))
    assert flt.matches(Facts("edge-gw-2", "X", firmware="2.1.0", tags=frozenset({"line-3"})))
    assert not flt.matches(Facts("edge-gw-1", "X", firmware="1.0"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('model == "edge-gw-2"', True),
        ("model == 'edge-gw-2'", True),
        ('model != "edge-gw-2"', False),
        ('serial ~= "DM-1*"', True),
        ('serial ~= "DM-2*"', False),
        ('serial ~= "DM-1?00"', True),
        ('model in ["a", "edge-gw-2"]', True),
        ('model in ["a", "b"]', False),
        ('firmware == "2.0.9"', True),
        ('firmware < "2.1"', True),
        ('firmware < "2.0.10"', True),  # numeric, not text: 9 < 10
        ('firmware > "2.0.10"', False),
        ("firmware >= 2.0.9", True),  # a bare version
        ("firmware <= 2.0.8", False),
        ('agent == "0.4.0"', True),
        ('slot == "a"', True),
        ('slot_state != "trying"', True),
        ('tag == "line-3"', True),
        ('tag == "line-4"', False),
        ('tag != "line-4"', True),
        ('tag != "berlin"', False),
        ('tag in ["x", "berlin"]', True),
        ('tag ~= "line-*"', True),
        ('tag ~= "paris*"', False),
        ("app.modbus-bridge", True),
        ("app.other", False),
        ('app.modbus-bridge >= "1.2"', True),
        ('app.modbus-bridge < "1.10"', True),
        ('app.other < "9"', False),
        ('not model == "x"', True),
        ("not not app.modbus-bridge", True),
        ('model == "x" or tag == "berlin"', True),
        ('model == "x" or tag == "berlin" and slot == "b"', False),  # and binds tighter
        ('(model == "x" or tag == "berlin") and slot == "a"', True),
        ('serial == "a \\" b"', False),
    ],
)
def test_conditions(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('firmware == "1.0"', False),
        ('firmware != "1.0"', True),  # not equal: it has no firmware at all
        ('firmware < "9"', False),
        ('firmware >= "0"', False),
        ('firmware in ["1.0"]', False),
        ('firmware ~= "*"', False),
        ('slot_state != "committed"', True),
        ('tag != "x"', True),
        ('tag ~= "*"', False),
        ("app.x", False),
        ('model == "edge-gw-2"', True),
    ],
)
def test_a_device_that_never_reported(text: str, expected: bool) -> None:
    assert matches(text, BARE) is expected


def test_versions_compare_numerically_when_both_are_dotted_numbers() -> None:
    assert version_key("2.10.0") > version_key("2.9")
    assert version_key("2.1") < version_key("2.1.0")
    assert version_key("10") > version_key("9")
    assert matches('firmware < "2.0.9-rc1"', Facts("m", "s", firmware="2.0.9"))  # as text
    assert not matches('firmware < "factory"', Facts("m", "s", firmware="factory"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model ==", "position 9: expected a quoted string or a version, found the end"),
        ('model = "x"', "position 7: '=' is not an operator; use '=='"),
        ('(model == "a"', "position 14: expected ')' to close the parenthesis"),
        ('foo == "x"', "position 1: unknown attribute 'foo'"),
        ('tag < "x"', "position 5: tags cannot be ordered with '<'"),
        ('model in ["a",]', "position 15: expected a quoted string or a version, found ']'"),
        ('model in "a"', "position 10: expected '[' to start the list of values"),
        ('model in ["a" "b"]', "position 15: expected ',' or ']' to end the list of values"),
        ('model == "abc', 'position 10: expected the closing " of this string'),
        ("and", "position 1: expected a condition"),
        ("firmware >= 2.1.0 or", "position 21: expected a condition"),
        ("app.BAD", "position 5: 'BAD' is not a valid app name"),
        ('model == "a" model', "position 14: expected 'and', 'or' or the end, found 'model'"),
        ("model", "position 6: expected an operator (== != < <= > >= in ~=) after 'model'"),
        ('model == "a\\x"', "position 12: expected \\\\"),
        ('model == "a\nb"', "position 12: expected the closing quote"),
        ("model == #", "position 10: unexpected character '#'"),
        ("not", "position 4: expected a condition"),
        ("()", "position 2: expected a condition"),
        ('model == "' + "x" * 129 + '"', "position 10: a string is at most 128 characters"),
    ],
)
def test_parse_errors_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_filter(text)
    assert message in str(refused.value)
    assert str(refused.value).startswith("filter, position ")
    assert "example:" in refused.value.hint


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "needs a non-empty filter"),
        ("   ", "needs a non-empty filter"),
        (None, "a filter must be a string"),
        (42, "a filter must be a string"),
        ("x" * (MAX_LENGTH + 1), f"at most {MAX_LENGTH} characters"),
    ],
)
def test_not_a_filter(value: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_filter(value)


def test_limits_on_depth_conditions_and_lists() -> None:
    deep_ok = "(" * (MAX_DEPTH - 1) + 'model == "a"' + ")" * (MAX_DEPTH - 1)
    assert not matches(deep_ok)
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_DEPTH}"):
        parse_filter("(" * MAX_DEPTH + 'model == "a"' + ")" * MAX_DEPTH)
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_DEPTH}"):
        parse_filter("not " * (MAX_DEPTH + 1) + 'model == "a"')
    many = " or ".join(['model == "a"'] * MAX_CONDITIONS)
    assert not matches(many)
    with pytest.raises(InvalidRequest, match=f"at most {MAX_CONDITIONS} conditions"):
        parse_filter(many + ' or model == "b"')
    values = ", ".join(f'"{i}"' for i in range(MAX_VALUES))
    assert not matches(f"model in [{values}]")
    with pytest.raises(InvalidRequest, match=f"at most {MAX_VALUES} values"):
        parse_filter(f'model in [{values}, "x"]')


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("modelfirwa=!<>~()[],\"' andortgp.-12")), max_size=60))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    """No input makes the parser fail with anything but InvalidRequest, and what parses
    evaluates without error."""
    try:
        flt = parse_filter(text)
    except InvalidRequest as exc:
        assert str(exc).startswith(("filter, position ", "a dynamic group needs"))
        return
    flt.matches(EDGE)
    flt.matches(BARE)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=4),
    st.lists(st.integers(0, 30), min_size=1, max_size=4),
)
def test_numeric_versions_order_like_integer_tuples(a: list[int], b: list[int]) -> None:
    left, right = ".".join(map(str, a)), ".".join(map(str, b))
    facts = Facts("m", "s", firmware=left)
    assert matches(f'firmware < "{right}"', facts) is (tuple(a) < tuple(b))
    assert matches(f'firmware >= "{right}"', facts) is (tuple(a) >= tuple(b))
