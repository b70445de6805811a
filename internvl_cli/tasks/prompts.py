"""Step 4, prompt templates: the shipped ones (prompts/*.md) or the user's own files, placeholders checked and filled.

A template is plain text with `{name}` placeholders; `{{name}}` stands for a literal `{name}`. Every other brace
is literal (a JSON example in a prompt needs no escaping). Each command's pages come in two variants: `plain`
(read from the image alone) and `anchored` (a PDF page with a usable text layer, which must be given to the model
through `{text_layer}`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..resources import read_prompt

# command -> variant -> (placeholders allowed, placeholders required)
PLACEHOLDERS: dict[str, dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "ocr": {"plain": (frozenset(), frozenset()),
            "anchored": (frozenset({"text_layer"}), frozenset({"text_layer"}))},
    "chart": {"plain": (frozenset(), frozenset())},
    "ground": {"plain": (frozenset({"line"}), frozenset({"line"}))},
    "extract": {"plain": (frozenset({"fields", "page_note"}), frozenset()),
                "anchored": (frozenset({"fields", "page_note", "text_layer"}), frozenset({"text_layer"}))},
}

# shipped name -> (command, variant, what it is for)
SHIPPED: dict[str, tuple[str, str, str]] = {
    "ocr": ("ocr", "plain", "a page transcribed to Markdown from its image"),
    "ocr-anchored": ("ocr", "anchored", "the same, with the PDF page's text layer as a character anchor"),
    "chart": ("chart", "plain", "a chart's data as one CSV table"),
    "ground": ("ground", "plain", "where one transcribed line sits on the page (InternVL's grounding prompt; "
                                  "ocr --lines, --format pdf|hocr)"),
    "extract": ("extract", "plain", "a JSON Schema's fields from a document's page images"),
    "extract-anchored": ("extract", "anchored", "the same, with the PDF's text layer as an anchor"),
}

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt's text and where it came from (a shipped name or a file path)."""

    text: str
    source: str

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(match.group(2) for match in _PLACEHOLDER.finditer(self.text) if match.group(2))

    def fill(self, **values: str) -> str:
        """The text with each placeholder replaced by its value (placeholders without a value are left out)."""
        def replace(match: re.Match) -> str:
            if match.group(1):
                return "{" + match.group(1) + "}"
            return values.get(match.group(2), "")

        return _PLACEHOLDER.sub(replace, self.text)


@dataclass(frozen=True)
class PromptSet:
    """The prompts one command uses: `plain` for pages read from the image alone, `anchored` (ocr, extract)
    for PDF pages with a text layer."""

    plain: PromptTemplate
    anchored: PromptTemplate | None = None

    def fingerprint(self) -> dict:
        """The prompt texts, for the task hash (where they came from does not change an answer)."""
        return {"prompt": self.plain.text, "anchored_prompt": self.anchored.text if self.anchored else None}


def shipped_prompt(name: str) -> PromptTemplate:
    """The shipped prompt `name` (prompts/<name>.md), trailing whitespace removed."""
    if name not in SHIPPED:
        raise UsageError(f"no shipped prompt '{name}' (shipped: {', '.join(SHIPPED)})")
    return PromptTemplate(text=read_prompt(name), source=name)


def load_prompt(spec: str, command: str, variant: str, option: str = "--prompt") -> PromptTemplate:
    """A prompt file (or a shipped prompt's name) for `command`'s `variant` pages, its placeholders checked, so a
    bad prompt fails before any model loads."""
    path = Path(spec).expanduser()
    if path.is_file():
        template = PromptTemplate(text=_read_text(path), source=str(path))
    elif spec in SHIPPED:
        template = shipped_prompt(spec)
    else:
        raise UsageError(f"{option}: no such prompt file or shipped prompt (shipped: {', '.join(SHIPPED)}; "
                         "see `internvl prompts`)", path=spec)
    check_placeholders(template, command, variant, option)
    return template


