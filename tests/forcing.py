"""Forced decoding for tests: the real tiny model, steered to write a given answer, stands in for a model that reads
the page right.

The whole product path still runs (pages, tiles, prompt, the model's forward pass, the engine's stopping and loop
detection, the task's records); only the choice of each next token is dictated, by a logits processor added to
the engine's `generate` call. A row's answer is picked by a marker (e.g. the page's title) found in its prompt.
"""
from __future__ import annotations

import contextlib


class ForcedAnswers:
    """A transformers logits processor that makes each row emit its answer's tokens, then EOS (one generate call)."""

    def __init__(self, tokenizer, answers: dict[str, str], eos_id: int):
        self.tokenizer = tokenizer
        self.answers = {marker: tokenizer(text, add_special_tokens=False).input_ids for marker, text in answers.items()}
        self.eos = eos_id
        self.start: int | None = None
        self.targets: list[list[int]] = []
        self.markers: list[str | None] = []
        self.steps = 0

    def __call__(self, input_ids, scores):
        import torch

        if self.start is None:
            self.start = input_ids.shape[1]
            prompts = [self.tokenizer.decode(row, skip_special_tokens=True) for row in input_ids.tolist()]
            self.markers = [self._marker(prompt) for prompt in prompts]
            self.targets = [self.answers[m] if m is not None else [] for m in self.markers]
        step = input_ids.shape[1] - self.start
        self.steps = step + 1
        forced = torch.full_like(scores, float("-inf"))
        for row, target in enumerate(self.targets):
            forced[row, target[step] if step < len(target) else self.eos] = 0.0
        return forced

    def _marker(self, prompt: str) -> str | None:
        found = [marker for marker in self.answers if marker in prompt]
        return max(found, key=len) if found else None


@contextlib.contextmanager
def forced_engines(monkeypatch, answers: dict[str, str]):
    """Every TransformersEngine loaded from the block on writes `answers` (marker -> text); yields the list of
    processors made, one per generate call, to inspect (steps taken, which marker each row got)."""
    from internvl_cli.engine.hf import TransformersEngine

    made: list[ForcedAnswers] = []
    real_load = TransformersEngine.load

    def load(self):
        first = self.model is None
        real_load(self)
        if first:
            force(self, answers, made)

    # On the test's own monkeypatch, undone when the test ends (not when the block does): a test may patch
    # `load` again inside the block (counting loads over the forced one), and undoing ours first would leave
    # that patch, forced answers included, in place for every later test.
    monkeypatch.setattr(TransformersEngine, "load", load)
    yield made


def force(engine, answers: dict[str, str], made: list | None = None) -> list:
    """Makes a loaded engine's model write `answers`; returns the list collecting each call's processor."""
    made = [] if made is None else made
    generate = engine.model.generate

    def forced_generate(**kwargs):
        processor = ForcedAnswers(engine.tokenizer, answers, engine.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        made.append(processor)
        kwargs["logits_processor"] = list(kwargs.get("logits_processor") or []) + [processor]
        return generate(**kwargs)

    engine.model.generate = forced_generate
    return made
