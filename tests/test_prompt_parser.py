"""A1111 prompt syntax; expected values are A1111's own outputs (its doctests and documented behaviour)."""

import pytest

from modules.prompt_parser import (
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
    split_and,
    text_at_step,
)


def schedule(prompt: str, steps: int = 10, **kwargs) -> list[list]:
    return [list(pair) for pair in get_learned_conditioning_prompt_schedules([prompt], steps, **kwargs)[0]]


ALTERNATE_A_B = [[s, "a" if s % 2 else "(b:1.1)"] for s in range(1, 11)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [[10, "test"]]),
        ("a [b:3]", [[3, "a "], [10, "a b"]]),
        ("a [b: 3]", [[3, "a "], [10, "a b"]]),
        ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
        ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
        ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
        ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
        ("a [unbalanced", [[10, "a [unbalanced"]]),
        ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
        ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
        ("[a|(b:1.1)]", ALTERNATE_A_B),
        ("[fe|]male", [[s, "female" if s % 2 else "male"] for s in range(1, 11)]),
        ("[fe|||]male", [[s, "female" if s % 4 == 1 else "male"] for s in range(1, 11)]),
        ("a [b::3] c", [[3, "a b c"], [10, "a  c"]]),
        ("[a:b:0.25]", [[2, "a"], [10, "b"]]),  # int(0.25 * 10) = 2
        ("[a:b:20]", [[10, "a"]]),  # clamped to the number of steps
        ("[a:b:0]", [[10, "b"]]),  # never before: step 0 is not a boundary
        ("[a:b:1.0]", [[10, "a"]]),  # written with a dot: a fraction (1.0 = the end)
        ("(a [b:c:5]) d", [[5, "(a b) d"], [10, "(a c) d"]]),
        ("a | b", [[10, "a | b"]]),  # "|" outside an alternation: literal
        ("[a:b:3] | c", [[10, "[a:b:3] | c"]]),
        ("trailing \\", [[10, "trailing \\"]]),
        ("\\[a:b:3\\]", [[10, "\\[a:b:3\\]"]]),  # escaped brackets are not a schedule
        ("[a:b:3x]", [[10, "[a:b:3x]"]]),
        ("[a:b:1e1]", [[10, "a"]]),
        ("", [[10, ""]]),
    ],
)
def test_schedules_match_a1111(prompt, expected):
    assert schedule(prompt) == expected


def test_documented_a1111_example_with_100_steps():
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert schedule(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


def test_nested_alternation_inside_schedule():
    assert schedule("[[x|y]:z:3]", 4) == [[1, "x"], [2, "y"], [3, "x"], [4, "z"]]


def test_hires_and_old_scheduling():
    assert schedule("a [b:.5] c", 10, hires_steps=10) == [[10, "a b c"]]
    assert schedule("a [b:1.5] c", 10, hires_steps=10) == [[5, "a  c"], [10, "a b c"]]
    assert schedule("a [b:13] c", 10, hires_steps=10) == [[3, "a  c"], [10, "a b c"]]
    # before A1111 1.6: below 1 is a fraction, anything else a step number
    assert schedule("[a:b:1.5]", 10, use_old_scheduling=True) == [[1, "a"], [10, "b"]]
    assert schedule("[a:b:1.5]", 10) == [[10, "a"]]


def test_schedules_keep_order_and_duplicates():
    result = get_learned_conditioning_prompt_schedules(["x", "[y:z:2]", "x"], 4)
    assert result == [[(4, "x")], [(2, "y"), (4, "z")], [(4, "x")]]


def test_text_at_step():
    sched = get_learned_conditioning_prompt_schedules(["[a:b:2]"], 4)[0]
    assert [text_at_step(sched, s) for s in range(0, 5)] == ["a", "a", "a", "b", "b"]


@pytest.mark.parametrize("steps", [0, -1, 2.5])
def test_bad_steps_are_a_clear_error(steps):
    with pytest.raises(ValueError, match="steps"):
        get_learned_conditioning_prompt_schedules(["a"], steps)


def test_deep_nesting_is_fast():
    prompt = "(" * 200 + "masterpiece" + ")" * 200 + " [" * 100 + "x"
    assert schedule(prompt) == [[10, prompt]]
    unclosed = "[" * 5000 + "a:b:3"
    assert schedule(unclosed) == [[10, unclosed]]
    assert parse_prompt_attention(unclosed)[0][0] == "a:b:3"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("[x]", [("x", 1 / 1.1)]),
        ("(x:1.3)", [("x", 1.3)]),
        ("(x: 0.5 )", [("x", 0.5)]),
        ("(x:-1)", [("x", -1.0)]),
        ("a) b] c", [("a) b] c", 1.0)]),
        ("\\\\ back", [("\\ back", 1.0)]),
        ("a\\b", [("ab", 1.0)]),  # A1111 drops a lone backslash
        ("a:b", [("a:b", 1.0)]),
        ("", [("", 1.0)]),
        ("(a:1.2.3)", [("a:1.2.3)", 1.1)]),  # A1111 raises here; we keep the text
    ],
)
def test_attention_matches_a1111(prompt, expected):
    assert parse_prompt_attention(prompt) == expected


def test_break():
    assert parse_prompt_attention("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_prompt_attention("BREAK b") == [("", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_prompt_attention("(a) BREAK (b)") == [
        ("a", 1.1),
        ("", 1.0),
        ("BREAK", -1.0),
        ("", 1.0),
        ("b", 1.1),
    ]
    assert parse_prompt_attention("BREAKFAST") == [("BREAKFAST", 1.0)]
    # as in A1111, a BREAK inside brackets gets weighted and so is no longer a break marker
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]


def test_split_and():
    assert split_and("a cat AND a dog :0.5") == [("a cat", 1.0), (" a dog", 0.5)]
    assert split_and("a cat:1.5 AND a dog") == [("a cat", 1.5), (" a dog", 1.0)]
    assert split_and("ANDROID") == [("ANDROID", 1.0)]
    assert split_and("x AND y :-1") == [("x", 1.0), (" y", -1.0)]
    assert split_and("(a:1.2)") == [("(a:1.2)", 1.0)]


def test_multicond_prompt_list_deduplicates():
    indexes, flat, index_of = get_multicond_prompt_list(["a AND b:2", "b:3 AND c"])
    assert flat == ["a", " b", "b", " c"]
    assert indexes == [[(0, 1.0), (1, 2.0)], [(2, 3.0), (3, 1.0)]]
    assert index_of == {"a": 0, " b": 1, "b": 2, " c": 3}
    assert get_multicond_prompt_list(["x", "x"])[1] == ["x"]
