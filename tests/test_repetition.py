"""The loop detector on its own, fed tokens as generation streams them: real repetition passes, loops are cut in bound."""
from __future__ import annotations

import random

import pytest

from internvl_cli.decoding.repetition import LoopDetector, LoopRule, find_loop, find_text_loop
from repetitive import LEGIT_PAGES, LOOP_PREFIX, LOOP_UNITS

BUDGET = 4096


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def stream(tokenizer, text: str) -> tuple[list[int], list[str]]:
    """The token ids a model writing `text` produces, with each token's own text (as the engine feeds them)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return ids, [tokenizer.decode([token]) for token in ids]


@pytest.mark.parametrize("name", sorted(LEGIT_PAGES))
def test_repetitive_pages_are_not_loops(tokenizer, name):
    text = LEGIT_PAGES[name]
    assert find_loop(*stream(tokenizer, text)) is None
    # Characters as tokens: the worst tokenizer there could be (engines that see only text feed this way).
    assert find_loop(list(text), list(text)) is None


@pytest.mark.parametrize("name", sorted(LEGIT_PAGES))
def test_a_repetitive_page_followed_by_more_text_is_not_cut_either(tokenizer, name):
    text = "\n\n".join([LEGIT_PAGES[name], "Page 2 of 2", LEGIT_PAGES[name]])
    assert find_loop(*stream(tokenizer, text)) is None


@pytest.mark.parametrize("name", sorted(LOOP_UNITS))
def test_a_phrase_repeated_until_the_budget_is_cut_within_the_bound(tokenizer, name):
    rule = LoopRule()
    prefix_ids, _ = stream(tokenizer, LOOP_PREFIX)
    ids, texts = stream(tokenizer, LOOP_PREFIX + LOOP_UNITS[name] * BUDGET)
    ids, texts = ids[:BUDGET], texts[:BUDGET]
    detector = LoopDetector(rule)
    detected_at = next(i for i, (token, text) in enumerate(zip(ids, texts), start=1) if detector.feed(token, text))
    loop = detector.loop
    assert loop.period <= rule.max_period
    # Stated bound: detected no later than bound(period) tokens into the loop (its first occurrence included).
    assert detected_at - loop.start <= rule.bound(loop.period) <= rule.max_tokens
    assert detected_at < BUDGET // 2 + len(prefix_ids)
    # The cut keeps what came before the loop and one occurrence of its unit.
    kept = tokenizer.decode(ids[:loop.keep])
    assert kept.startswith(LOOP_PREFIX.rstrip()) and LOOP_UNITS[name].strip() in kept
    assert len(kept) <= len(LOOP_PREFIX) + 2 * len(LOOP_UNITS[name])


def test_short_units_looping_within_a_line_are_cut_early(tokenizer):
    ids, texts = stream(tokenizer, LOOP_PREFIX + "0 " * BUDGET)
    loop = find_loop(ids, texts)
    assert loop.lines == 0 and loop.chars <= LoopRule().max_line_chars + 2 and loop.tokens < 520


def test_every_threshold_is_a_setting():
    labels = LEGIT_PAGES["labels-30-identical"]
    assert find_loop(list(labels), list(labels), LoopRule(max_lines=100)).lines > 100
    assert find_loop(list(labels), list(labels), LoopRule(max_chars=1000)).chars > 1000
    assert find_loop(list(labels), list(labels), LoopRule(max_tokens=1000)).tokens == 1000
    separator = "|---" * 60 + "|"
    assert find_loop(list(separator), list(separator), LoopRule(max_line_chars=200)) is not None
    assert find_loop(list(separator), list(separator), LoopRule(max_line_chars=200, short_unit_chars=3)) is None
    # fewer repeats than min_repeats never count, however long the run
    block = "x" * 40 + "\n"
    assert find_loop(list(block * 7), list(block * 7), LoopRule(max_chars=100, min_repeats=8)) is None
    assert find_loop(list(block * 8), list(block * 8), LoopRule(max_chars=100, min_repeats=8)) is not None
    assert find_loop(list("a" * 10000), None, LoopRule.off()) is None


def test_rule_values_are_checked():
    with pytest.raises(ValueError, match="min_repeats"):
        LoopRule(min_repeats=1)
    with pytest.raises(ValueError, match="max_tokens"):
        LoopRule(max_tokens=0)


def test_detector_is_streaming_and_sticky():
    detector = LoopDetector(LoopRule(max_tokens=64))
    assert all(detector.feed(token) is None for token in [1, 2, 3, 4, 5, 6, 7, 8])
    loop = None
    for _ in range(100):
        loop = detector.feed(9) or loop
    assert loop is not None and loop.period == 1 and loop.start == 8 and loop.keep == 9
    assert detector.feed(10) is loop and detector.count == 109
    # Any hashable works as a token: characters, strings, ids.
    assert find_loop(["ab", "cd"] * 40, None, LoopRule(max_tokens=64)).period == 2


def test_a_loop_late_in_a_long_answer_is_found():
    detector = LoopDetector()
    for index in range(6000):  # past the detector's first buffer sizes
        assert detector.feed(index % 997, "ab") is None
    for _ in range(300):
        detector.feed("same", "word ")
    assert detector.loop is not None and detector.loop.start == 6000 and detector.loop.period == 1


def character_stream_loop(text: str, rule: LoopRule = LoopRule()):
    """What the streaming detector finds when the answer's characters are its tokens (line breaks counted)."""
    return find_loop(list(text), list(text), rule)


