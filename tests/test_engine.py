"""The transformers engine on the tiny checkpoint: batching, out-of-memory splitting, loops, lazy loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from internvl_cli.engine import GenerationRequest, Sampling, load_engine
from internvl_cli.errors import OutOfMemoryError
from internvl_cli.documents.tiling import tile_image


@pytest.fixture(scope="module")
def engine(tiny_model):
    """Loaded here, so that tests which patch its model work alone (`-k`) as well as after others."""
    loaded = load_engine(str(tiny_model))
    loaded.load()
    return loaded


def request(engine, width: int, height: int, tokens: int = 6) -> GenerationRequest:
    image = Image.fromarray(np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8))
    _, tiles = tile_image(image, engine.tiling)
    return GenerationRequest(images=[tiles], text="Transcribe.", sampling=Sampling(max_new_tokens=tokens))


def test_weights_load_only_when_needed(tiny_model):
    lazy = load_engine(str(tiny_model))
    assert lazy.model is None and lazy.tiling.max_tiles == 12
    lazy.load()
    assert lazy.model is not None


@pytest.mark.parametrize("kind", ["hf", "vllm", "server"])
def test_every_engine_is_built_from_one_read_of_the_checkpoint(tiny_model, monkeypatch, kind):
    """No engine builds another to learn about a model: the loader reads the CheckpointInfo once and hands it
    over (the server engine too, when --model names a local checkpoint)."""
    from internvl_cli.engine import EngineSettings
    from internvl_cli.engine.hf import TransformersEngine
    from internvl_cli.models.info import CheckpointInfo

    reads, built = [], []
    real_read, real_init = CheckpointInfo.read.__func__, TransformersEngine.__init__
    monkeypatch.setattr(CheckpointInfo, "read", classmethod(lambda cls, *a: reads.append(a) or real_read(cls, *a)))
    monkeypatch.setattr(TransformersEngine, "__init__", lambda self, *a, **k: built.append(a) or real_init(self, *a, **k))
    servers = ["127.0.0.1:1"] if kind == "server" else []
    engine = load_engine(str(tiny_model), settings=EngineSettings(kind=kind, servers=servers))
    assert len(reads) == 1 and len(built) == (kind == "hf")
    assert engine.tiling == engine.info.tiling and engine.info.image_seq_length == 256
    assert engine.info.context_length == 16384 and engine.info.quantization is None


def test_a_served_model_known_by_name_gets_internvls_standard_tiles():
    from internvl_cli.documents.tiling import TilingConfig
    from internvl_cli.engine import EngineSettings

    served = load_engine("tiny", settings=EngineSettings(kind="server", servers=["127.0.0.1:1"]))
    assert served.info.model_dir is None and served.tiling == TilingConfig() and served.model_id == "tiny"


def test_batched_results_equal_one_by_one(engine):
    requests = [request(engine, 448, 448), request(engine, 1000, 700), request(engine, 300, 900)]
    batched = engine.generate(requests)
    alone = [engine.generate([r])[0] for r in requests]
    assert [r.image_tokens for r in batched] == [256, 1792, 1024]
    assert [r.text for r in batched] == [r.text for r in alone]


def test_gpu_out_of_memory_halves_the_batch(engine, monkeypatch):
    real = engine.model.generate
    sizes = []

    def tight_memory(**kwargs):  # stands in for a GPU that fits one request at a time
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(**kwargs)

    monkeypatch.setattr(engine.model, "generate", tight_memory)
    results = engine.generate([request(engine, 448, 448), request(engine, 500, 500), request(engine, 600, 600)])
    assert len(results) == 3 and sizes == [3, 1, 2, 1, 1]


def test_out_of_memory_is_retried_out_of_the_handler_and_lowers_later_batches(tiny_model, monkeypatch):
    """The real generate path, with its first forward pass running out of memory: when the halves start, what
    that attempt allocated can be collected (the handler's traceback no longer holds its frames), and later
    batches of the same shape start at the lowered size instead of failing again."""
    import functools
    import weakref

    fresh = load_engine(str(tiny_model))
    fresh.load()
    real_generate, real_forward = fresh.model.generate, fresh.model.forward
    sizes, held, alive_at_retry = [], [], []

    @functools.wraps(real_forward)  # generate() checks its inputs against forward's signature
    def out_of_memory_once(*args, **kwargs):
        if not held:
            activations = torch.ones(1024, 1024)  # what a failed prefill leaves in its frames
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_forward(*args, **kwargs)

    def recording(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if held:
            alive_at_retry.append(held[0]() is not None)
        return real_generate(**kwargs)

    monkeypatch.setattr(fresh.model, "forward", out_of_memory_once)
    monkeypatch.setattr(fresh.model, "generate", recording)
    pages = [request(fresh, 448, 448), request(fresh, 500, 500), request(fresh, 600, 600), request(fresh, 700, 700)]
    assert len(fresh.generate(pages)) == 4
    assert sizes == [4, 2, 2] and alive_at_retry == [False, False]
    sizes.clear()
    assert len(fresh.generate(pages)) == 4
    assert sizes == [2, 2]


def test_out_of_memory_on_a_single_page_is_a_typed_error(engine, monkeypatch):
    def no_memory(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine.model, "generate", no_memory)
    with pytest.raises(OutOfMemoryError) as caught:
        engine.generate([request(engine, 448, 448)])
    assert "--max-tiles" in caught.value.one_line()


def test_a_looping_answer_is_stopped_and_flagged(engine):
    # The random tiny model repeats one token greedily: exactly the degenerate loop to catch.
    result = engine.generate([request(engine, 448, 448, tokens=400)])[0]
    assert result.finish_reason == "repetition"
    assert result.new_tokens < 400
