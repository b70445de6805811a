"""AWQ and official-layout checkpoints through the CLI, plus `convert`, `models` and `doctor`, all offline on CPU."""
from __future__ import annotations

import json

import pytest

from conftest import SAMPLES
from internvl_cli.models.presets import DEFAULT_MODEL, PRESETS


@pytest.fixture(scope="module")
def awq_model(tmp_path_factory):
    from tiny_awq import build_tiny_native_awq

    return build_tiny_native_awq(tmp_path_factory.mktemp("awq") / "tiny-awq")


@pytest.fixture(scope="module")
def official_awq(tmp_path_factory):
    from tiny_official import build_tiny_official

    return build_tiny_official(tmp_path_factory.mktemp("official") / "tiny-official-awq", awq=True)


@pytest.fixture(autouse=True)
def conversion_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "cache"))


def test_ocr_on_a_native_awq_checkpoint(cli, awq_model):
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--model", awq_model, "--format", "jsonl",
                         "--max-new-tokens", "6")
    assert code == 0, err
    assert json.loads(out)["page"] == 1 and "quantization=awq" in err


def test_ocr_on_an_official_awq_checkpoint_converts_once(cli, official_awq, tmp_path):
    args = ("ocr", SAMPLES / "chart.png", "--model", official_awq, "--format", "jsonl", "--max-new-tokens", "6")
    code, out, err = cli(*args)
    assert code == 0, err
    assert "quantization=awq" in err and json.loads(out)["tiles"] == 7
    converted = list((tmp_path / "cache" / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "config.json").exists()
    assert cli(*args)[0] == 0
    assert list((tmp_path / "cache" / "converted").iterdir()) == converted


def test_convert_command_writes_a_native_checkpoint(cli, official_awq, tmp_path):
    code, _, err = cli("convert", official_awq, tmp_path / "native")
    assert code == 0, err
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert config["model_type"] == "internvl"
    assert config["quantization_config"]["quant_method"] == "awq"
    assert "model.vision_tower" in config["quantization_config"]["modules_to_not_convert"]
    code, _, err = cli("convert", tmp_path / "native", tmp_path / "again")
    assert code == 6 and "internvl: error:" in err


def test_models_lists_presets_with_an_awq_default(cli):
    code, out, _ = cli("models", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == len(PRESETS)
    default = [r for r in rows if r["default"]]
    assert [r["name"] for r in default] == [DEFAULT_MODEL]
    assert default[0]["quantization"] == "awq" and default[0]["gpu_memory_gb"] <= 16
    assert all(r["cached"] is False for r in rows)
    assert all(r["licence"] and "see the model card" != r["licence"] for r in rows)  # every preset says its terms


def test_licence_is_stated_consistently():
    """LICENSE, the package metadata and README tell the same story, and the AGPL dependency is named."""
    import tomllib

    from conftest import REPO

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and set(meta["license-files"]) == {"LICENSE", "NOTICE"}
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    notice = (REPO / "NOTICE").read_text()
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Licences"):]
    for text in (notice, section):
        assert "Apache" in text and "AGPL-3.0" in text and "commercial" in text
    for name in PRESETS:
        assert name in section or "internvl models" in section


def test_doctor_works_without_a_gpu(cli):
    code, out, _ = cli("doctor", "--json")
    report = json.loads(out)
    assert code == 0 and report["torch"].startswith("2.") and "awq_kernel" in report


def test_bitsandbytes_checkpoints_are_refused(cli, tiny_model, tmp_path):
    import shutil

    checkpoint = tmp_path / "bnb"
    shutil.copytree(tiny_model, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (checkpoint / "config.json").write_text(json.dumps(config))
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--model", checkpoint)
    assert code == 6 and "bitsandbytes" in err and "InternViT" in err and out == ""
