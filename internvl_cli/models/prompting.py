"""Step 0, a checkpoint's prompts: its chat template rendered, each image expanded as InternVLProcessor does."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageTokens:
    """The tokenizer's image tokens, read from the names InternVL's tokenizer exposes."""

    start: str = "<img>"
    end: str = "</img>"
    context: str = "<IMG_CONTEXT>"
    video: str = "<video>"

    @classmethod
    def of(cls, tokenizer) -> ImageTokens:
        return cls(
            start=getattr(tokenizer, "start_image_token", None) or cls.start,
            end=getattr(tokenizer, "end_image_token", None) or cls.end,
            context=getattr(tokenizer, "context_image_token", None) or cls.context,
            video=getattr(tokenizer, "video_token", None) or cls.video,
        )


# InternVL's templates are all ChatML (Qwen, Llama and InternLM2 based models alike).
SYSTEM_TURN_START = "<|im_start|>system\n"
TURN_END = "<|im_end|>"


def chat_messages(text: str, image_count: int, system: str | None = None) -> list[dict]:
    """One user turn: the images first (InternVL's convention), then the instruction; a system turn before it
    when `system` is a non-empty text."""
    content = [{"type": "image"} for _ in range(image_count)]
    content.append({"type": "text", "text": text})
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": content}]


def render_chat(tokenizer, text: str, image_count: int, system: str | None = None) -> str:
    """The checkpoint's own chat template applied to one user turn, with the assistant turn opened.

    `system`: None leaves the template's default system message (InternVL's official templates add one; the
    -hf ones have none); "" removes any system turn; another text replaces it.
    """
    rendered = tokenizer.apply_chat_template(
        chat_messages(text, image_count, system), add_generation_prompt=True, tokenize=False
    )
    return without_system_turn(rendered) if system == "" else rendered


def without_system_turn(prompt: str) -> str:
    """`prompt` without the leading ChatML system turn a template added by itself (unchanged if none)."""
    if prompt.startswith(SYSTEM_TURN_START):
        end = prompt.find(TURN_END, len(SYSTEM_TURN_START))
        if end >= 0:
            rest = prompt[end + len(TURN_END):]
            return rest[1:] if rest.startswith("\n") else rest
    return prompt


def default_system_message(tokenizer) -> str | None:
    """The system message the checkpoint's template adds when none is given (None when it adds none)."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "."}], add_generation_prompt=False,
                                             tokenize=False)
    if rendered.startswith(SYSTEM_TURN_START):
        end = rendered.find(TURN_END, len(SYSTEM_TURN_START))
        if end >= 0:
            return rendered[len(SYSTEM_TURN_START):end]
    return None


def expand_image_tokens(prompt: str, tiles_per_image: list[int], image_seq_length: int,
                        tokens: ImageTokens) -> str:
    """Replaces the i-th image placeholder by <img> + seq_len*tiles_i context tokens + </img>."""
    pieces = prompt.split(tokens.context)
    if len(pieces) - 1 != len(tiles_per_image):
        raise ValueError(
            f"the chat template produced {len(pieces) - 1} image placeholders for {len(tiles_per_image)} images"
        )
    out = [pieces[0]]
    for tiles, rest in zip(tiles_per_image, pieces[1:]):
        out.append(tokens.start + tokens.context * (image_seq_length * tiles) + tokens.end)
        out.append(rest)
    return "".join(out)


def scrub_special_tokens(text: str, tokenizer) -> str:
    """Removes special-token strings from untrusted text (e.g. a PDF's text layer) so it cannot fake an image."""
    for token in getattr(tokenizer, "all_special_tokens", []) + list(ImageTokens.of(tokenizer).__dict__.values()):
        if token and token in text:
            text = text.replace(token, "")
    return text


def chat_prompt(tokenizer, text: str, image_count: int, system: str | None = None) -> str:
    """The chat-templated prompt with one `<IMG_CONTEXT>` placeholder per image, for engines that expand the
    image tokens themselves (vLLM); `system` as in `render_chat`."""
    if system:
        system = scrub_special_tokens(system, tokenizer)
    return render_chat(tokenizer, scrub_special_tokens(text, tokenizer), image_count, system)


def build_prompt(tokenizer, text: str, tiles_per_image: list[int], image_seq_length: int,
                 system: str | None = None) -> str:
    """The full prompt string for one request, ready to tokenize (`system` as in `render_chat`)."""
    chat = chat_prompt(tokenizer, text, len(tiles_per_image), system)
    return expand_image_tokens(chat, tiles_per_image, image_seq_length, ImageTokens.of(tokenizer))


def collapse_image_tokens(prompt: str, tokens: ImageTokens = ImageTokens()) -> str:
    """A prompt made readable: each run of image context tokens shown once, with its count: `<IMG_CONTEXT>*1792`."""
    context = tokens.context
    return re.sub(f"(?:{re.escape(context)})+", lambda run: f"{context}*{len(run.group()) // len(context)}", prompt)
