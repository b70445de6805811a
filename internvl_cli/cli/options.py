"""Options the document commands share, declared once, and the checks they run before anything loads."""
from __future__ import annotations

import re

import typer

from ..decoding.repetition import LoopRule
from ..engine.auto import VLLM_WORTH_PAGES
from ..engine.base import DEFAULT_MAX_NEW_TOKENS
from ..models.presets import DEFAULT_MODEL

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


DTYPES = ("auto", "bfloat16", "float16", "float32")


def check_device(value: str) -> str:
    """Syntax only (before anything loads); whether the device exists is the engine's question."""
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(f"'{value}' is not a device: use auto, cpu, cuda or cuda:N")
    return value


def check_dtype(value: str) -> str:
    if value is not None and value not in DTYPES:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(DTYPES)}")
    return value


def preset_names(incomplete: str) -> list[str]:
    from ..models.presets import PRESETS

    return [name for name in PRESETS if name.startswith(incomplete)]


ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", envvar="INTERNVL_MODEL", autocompletion=preset_names,
                        help="Preset name (see `internvl models`), hub id, or local checkpoint directory.")


DeviceOpt = typer.Option("auto", "--device", callback=check_device,
                         help="cuda, cuda:1, cpu, or auto (a GPU when there is one).")


DtypeOpt = typer.Option("auto", "--dtype", callback=check_dtype,
                        help="auto (bf16 on GPU), bfloat16, float16 or float32.")


PagesOpt = typer.Option(None, "--pages", help="Pages to process, e.g. 1-3,7 or 10- (counted from 1).")


PasswordOpt = typer.Option(None, "--password", envvar="INTERNVL_PDF_PASSWORD",
                           help="Password of encrypted PDFs (or set INTERNVL_PDF_PASSWORD).")


FramesOpt = typer.Option(None, "--frames", help="Frames of multi-frame images read as pages: all or first. "
                         "Default: every TIFF page, the first frame of GIF, WebP and other animations.")


MinTilesOpt = typer.Option(None, "--min-tiles", min=1, max=40,
                           help="Fewest 448px tiles per page (default from the model, 1).")


MaxTilesOpt = typer.Option(None, "--max-tiles", min=1, max=40,
                           help="Most 448px tiles per page, up to 40 (default from the model, 12).")


MaxNewTokensOpt = typer.Option(DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens", min=1,
                               help="Longest answer per page (per window for extract), in tokens; never more than "
                                    "the model's context leaves after the prompt. An answer that reaches it is "
                                    "flagged truncated.")


PROMPTS_PANEL = "Prompt"


PromptOpt = typer.Option(None, "--prompt", rich_help_panel=PROMPTS_PANEL,
                         help="Your own instruction: a prompt file, or a shipped prompt's name (`internvl prompts` "
                              "lists them and their placeholders). Part of the task hash.")


AnchoredPromptOpt = typer.Option(None, "--anchored-prompt", rich_help_panel=PROMPTS_PANEL,
                                 help="The prompt for PDF pages with a text layer; must contain {text_layer}. "
                                      "Default: --prompt followed by the shipped text-layer paragraphs.")


SystemOpt = typer.Option(None, "--system", rich_help_panel=PROMPTS_PANEL,
                         help="System message: the text itself, or a file holding it. Default: the checkpoint's "
                              "own (InternVL's official models were trained with one).")


NoSystemOpt = typer.Option(False, "--no-system", rich_help_panel=PROMPTS_PANEL, help="Send no system turn at all.")


LOOPS_PANEL = "Loop detection"


DEFAULT_LOOP_RULE = LoopRule()


LoopStopOpt = typer.Option(True, "--loop-stop/--no-loop-stop", rich_help_panel=LOOPS_PANEL,
                           help="Stop an answer that repeats itself longer than a page could (flagged repetition).")


LoopRepeatsOpt = typer.Option(DEFAULT_LOOP_RULE.min_repeats, "--loop-repeats", min=2, rich_help_panel=LOOPS_PANEL,
                              help="Fewest back-to-back repeats of one unit that can count as a loop.")


LoopTokensOpt = typer.Option(DEFAULT_LOOP_RULE.max_tokens, "--loop-tokens", min=1, rich_help_panel=LOOPS_PANEL,
                             help="A run of one unit repeated back to back that reaches this many tokens is a loop.")


LoopCharsOpt = typer.Option(DEFAULT_LOOP_RULE.max_chars, "--loop-chars", min=1, rich_help_panel=LOOPS_PANEL,
                            help="... or longer than this many characters.")


LoopLinesOpt = typer.Option(DEFAULT_LOOP_RULE.max_lines, "--loop-lines", min=1, rich_help_panel=LOOPS_PANEL,
                            help="... or longer than this many lines.")


LoopLineCharsOpt = typer.Option(DEFAULT_LOOP_RULE.max_line_chars, "--loop-line-chars", min=1, rich_help_panel=LOOPS_PANEL,
                                help=f"A short unit (up to {DEFAULT_LOOP_RULE.short_unit_chars} characters) repeating within "
                                     "one line over more than this many characters is a loop.")


