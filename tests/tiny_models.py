"""Tiny, randomly initialised checkpoints of the real InternVL architecture, built offline for tests."""
from __future__ import annotations

import json
from pathlib import Path

# The real -hf checkpoints' chat template (ChatML, no system prompt, one `<IMG_CONTEXT>\n` per image).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>",
]

TRAINING_TEXT = [
    "Invoice number 2024-001 dated 2024-03-15. Total due: 1,234.56 EUR.",
    "| Year | Revenue | Profit |\n|---|---|---|\n| 2021 | 10.5 | 2.1 |",
    '{"vendor": "ACME GmbH", "total": 99.95, "items": [{"name": "Widget", "qty": 3}]}',
    "Receipt: coffee 3.50, bagel 2.25, tax 0.46. Thank you for shopping!",
    "The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ # - * _ ( ) [ ] { } : ; , . ! ? / \\ \" ' < > = + @ & % $",
]


def build_tokenizer(out_dir: Path):
    """Byte-level BPE trained locally, carrying InternVL's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(TRAINING_TEXT * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def preprocessor_config() -> dict:
    """What the official -hf checkpoints ship as preprocessor_config.json."""
    return {
        "image_processor_type": "GotOcr2ImageProcessor",
        "crop_to_patches": False,
        "min_patches": 1,
        "max_patches": 12,
        "do_resize": True,
        "size": {"height": 448, "width": 448},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "do_convert_rgb": True,
        "processor_class": "InternVLProcessor",
    }


def tiny_config(tokenizer, text_head_dim: int = 16):
    """`text_head_dim` 16 keeps the suite fast; vLLM's CPU attention needs at least 32 (same width, fewer heads)."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    vision = InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=[448, 448], patch_size=[14, 14], use_absolute_position_embeddings=True,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=64 // text_head_dim, num_key_value_heads=max(1, 32 // text_head_dim),
        max_position_embeddings=16384,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    config = InternVLConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=256, downsample_ratio=0.5,
    )
    config.architectures = ["InternVLForConditionalGeneration"]
    return config


def build_tiny_native(out_dir: Path, seed: int = 0, text_head_dim: int = 16) -> Path:
    """A tiny bf16/fp32 checkpoint in transformers' native (-hf) InternVL layout (head size 32 for vLLM)."""
    import torch
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(tiny_config(tokenizer, text_head_dim=text_head_dim)).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return out_dir
