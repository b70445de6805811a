"""Decoding control, shared by the engines: constraints and their grammars, following a JSON answer, loop
detection, and the logits processors that apply them inside transformers and vLLM."""