BatchOpt = typer.Option(None, "--batch-size", min=1, help="Most pages per GPU batch (default: from the GPU memory free "
                        "after loading; 8 on the CPU).")


BatchTilesOpt = typer.Option(None, "--batch-tiles", min=1, help="Most tiles per GPU batch, bounds GPU memory (default: from "
                             "free GPU memory; 64 on the CPU).")


AwqKernelOpt = typer.Option("auto", "--awq-kernel", envvar="INTERNVL_AWQ_KERNEL",
                            help="AWQ kernel: auto (see `internvl doctor`), marlin, machete, exllamav2, gemm, "
                                 "triton, torch, cpu-int4.")


OutputOpt = typer.Option(None, "--output", "-o", help="Write one file per document into this directory "
                         "(with a ledger, so reruns skip finished documents) instead of stdout; or, for a single "
                         "document, into this file when it ends in .md, .txt, .jsonl, .json or .csv.")


IncludeOpt = typer.Option([], "--include", help="Only documents whose relative path or name matches this glob "
                          "(repeatable).")


ExcludeOpt = typer.Option([], "--exclude", help="Skip documents matching this glob (repeatable).")


ForceOpt = typer.Option(False, "--force", help="With -o: redo documents the ledger says are done.")


RetryOpt = typer.Option(False, "--retry-failed", help="With -o: redo only documents that failed before.")


WaitOpt = typer.Option(False, "--wait", help="With -o: wait for another run on the same directory instead of "
                       "exiting with code 9.")


PathsArg = typer.Argument(..., metavar="PATH",
                          help="PDF or image files, directories, glob patterns, or - to read paths from stdin.")


EngineOpt = typer.Option("auto", "--engine", envvar="INTERNVL_ENGINE",
                         help=f"auto (default: vllm for runs of {VLLM_WORTH_PAGES} pages or more on a CUDA GPU "
                              "where vLLM is installed, else hf), hf (transformers), vllm (in-process vLLM: "
                              'continuous batching; pip install "internvl-cli[vllm]") or server '
                              "(OpenAI-compatible servers, --server).")


ServerOpt = typer.Option([], "--server", help="With --engine server: an OpenAI-compatible base URL, e.g. "
                         "http://127.0.0.1:8000/v1 (repeatable: the servers share the work).")


ConcurrencyOpt = typer.Option(32, "--concurrency", min=1, help="With --engine server: requests in flight over all "
                              "servers (about 32 per GPU behind them).")


TimeoutOpt = typer.Option(600.0, "--request-timeout", min=1.0, help="With --engine server: seconds one request may take "
                          "before it is retried.")


ApiKeyOpt = typer.Option(None, "--api-key", envvar=["INTERNVL_API_KEY", "OPENAI_API_KEY"], show_default=False,
                         show_envvar=True, help="With --engine server: the servers' API key, sent as a Bearer token "
                         "(`vllm serve --api-key`); credentials in a --server URL (user:password@host) go as Basic "
                         "auth instead. Never printed or recorded.")


RenderWorkersOpt = typer.Option(None, "--render-workers", min=0, max=256, show_default="the CPU count",
                                help="With --engine server: processes that render and encode pages (0 or 1: "
                                     "in the run's own preparing thread).")


TensorParallelOpt = typer.Option(1, "--tensor-parallel-size", min=1, help="With --engine vllm: GPUs one model is split "
                                 "over (models too large for one GPU).")


DataParallelOpt = typer.Option(1, "--data-parallel-size", min=1, help="With --engine vllm: replicas; vLLM runs these only "
                               "as a server, see README (several GPUs on one machine).")


# -- internvl eval ------------------------------------------------------------------------------------

TruthOpt = typer.Option(..., "--truth", "-t", help="Ground truth: a folder of documents with X.txt / X.md (ocr), "
                        "X.json (extract, or omni benchmark JSON) or X.csv (chart) beside each, or an olmOCR-bench "
                        "folder (JSONL tests, PDFs under pdfs/).")
RunOpt = typer.Option([], "--run", help="A document command to run over the truth's documents first, e.g. "
                      "\"ocr --model internvl3-2b-awq --max-tiles 6\" (repeatable: one run each). Its output "
                      "folder is its -o if it names one, else internvl-eval/NAME; the ledger makes reruns free.")
EvalJsonOpt = typer.Option(False, "--json", help="Print one JSON object per document (file, task, metrics), then "
                           "one with the summary, instead of tables.")
ReportOpt = typer.Option(None, "--report", help="Also write a self-contained HTML report: per document, truth "
                         "against output with the differences marked.")
ToleranceOpt = typer.Option(0.05, "--tolerance", min=0.0, help="Relative tolerance for numeric chart cells.")
BootstrapOpt = typer.Option(1000, "--bootstrap", min=100, help="Bootstrap resamples for intervals.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the bootstrap (the same inputs and seed give the same figures).")
