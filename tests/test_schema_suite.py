"""The official JSON-Schema-Test-Suite (draft 2020-12 and draft-07) through loading, the grammar and `extract`.

Every schema of the suite is loaded (refused only when unsatisfiable or needing something that must be
fetched), every suite instance given as an answer is judged like the suite says, random walks through
every compiled grammar give only valid answers (or fail on keywords reported as unenforced), and one
`extract` run per schema with the tiny model gives one record each, never valid when the reference
validator disagrees.
"""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from conftest import REPO, SAMPLES, ListSink
from internvl_cli.errors import SchemaError
from internvl_cli.schema.loading import check_schema
from internvl_cli.schema.answers import parse_answer
from schema_suite import FORMAT_ANNOTATION_CASES, cases, reference_errors

# What may refuse a schema: a reference or meta-schema outside the document, or no valid value at all.
ALLOWED_REFUSALS = ("remote references are never fetched", "a meta-schema is never fetched", "accepts no value")


@pytest.fixture(scope="module")
def loaded():
    """Every suite schema, loaded once: (case, LoadedSchema or the SchemaError that refused it)."""
    results = []
    for case in cases():
        try:
            results.append((case, check_schema(case.schema, case.name)))
        except SchemaError as error:
            results.append((case, error))
    return results


def accepted(loaded):
    return [(case, schema) for case, schema in loaded if not isinstance(schema, SchemaError)]


def counts(loaded) -> dict[str, Counter]:
    table: dict[str, Counter] = {}
    for case, schema in loaded:
        row = table.setdefault(case.draft, Counter())
        if isinstance(schema, SchemaError):
            reason = next(r for r in ALLOWED_REFUSALS if r in schema.message)
            row["refused: unsatisfiable" if reason == "accepts no value" else "refused: remote"] += 1
        else:
            row["partly" if schema.unenforced else "fully"] += 1
    return table


def test_only_remote_or_unsatisfiable_schemas_are_refused(loaded):
    refused = [(case.name, schema.message) for case, schema in loaded if isinstance(schema, SchemaError)]
    unexpected = [(name, message) for name, message in refused if not any(r in message for r in ALLOWED_REFUSALS)]
    assert unexpected == []
    assert len(accepted(loaded)) > 0.9 * len(loaded)


def test_suite_counts_are_the_ones_in_the_readme(loaded):
    """README states how many suite schemas are enforced fully, partly, or refused; keep it true."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for draft, row in counts(loaded).items():
        line = (f"| {draft} | {sum(row.values())} | {row['fully']} | {row['partly']} | "
                f"{row['refused: remote']} | {row['refused: unsatisfiable']} |")
        assert line in readme, f"README's suite table should have: {line}"


def test_every_suite_instance_is_judged_as_the_suite_says(loaded):
    """Each instance, given as the model's answer, goes through the same parse-and-validate path as answers."""
    wrong = []
    for case, schema in accepted(loaded):
        for test in case.tests:
            answer = parse_answer(json.dumps(test["data"]), schema)
            expected = test["valid"] and FORMAT_ANNOTATION_CASES not in test["description"]
            if answer.valid != expected:
                wrong.append((case.name, test["description"], answer.errors[:1]))
    assert wrong == []