@pytest.mark.parametrize("name", sorted(LEGIT_PAGES))
def test_the_whole_answer_detector_agrees_with_the_streaming_one_on_real_pages(name):
    for text in (LEGIT_PAGES[name], LOOP_PREFIX + LEGIT_PAGES[name] + "\n" + LEGIT_PAGES[name]):
        assert find_text_loop(text) == character_stream_loop(text)


@pytest.mark.parametrize("name", sorted(LOOP_UNITS))
def test_the_whole_answer_detector_cuts_a_loop_where_the_streaming_one_does(name):
    text = LOOP_PREFIX + LOOP_UNITS[name] * 600 + "tail"
    loop = find_text_loop(text)
    assert loop is not None and loop == character_stream_loop(text)
    assert loop.keep < len(LOOP_PREFIX) + 2 * len(LOOP_UNITS[name])  # cut back to about one occurrence


def test_the_whole_answer_detector_agrees_on_random_text_with_every_kind_of_threshold():
    draw = random.Random(19)
    rules = [LoopRule(min_repeats=3, max_tokens=60, max_chars=50, max_lines=4, max_line_chars=20,
                      short_unit_chars=3, max_period=12),
             LoopRule(min_repeats=2, max_tokens=40, max_chars=90, max_lines=30, max_line_chars=12,
                      short_unit_chars=5, max_period=8)]
    fired = 0
    for case in range(400):
        rule = rules[case % 2]
        pieces = ["".join(draw.choice("abc\n") for _ in range(draw.randint(1, 6))) for _ in range(draw.randint(1, 5))]
        text = "".join(draw.choice(pieces) * draw.randint(1, 5) for _ in range(draw.randint(1, 12)))
        expected = character_stream_loop(text, rule)
        assert find_text_loop(text, rule) == expected, (text, rule)
        fired += expected is not None
    assert 50 < fired < 350  # both verdicts were exercised


def test_the_whole_answer_detector_finds_a_loop_late_in_a_megabyte_answer():
    text = "".join(f"line {index}: {index * 7919 % 10007}\n" for index in range(60_000))[:1_000_000]
    assert find_text_loop(text) is None
    looping = text + "ha" * 600
    loop = find_text_loop(looping)
    assert loop is not None and loop.period == 2 and loop.start == len(text)
    assert find_text_loop(looping, LoopRule.off()) is None

