"""Decoding control, one answer's course while it is generated, the same on every engine: the loop watch, and what
follows a loop or a budget running low. The transformers engine (its stopper and its grammar processor) and our
vLLM logits processor each drive one Steering per answer and act on what it says."""
from __future__ import annotations

from .repetition import Loop, LoopDetector, LoopRule


class Steering:
    """The state of one answer: tokens seen, the loop found (if any), whether it must end, whether it is being
    wrapped up.

    An unconstrained answer that loops must end there (it is cut back to one occurrence of its unit). A
    constrained one (JSON, CSV) is never cut while it can still finish: it is wrapped up, steered to its shortest
    valid ending, from its loop on, or once `close_after` tokens are generated (the budget's last quarter), or
    when asked to (`request_close`). With a `grace`, a constrained answer still running that many tokens after
    its loop ends all the same.
    """

    def __init__(self, rule: LoopRule | None, constrained: bool, close_after: int | None = None,
                 grace: int | None = None):
        self.detector = LoopDetector(rule) if rule is not None else None  # None: loops are not watched
        self.constrained = constrained
        self.close_after = close_after if constrained else None
        self.grace = grace
        self.generated = 0  # tokens fed, EOS excluded
        self.ended = False  # the answer produced EOS: what follows is padding
        self.looped_at: int | None = None  # tokens generated when the loop was found
        self.closing = False  # wrap up now, whatever the budget (a loop, or asked to)

    def feed(self, token: int, piece: str | None = None) -> None:
        """One generated token with its text (None: counted as one character)."""
        self.generated += 1
        detector = self.detector
        if detector is not None and detector.loop is None and detector.feed(token, piece) is not None:
            self.looped_at = self.generated
            if self.constrained:
                self.closing = True

    def end(self) -> None:
        """The answer produced EOS."""
        self.ended = True

    def request_close(self) -> None:
        """Wrap the answer up now (a constrained one; an unconstrained answer has nothing to close)."""
        self.closing = True

    @property
    def loop(self) -> Loop | None:
        return self.detector.loop if self.detector is not None else None

    @property
    def must_stop(self) -> bool:
        """Whether generation must end here: an unconstrained loop, or a constrained one past its grace."""
        if self.looped_at is None:
            return False
        if not self.constrained:
            return True
        return self.grace is not None and self.generated - self.looped_at > self.grace

    @property
    def wrapping_up(self) -> bool:
        """Whether a constrained answer is to be steered to its shortest valid ending now."""
        if not self.constrained:
            return False
        return self.closing or (self.close_after is not None and self.generated >= self.close_after)
