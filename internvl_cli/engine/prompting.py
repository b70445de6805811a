"""Step 3a, prompt construction: the checkpoint's chat template, each image expanded as InternVLProcessor does."""
from __future__ import annotations

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


def chat_messages(text: str, image_count: int) -> list[dict]:
    """One user turn: the images first (InternVL's convention), then the instruction."""
    content = [{"type": "image"} for _ in range(image_count)]
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def render_chat(tokenizer, text: str, image_count: int) -> str:
    """The checkpoint's own chat template applied to one user turn, with the assistant turn opened."""
    return tokenizer.apply_chat_template(
        chat_messages(text, image_count), add_generation_prompt=True, tokenize=False
    )


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


def chat_prompt(tokenizer, text: str, image_count: int) -> str:
    """The chat-templated prompt with one `<IMG_CONTEXT>` placeholder per image, for engines that expand the
    image tokens themselves (vLLM)."""
    return render_chat(tokenizer, scrub_special_tokens(text, tokenizer), image_count)


def build_prompt(tokenizer, text: str, tiles_per_image: list[int], image_seq_length: int) -> str:
    """The full prompt string for one request, ready to tokenize."""
    chat = chat_prompt(tokenizer, text, len(tiles_per_image))
    return expand_image_tokens(chat, tiles_per_image, image_seq_length, ImageTokens.of(tokenizer))