def _walk_rows(tokenizer, schema, rows: int, steps: int, seed: int):
    """A random decoder: at every step any token the grammar allows (random scores through the processor)."""
    import torch

    from internvl_cli.decoding.hf_processor import constraint_logits_processor

    processor = constraint_logits_processor(tokenizer, schema.constraint, rows, close_after=steps // 2)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((rows, 1), tokenizer.pad_token_id)
    done = torch.zeros(rows, dtype=torch.bool)
    for _ in range(steps):
        scores = processor(ids, torch.randn(rows, len(tokenizer), generator=generator))
        token = scores.argmax(dim=1)
        token[done] = tokenizer.pad_token_id
        ids = torch.cat([ids, token[:, None]], dim=1)
        done |= token == tokenizer.eos_token_id
        if done.all():
            break
    return list(zip(processor.finalize(ids), processor.complete))


def _explained(schema, data) -> bool:
    """Whether every failure of `data` runs through a keyword the grammar reported as unenforced."""
    family = set(schema.unenforced)
    family |= {"then", "else"} if "if" in family else set()
    family |= {"minContains", "maxContains"} if "contains" in family else set()

    def paths(error):
        yield set(map(str, error.schema_path))
        for inner in error.context:
            yield from paths(inner)

    if schema.grammar.get("$ref") == "#/$defs/any" and len(schema.grammar) == 2:
        return True  # the last resort: the grammar only promises JSON, everything is validated
    return all(any(family & path for path in paths(error)) for error in schema._validator.iter_errors(data))


def test_grammar_fuzzer_random_walks_give_valid_answers(loaded, tiny_model):
    """Random walks through every suite schema's compiled grammar with the tiny tokenizer: every complete
    output of a fully enforced schema validates; of a partly enforced one, fails only where it said."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tally, bad = Counter(), []
    for index, (case, schema) in enumerate(accepted(loaded)):
        for text, complete in _walk_rows(tokenizer, schema, rows=4, steps=64, seed=index):
            if not complete:
                tally["incomplete"] += 1
                continue
            answer = parse_answer(text, schema)
            tally["valid" if answer.valid else "invalid"] += 1
            if not answer.valid and (not schema.unenforced or not answer.parsed or not _explained(schema, answer.data)):
                bad.append((case.name, schema.unenforced, text[:120], answer.errors[:2]))
    assert bad == []
    assert tally["valid"] > 0.9 * sum(tally.values())  # the walks do reach the end of their grammars


def _extract_all(engine, schemas, votes: int):
    """`extract` (task, runner, engine) once per schema on one small page, the model loaded once."""
    from internvl_cli.engine.base import Sampling
    from internvl_cli.runs.runner import Runner
    from internvl_cli.tasks.extract import ExtractOptions, ExtractTask, answer_budget

    crashes, results = [], []
    for case, schema in schemas:
        budget, _ = answer_budget(schema, 24, explicit=True)  # a tight budget: answers wrapped up early
        options = ExtractOptions(tiling=engine.tiling.with_limits(1, 1), sampling=Sampling(max_new_tokens=budget),
                                 window_tiles=1, votes=votes)
        sink = ListSink()
        try:
            report = Runner(ExtractTask(options, schema, engine.model_id), engine, sink, "record").run(
                [SAMPLES / "chart.png"])
        except Exception as exc:  # noqa: BLE001 - a crash is what this test looks for
            crashes.append((case.name, repr(exc)))
            continue
        results.append((case, schema, sink, report))
    return crashes, results


@pytest.mark.parametrize("votes", [1, 3])
def test_every_suite_schema_through_extract_with_the_tiny_model(loaded, engine, votes):
    schemas = accepted(loaded) if votes == 1 else accepted(loaded)[::4]  # votes: every fourth schema
    crashes, results = _extract_all(engine, schemas, votes)
    assert crashes == []
    false_valid, missing, tally = [], [], Counter()
    for case, schema, sink, report in results:
        if len(sink.records) != 1:
            missing.append((case.name, len(sink.records), [f.one_line() for f in sink.failures]))
            continue
        record = sink.records[0]
        tally["valid" if record["valid"] else "invalid"] += 1
        assert record["unenforced"] == schema.unenforced
        if record["valid"] and reference_errors(case.schema, record["data"]):
            false_valid.append((case.name, record["data"], reference_errors(case.schema, record["data"])[:2]))
        if not record["valid"]:
            assert record["errors"] and re.match(r"pages 1: |\$", record["errors"][0])
    assert missing == [] and false_valid == []
    assert tally["valid"] > 0.8 * len(results)