def check_placeholders(template: PromptTemplate, command: str, variant: str, option: str = "--prompt") -> None:
    allowed, required = PLACEHOLDERS[command][variant]
    unknown = sorted(template.placeholders - allowed)
    if unknown:
        names = ", ".join("{" + name + "}" for name in sorted(allowed)) or "none"
        hint = "write {{" + unknown[0] + "}} for a literal {" + unknown[0] + "}"
        if "text_layer" in unknown and variant == "plain" and "anchored" in PLACEHOLDERS[command]:
            hint = "a prompt that takes the text layer goes to --anchored-prompt"
        raise UsageError(f"{option}: unknown placeholder {{{unknown[0]}}} in the {command} prompt "
                         f"(allowed here: {names})", path=template.source, hint=hint)
    missing = sorted(required - template.placeholders)
    if missing:
        raise UsageError(f"{option}: the {command} prompt for pages with a text layer must contain "
                         f"{{{missing[0]}}}, where the page's text layer goes", path=template.source)
    if not template.text.strip():
        raise UsageError(f"{option}: the prompt is empty", path=template.source)


def prompt_set(command: str, prompt: str | None = None, anchored_prompt: str | None = None) -> PromptSet:
    """The prompts `command` will use: shipped by default; `prompt` replaces the plain one and, unless
    `anchored_prompt` is given too, the instruction of the anchored one (the shipped text-layer paragraphs are
    kept after it, so PDF pages keep their anchor)."""
    shipped_plain = shipped_prompt(command)
    plain = load_prompt(prompt, command, "plain") if prompt else shipped_plain
    if "anchored" not in PLACEHOLDERS[command]:
        if anchored_prompt:
            raise UsageError(f"--anchored-prompt: {command} does not use a PDF text layer")
        return PromptSet(plain)
    if anchored_prompt:
        anchored = load_prompt(anchored_prompt, command, "anchored", "--anchored-prompt")
    elif prompt:
        anchored = PromptTemplate(text=plain.text + anchor_paragraphs(command), source=f"{plain.source} + "
                                  f"{command}-anchored")
    else:
        anchored = shipped_prompt(f"{command}-anchored")
    return PromptSet(plain, anchored)


def anchor_paragraphs(command: str) -> str:
    """What the shipped anchored prompt adds after the shipped plain one: the text-layer paragraphs."""
    plain, anchored = shipped_prompt(command).text, shipped_prompt(f"{command}-anchored").text
    if not anchored.startswith(plain):
        raise RuntimeError(f"prompts/{command}-anchored.md no longer starts with prompts/{command}.md")
    return anchored[len(plain):]


def list_prompts() -> list[dict]:
    """The shipped prompts: name, command, which pages, placeholders, purpose."""
    rows = []
    for name, (command, variant, purpose) in SHIPPED.items():
        template = shipped_prompt(name)
        pages = "pages with a PDF text layer" if variant == "anchored" else "pages read from the image"
        option = "--anchored-prompt" if variant == "anchored" else "--prompt"
        if command == "ground":  # asked by ocr itself after each page (--lines), not replaceable by an option
            command, option = "ocr", "--lines"
        rows.append({"name": name, "command": command, "option": option, "pages": pages,
                     "placeholders": sorted(template.placeholders), "purpose": purpose})
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip()
    except UnicodeDecodeError:
        raise UsageError("not UTF-8 text", path=path) from None
    except OSError as exc:
        raise UsageError(f"cannot read it ({exc.strerror or exc})", path=path) from None


def resolve_system(system: str | None, no_system: bool = False) -> str | None:
    """--system TEXT|FILE / --no-system -> the request's `system`: None keeps the checkpoint's own system message,
    "" sends none, other text is sent as it is (a file's content when `system` names a file)."""
    if no_system:
        if system is not None:
            raise UsageError("--system and --no-system contradict each other; give one")
        return ""
    if system is None:
        return None
    path = Path(system).expanduser()
    text = _read_text(path) if path.is_file() else system
    if not text.strip():
        raise UsageError("--system: the system message is empty (use --no-system to send none)",
                         path=path if path.is_file() else None)
    return text
