"""Decoding control, following a JSON answer byte by byte as it is generated: strings, keys, open objects (pure Python).

Shared by the engines' wrap-up of constrained answers (inside a string only a quote ends it) and by the
transformers engine's unique-key masking.
"""
from __future__ import annotations

import json


class JsonState:
    """Where a row is in its JSON, followed byte by byte from the accepted tokens: strings, keys, objects.

    Enough to steer an answer to its end (inside a string only a quote ends it) and to know the keys
    already used in each open object.
    """

    def __init__(self) -> None:
        self.stack: list[set[str] | None] = []  # per open container: its keys (object) or None (array)
        self.expect_key = False
        self.in_string = False
        self.is_key = False
        self.escaped = False
        self.key = bytearray()

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif byte == 0x5C:  # backslash
                    self.escaped = True
                elif byte == 0x22:  # quote
                    self.in_string = False
                    if self.is_key:
                        key = decode_key(bytes(self.key))
                        if key is not None and self.stack and self.stack[-1] is not None:
                            self.stack[-1].add(key)
                        self.is_key = self.expect_key = False
                    continue
                if self.is_key:
                    self.key.append(byte)
            elif byte == 0x22:
                self.in_string = True
                self.is_key = self.expect_key and bool(self.stack) and self.stack[-1] is not None
                self.key = bytearray()
            elif byte == 0x7B:  # {
                self.stack.append(set())
                self.expect_key = True
            elif byte == 0x5B:  # [
                self.stack.append(None)
                self.expect_key = False
            elif byte in (0x7D, 0x5D):  # } ]
                if self.stack:
                    self.stack.pop()
                self.expect_key = False
            elif byte == 0x2C:  # ,
                self.expect_key = bool(self.stack) and self.stack[-1] is not None

    def used_keys(self) -> set[str]:
        """The keys of the innermost open object so far (empty outside objects)."""
        return self.stack[-1] or set() if self.stack and self.stack[-1] is not None else set()

    def after(self, token: bytes) -> str | None:
        """What `token` would do to the current object's keys, without changing this state:
        "repeat" (it closes a key the object has), "at-used-key" (it leaves an open key spelling one), None."""
        used = self.used_keys()
        if not used:
            return None
        in_string, is_key, escaped, expect_key = self.in_string, self.is_key, self.escaped, self.expect_key
        key, depth = bytearray(self.key), 0
        for byte in token:
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:
                    escaped = True
                elif byte == 0x22:
                    in_string = False
                    if is_key and depth == 0 and decode_key(bytes(key)) in used:
                        return "repeat"
                    is_key = expect_key = False
                    continue
                if is_key:
                    key.append(byte)
            elif byte == 0x22:
                in_string, is_key, key = True, expect_key and depth == 0, bytearray()
            elif byte in (0x7B, 0x5B):
                depth += 1
            elif byte in (0x7D, 0x5D):
                if depth == 0:
                    return None  # the object closes: its keys no longer matter
                depth -= 1
            elif byte == 0x2C and depth == 0:
                expect_key = True
        if in_string and is_key and decode_key(bytes(key)) in used:
            return "at-used-key"
        return None


def decode_key(raw: bytes) -> str | None:
    """A key's text from the bytes between its quotes (escapes resolved); None if they are not valid JSON."""
    try:
        return json.loads(b'"' + raw + b'"')
    except ValueError:
        return None


def wrap_up_start(max_new_tokens: int) -> int:
    """Generated tokens after which a constrained answer is steered to its shortest valid ending: the last
    quarter of the budget, at least 32 tokens (every engine uses this budget)."""
    return max(0, max_new_tokens - max(32, max_new_tokens // 4))
