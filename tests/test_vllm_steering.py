"""The vLLM engines' loop and wrap-up logic, without vLLM: our logits processor's per-request state and how a
finished answer becomes a result. Both run the same LoopDetector and rule as the transformers engine."""
from __future__ import annotations

import json

import torch

from internvl_cli.decoding.constraints import Constraint
from internvl_cli.engine.base import GenerationRequest, Sampling
from internvl_cli.decoding.repetition import LoopRule, find_loop
from internvl_cli.engine.vllm_requests import extra_args, finish_answer
from internvl_cli.decoding.vllm_processor import loop_rule_from
from internvl_cli.decoding.vllm_processor import WrapUpState

EOS = 9
RULE = LoopRule(min_repeats=8, max_tokens=32)  # small, so a loop shows within a few dozen tokens


class Tiers:
    """The per-token facts the processor reads from a tokenizer: ten one-byte tokens a..j, EOS 9."""

    token_bytes = [bytes([ord("a") + i]) for i in range(9)] + [b""]
    eos = [EOS]
    inside = torch.zeros(10)
    outside = torch.tensor([0.0] * 5 + [100.0] * 5)  # any visible bias will do

    def piece(self, token: int) -> str:
        return self.token_bytes[token].decode()


def steer(state: WrapUpState, output_ids: list[int]) -> torch.Tensor:
    return state(output_ids, torch.zeros(10))


def test_an_unconstrained_loop_is_ended_where_our_rule_finds_it():
    state = WrapUpState(None, Tiers(), RULE)
    answer = [0, 1, 2] * 20
    loop = find_loop(answer, [Tiers().piece(t) for t in answer], RULE)
    assert loop is not None
    for length in range(1, len(answer) + 1):
        logits = steer(state, answer[:length])
        only_eos = torch.isfinite(logits).nonzero().flatten().tolist() == [EOS]
        assert only_eos == (length > loop.start + loop.tokens - 1), length  # from the token that made it a loop


def test_a_page_that_repeats_less_than_the_rule_is_left_alone():
    state = WrapUpState(None, Tiers(), LoopRule())  # the defaults: far beyond 60 tokens
    for length in range(1, 61):
        assert torch.equal(steer(state, ([0, 1, 2] * 20)[:length]), torch.zeros(10))


def test_a_constrained_loop_is_wrapped_up_not_cut():
    state = WrapUpState(10_000, Tiers(), RULE)
    answer = [0, 1, 2] * 20
    biased = [not torch.equal(steer(state, answer[:n]), torch.zeros(10)) for n in range(1, len(answer) + 1)]
    assert not biased[0] and biased[-1] and state.closing  # steered towards its end once it looped
    assert all(torch.isfinite(steer(state, answer)))  # never forced to EOS: that could break the JSON


def test_the_wrap_up_starts_in_the_last_quarter_of_the_budget():
    request = GenerationRequest(images=[], text="x", sampling=Sampling(max_new_tokens=400),
                                constraint=Constraint("json_schema", "{}"))
    args = extra_args(request)
    assert args["internvl_close_after"] == 300
    assert loop_rule_from(args) == Sampling().loop  # the rule travels as JSON text (servers take flat values)
    assert json.loads(args["internvl_loop"])["max_tokens"] == Sampling().loop.max_tokens
    state = WrapUpState(args["internvl_close_after"], Tiers(), None)
    assert torch.equal(steer(state, [0] * 299), torch.zeros(10))
    assert not torch.equal(steer(state, [0] * 300), torch.zeros(10))


def test_a_looped_answer_is_cut_back_and_flagged_as_on_transformers():
    request = GenerationRequest(images=[], text="x", sampling=Sampling(max_new_tokens=500, loop=RULE))
    answer = [3, 4] + [0, 1, 2] * 20 + [EOS]
    pieces = lambda ids: [Tiers().piece(t) for t in ids]  # noqa: E731
    decode = lambda ids: "".join(pieces(ids))  # noqa: E731
    text, reason, new_tokens, flags = finish_answer(answer, decode(answer), "stop", request, pieces, decode)
    assert reason == "repetition" and text == "deabc" and new_tokens == 5 and flags == []
    # a server that returns no token ids: the same rule, on the answer's characters
    text, reason, _, _ = finish_answer([], decode(answer), "stop", request, None, lambda ids: None)
    assert reason == "repetition" and text == "deabc"
    # a constrained answer is never cut: it was steered to a close, and says so
    constrained = GenerationRequest(images=[], text="x", sampling=Sampling(max_new_tokens=500, loop=RULE),
                                    constraint=Constraint("json_schema", "{}"))
    text, reason, _, flags = finish_answer(answer, decode(answer), "stop", constrained, pieces, decode)
    assert text == decode(answer) and reason == "stop" and flags == ["repetition", "closed-early"]
