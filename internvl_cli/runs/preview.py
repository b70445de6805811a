"""Step 5 made visible: what a run would send the model for each unit of a document, counted, with no weights loaded."""
from __future__ import annotations

from pathlib import Path

from ..engine.base import Engine
from ..models.prompting import ImageTokens, collapse_image_tokens
from ..tasks.base import Task


def preview_prompts(task: Task, engine: Engine, path: Path) -> list[dict]:
    """One row per unit (a page, or an extract window): the exact prompt (image tokens collapsed to a count), its
    token count split into image and text tokens, and the answer budget the model's context leaves."""
    context = engine.context_length
    rows = []
    for unit in task.units(path):
        if unit.error is not None:
            raise unit.error
        request = unit.request
        prompt, tokens = engine.render_prompt(request)  # refused by engines that cannot show prompts
        image_tokens = sum(plan.image_tokens for plan in unit.plans)
        budget = request.sampling.max_new_tokens if context is None else min(request.sampling.max_new_tokens,
                                                                             context - tokens)
        rows.append({
            "file": str(path), "pages": unit.pages, "task": task.name, "source": unit.context.source,
            "tiles": request.tiles, "prompt_tokens": tokens, "image_tokens": image_tokens,
            "text_tokens": tokens - image_tokens, "max_new_tokens": max(budget, 0), "context": context,
            "system": request.system, "prompt": collapse_image_tokens(prompt, _image_tokens(engine)),
        })
        unit.request = None  # the tiles are not needed any more
    return rows


def _image_tokens(engine: Engine) -> ImageTokens:
    return ImageTokens.of(engine.tokenizer) if engine.tokenizer is not None else ImageTokens()
