"""Backends against the real bundled model on real llama.cpp (no mocks).

EDGE_HOME points at a fresh folder in every test (tests/conftest.py). The
ONNX test builds an onnxruntime-genai model folder from the bundled GGUF
(transformers + optimum, about a minute; kept in the test cache) and runs
only with EDGE_RUN_SLOW=1.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge.backends import BACKENDS, Completion, Message, load_backend, parse_json
from edge.backends.base import StopScanner
from edge.backends.llama_cpp import LlamaCppBackend
from edge.backends.scripted import ScriptedBackend
from edge.errors import BackendError, EdgeError, ModelOutputError
from edge.models import bundled_gguf_path

OPS_SCHEMA = {
    "type": "object",
    "properties": {
        "memory": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "maxLength": 3},
                    "text": {"type": "string", "maxLength": 40},
                    "event": {"enum": ["ADD", "UPDATE", "DELETE", "NONE"]},
                },
                "required": ["id", "text", "event"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["memory"],
    "additionalProperties": False,
}

MANAGER_SYSTEM = (
    "You manage a memory bank. For each new fact in the user's message, answer with JSON "
    "operations: ADD a new memory, UPDATE one whose meaning changed, DELETE one that is now "
    "false, or NONE when nothing changes. "
) * 4
ANSWER_SYSTEM = (
    "You answer questions from memories. Read the memories, pick the ones that matter, "
    "then answer in a few words after the marker 'Answer:'. "
) * 4


@pytest.fixture(scope="module")
def backend():
    with LlamaCppBackend(bundled_gguf_path(), n_ctx=2048) as loaded:
        yield loaded


def user(text: str) -> list[Message]:
    return [Message("user", text)]


# ----------------------------------------------------------------- llama.cpp


def test_complete_returns_text_and_counts(backend):
    completion = backend.complete(user("What is the capital of France?"), max_tokens=24)
    assert isinstance(completion, Completion)
    assert completion.text.strip()
    assert completion.prompt_tokens > 10
    assert 0 < completion.completion_tokens <= 24
    assert completion.seconds > 0
    assert completion.finish_reason in ("stop", "length")
    assert backend.name == "llama.cpp:SmolLM2-135M-Instruct.Q4_1"


def test_max_tokens_gives_length(backend):
    completion = backend.complete(user("Write a long poem about the sea."), max_tokens=5)
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 5


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_schema_output_always_parses(backend, temperature):
    turns = [
        "I moved to Berlin last month.",
        "My sister Ana plays tennis every Sunday.",
        "Forget that I like coffee, I only drink tea now.",
    ]
    for turn in turns:
        messages = [Message("system", "Turn the user's message into memory operations as JSON."), *user(turn)]
        completion = backend.complete(messages, schema=OPS_SCHEMA, max_tokens=200, temperature=temperature)
        assert completion.finish_reason == "stop", completion.text
        parse_json(completion.text, OPS_SCHEMA)  # raises if it is not JSON matching the schema



def test_greedy_schema_decoding_picks_the_tokens_llama_cpps_sampler_chain_picks():
    """The fast path (grammar checked on the chosen token first) against llama.cpp's own chain."""
    from edge.prompts import REPEAT_PENALTY, ShownMemory, Turn, manager_messages, manager_schema
    from edge.model_calls import to_messages

    turns = ["I moved to Berlin last month.", "My sister Ana plays tennis every Sunday and hates losing.",
             "Forget that I like coffee, I only drink tea now.", "We adopted a cat called Luna!"]
    shown = [ShownMemory("0", "semantic", "Ana is my sister."), ShownMemory("1", "semantic", "I like coffee.")]
    with LlamaCppBackend(bundled_gguf_path(), n_ctx=2048, repeat_penalty=REPEAT_PENALTY) as loaded:
        for text in turns:
            messages = to_messages(manager_messages(Turn("Sam", text, "8 May 2023"), shown))
            replies = []
            for fast in (True, False):
                loaded.fast_grammar = fast
                loaded.clear_cache()  # both from the same, empty cache: batch shapes change float results
                replies.append(loaded.complete(messages, schema=manager_schema(["0", "1"]), max_tokens=120))
            assert replies[0].text == replies[1].text
            assert replies[0].finish_reason == replies[1].finish_reason
            assert replies[0].completion_tokens == replies[1].completion_tokens > 5


def test_thread_count_follows_edge_threads_and_stays_in_bounds(monkeypatch):
    from edge.backends.threads import default_threads, usable_cores

    monkeypatch.setenv("EDGE_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("EDGE_THREADS", "many")
    with pytest.raises(BackendError, match="EDGE_THREADS"):
        default_threads()
    monkeypatch.delenv("EDGE_THREADS")
    assert 1 <= default_threads() <= max(2, usable_cores() // 2)

def test_stream_pieces_make_the_final_text(backend):
    stream = backend.stream(user("Name three fruits."), max_tokens=40)
    pieces = list(stream)
    assert len(pieces) > 1
    final = stream.completion
    assert final is not None and final.text == "".join(pieces)
    assert final.completion_tokens >= len(pieces) - 1


def test_cancel_stops_a_stream_early(backend):
    cancel = threading.Event()
    pieces = []
    stream = backend.stream(user("Tell me a long story about a dragon."), max_tokens=200, cancel=cancel)
    for piece in stream:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    final = stream.completion
    assert final.finish_reason == "cancelled"
    assert len(pieces) == 3
    assert final.completion_tokens <= 4
    assert final.text == "".join(pieces)


def test_an_open_stream_refuses_a_second_call_from_its_thread(backend):
    stream = backend.stream(user("Tell me a story."), max_tokens=50)
    next(stream)
    with pytest.raises(BackendError, match="still streaming"):
        backend.complete(user("hi"), max_tokens=2)
    stream.close()
    assert stream.completion.finish_reason == "cancelled"
    assert backend.complete(user("hi"), max_tokens=2).completion_tokens == 2


def test_stop_string_cuts_the_text(backend):
    messages = user("Count from one to ten in words.")
    free = backend.complete(messages, max_tokens=40)
    words = free.text.split()
    assert len(words) > 3, free.text
    stop_word = words[2]
    cut = backend.complete(messages, max_tokens=40, stop=[stop_word])
    assert cut.finish_reason == "stop"
    assert stop_word not in cut.text
    assert free.text.startswith(cut.text)


def test_count_tokens_agrees_with_prompt_tokens(backend):
    messages = [Message("system", "Be brief."), *user("How many legs has a spider?")]
    completion = backend.complete(messages, max_tokens=4)
    assert backend.count_tokens(backend.render_prompt(messages)) == completion.prompt_tokens
    assert backend.count_tokens("hello world") == 2


def test_same_system_prompt_is_not_evaluated_twice(backend):
    system = Message("system", MANAGER_SYSTEM + " (reuse test)")
    first = backend.complete([system, *user("I like jazz.")], max_tokens=4)
    assert backend.last_prompt_eval_tokens >= first.prompt_tokens - 5  # new system prompt: evaluated
    second = backend.complete([system, *user("My cat is called Momo.")], max_tokens=4)
    system_tokens = backend.count_tokens(system.content)
    assert system_tokens > 150
    assert backend.last_prompt_eval_tokens <= second.prompt_tokens - system_tokens


def test_alternating_system_prompts_restore_their_prefix():
    path = bundled_gguf_path()
    manager = Message("system", MANAGER_SYSTEM)
    answer = Message("system", ANSWER_SYSTEM)
    evaluated = {}
    for slots in (0, 4):
        with LlamaCppBackend(path, n_ctx=2048, prefix_slots=slots) as local:
            local.complete([manager, *user("I moved to Rome.")], max_tokens=2)
            local.complete([answer, *user("Where do I live?")], max_tokens=2)
            third = local.complete([manager, *user("I adopted a dog.")], max_tokens=2)
            evaluated[slots] = (local.last_prompt_eval_tokens, third.prompt_tokens)
    without, prompt_tokens = evaluated[0]
    with_snapshots, _ = evaluated[4]
    assert without >= prompt_tokens - 5  # only the chat-template header was shared
    assert with_snapshots < prompt_tokens // 4


def test_unknown_adapter_is_refused(backend):
    with pytest.raises(BackendError, match="adapter"):
        backend.complete(user("hi"), adapter="manager")


def test_missing_file_raises_backend_error(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        LlamaCppBackend(tmp_path / "nope.gguf")


def test_garbage_file_raises_backend_error(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BackendError) as err:
        LlamaCppBackend(garbage)
    assert err.value.hint


def test_truncated_gguf_raises_backend_error(tmp_path):
    truncated = tmp_path / "truncated.gguf"
    with bundled_gguf_path().open("rb") as source:
        truncated.write_bytes(source.read(2_000_000))
    with pytest.raises(BackendError, match="could not load") as err:
        LlamaCppBackend(truncated)
    assert "corrupt" in err.value.hint


def write_random_lora(path: Path, seed: int, rank: int = 8) -> Path:
    """A GGUF LoRA adapter for SmolLM2-135M (q and v projections) with random weights."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(seed)
    hidden, kv_width, layers = 576, 192, 30
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for layer in range(layers):
        for name, width in (("attn_q", hidden), ("attn_v", kv_width)):
            a = rng.standard_normal((rank, hidden)) / np.sqrt(hidden)
            b = rng.standard_normal((width, rank)) / np.sqrt(rank)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a.astype(np.float32))
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_adapters_switch_per_call(tmp_path):
    adapters = {
        "manager": write_random_lora(tmp_path / "manager.gguf", seed=1),
        "answer": write_random_lora(tmp_path / "answer.gguf", seed=2),
    }
    messages = [Message("system", "Answer briefly."), *user("What is the capital of France?")]
    with LlamaCppBackend(bundled_gguf_path(), n_ctx=1024, adapters=adapters) as local:
        assert sorted(local.adapters) == ["answer", "manager"]
        outputs = [
            (adapter, local.complete(messages, max_tokens=12, adapter=adapter).text)
            for adapter in (None, "manager", "answer", "manager", None)
        ]
    texts = dict(outputs[:3])
    assert texts[None] != texts["manager"]  # the adapter changes the model
    assert outputs[3][1] == texts["manager"]  # switching back gives the same adapter
    assert outputs[4][1] == texts[None]  # and clearing it gives the base model
    # keys/values cached under another adapter were not reused
    with LlamaCppBackend(bundled_gguf_path(), n_ctx=1024, adapters=adapters) as fresh:
        assert fresh.complete(messages, max_tokens=12, adapter="manager").text == texts["manager"]


def test_bad_adapter_file_raises_backend_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(512))
    with pytest.raises(BackendError):
        LlamaCppBackend(bundled_gguf_path(), n_ctx=512, adapters={"manager": bad})


# ------------------------------------------------------------------ scripted


def test_scripted_backend_plays_replies_in_order():
    scripted = ScriptedBackend(["first reply", '{"memory": []}'])
    first = scripted.complete(user("a"))
    assert (first.text, first.completion_tokens, first.finish_reason) == ("first reply", 2, "stop")
    second = scripted.complete(user("b c"), schema=OPS_SCHEMA)
    assert json.loads(second.text) == {"memory": []}
    assert second.prompt_tokens == 2
    assert [call["messages"][0].content for call in scripted.calls] == ["a", "b c"]
    with pytest.raises(BackendError, match="no replies left"):
        scripted.complete(user("c"))


def test_scripted_backend_refuses_non_json_for_a_schema():
    with pytest.raises(ModelOutputError):
        ScriptedBackend(["not json"]).complete(user("x"), schema=OPS_SCHEMA)
    with pytest.raises(ModelOutputError, match="event"):
        ScriptedBackend(['{"memory": [{"id": "0", "text": "t", "event": "MERGE"}]}']).complete(
            user("x"), schema=OPS_SCHEMA
        )


def test_scripted_backend_streams_stops_and_cancels():
    scripted = ScriptedBackend(["one two three four five", "alpha beta gamma delta", "a b c d e f"])
    stream = scripted.stream(user("x"))
    assert "".join(stream) == "one two three four five"
    assert stream.completion.completion_tokens == 5 and scripted.completions == [stream.completion]
    assert scripted.complete(user("x"), stop=["gamma"]).text == "alpha beta "
    cancel = threading.Event()
    pieces = []
    stream = scripted.stream(user("x"), cancel=cancel)
    for piece in stream:
        pieces.append(piece)
        cancel.set()
    assert pieces == ["a "]
    assert stream.completion.finish_reason == "cancelled"


def test_stop_scanner_holds_back_a_split_stop_string():
    scanner = StopScanner(["<END>"])
    assert scanner.feed("hello <E") == ("hello ", False)
    assert scanner.feed("N") == ("", False)
    assert scanner.feed("D> tail") == ("", True)
    assert scanner.text == "hello "
    scanner = StopScanner(["<END>"])
    assert scanner.feed("a <") == ("a ", False)
    assert scanner.feed("b") == ("<b", False)


# ----------------------------------------------------------- registry, models


def test_load_backend_builds_each_kind():
    assert set(BACKENDS) >= {"llama.cpp", "http", "onnx-genai", "scripted"}
    scripted = load_backend("scripted", replies=["ok"])
    assert scripted.complete(user("hi")).text == "ok"
    with pytest.raises(BackendError, match="Unknown backend"):
        load_backend("gpt-17")
    with load_backend("llama.cpp", model_path=bundled_gguf_path(), n_ctx=512) as local:
        assert local.count_tokens("hello world") == 2


def test_bundled_gguf_path_points_at_the_model():
    path = bundled_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert issubclass(BackendError, EdgeError)


# ---------------------------------------------------------- onnxruntime-genai

# Stand-in for the exporter: GGUF -> transformers -> optimum ONNX (f32), plus the
# genai_config.json and a byte-level BPE tokenizer.json that onnxruntime-genai reads.
_BUILD_ONNX = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from optimum.exporters.onnx import main_export
    gguf, hf, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    main_export(str(hf), output=str(out), task="text-generation-with-past")
    spec = json.loads((out / "tokenizer.json").read_text())
    spec["normalizer"] = None
    spec["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    spec["model"].update(byte_fallback=False, fuse_unk=False, unk_token=None)
    (out / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="GPT2Tokenizer", add_bos_token=False)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    (out / "tokenizer.model").unlink(missing_ok=True)
    c = model.config
    decoder = {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": "model.onnx", "head_size": c.hidden_size // c.num_attention_heads,
        "hidden_size": c.hidden_size, "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers, "num_key_value_heads": c.num_key_value_heads,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                   "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                   "past_value_names": "past_key_values.%d.value"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"},
    }
    genai = {
        "model": {"type": "llama", "bos_token_id": c.bos_token_id, "eos_token_id": [c.eos_token_id],
                  "pad_token_id": c.eos_token_id, "vocab_size": c.vocab_size,
                  "context_length": 2048, "decoder": decoder},
        "search": {"max_length": 2048, "do_sample": False, "num_beams": 1, "past_present_share_buffer": False},
    }
    (out / "genai_config.json").write_text(json.dumps(genai, indent=1))
    """
)


@pytest.fixture(scope="module")
def onnx_model_dir(tmp_path_factory):
    ready = os.environ.get("EDGE_TEST_ONNX_MODEL")
    if ready:
        return Path(ready)
    cached = Path(os.environ.get("EDGE_CACHE") or tmp_path_factory.mktemp("cache")) / "onnx-genai-smollm2-f32"
    if (cached / "genai_config.json").is_file():
        return cached
    for module in ("onnxruntime_genai", "torch", "transformers", "optimum.exporters.onnx"):
        pytest.importorskip(module)
    work = tmp_path_factory.mktemp("onnx")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    subprocess.run(
        [sys.executable, "-c", _BUILD_ONNX, str(bundled_gguf_path()), str(work / "hf"), str(work / "onnx")],
        check=True, env=env, capture_output=True, timeout=600,
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work / "onnx"), str(cached))
    shutil.rmtree(work / "hf", ignore_errors=True)
    return cached


@pytest.mark.slow
def test_onnx_genai_backend(onnx_model_dir):
    with load_backend("onnx-genai", model_dir=onnx_model_dir) as onnx:
        assert onnx.constrained  # guidance is compiled into the wheel
        completion = onnx.complete(user("What is the capital of France?"), max_tokens=16)
        assert "Paris" in completion.text
        assert completion.prompt_tokens == onnx.count_tokens(onnx.render_prompt(user("What is the capital of France?")))
        for temperature in (0.0, 1.0):
            turn = user("My sister Ana plays tennis every Sunday.")
            shaped = onnx.complete(turn, schema=OPS_SCHEMA, max_tokens=200, temperature=temperature)
            assert shaped.finish_reason == "stop"
            parse_json(shaped.text, OPS_SCHEMA)
        stream = onnx.stream(user("Name three fruits."), max_tokens=20)
        assert "".join(stream) == stream.completion.text
        cancel = threading.Event()
        stream = onnx.stream(user("Tell me a long story."), max_tokens=100, cancel=cancel)
        for _ in stream:
            cancel.set()
        assert stream.completion.finish_reason == "cancelled"
        assert stream.completion.completion_tokens == 1


def test_onnx_genai_missing_folder_raises(tmp_path):
    pytest.importorskip("onnxruntime_genai")
    with pytest.raises(BackendError, match="genai_config.json"):
        load_backend("onnx-genai", model_dir=tmp_path)


def test_every_backend_declares_its_context_adapters_and_prompt_text(llama_backend) -> None:
    """What the Manager, the Answer Agent and the evaluation ask of any backend, without getattr guesses."""
    from edge.backends.scripted import ScriptedBackend

    scripted = ScriptedBackend()
    assert scripted.n_ctx == 4096 and scripted.adapters == []
    with pytest.raises(BackendError, match="does not expose"):
        scripted.render_prompt([Message("user", "hi")])
    assert llama_backend.n_ctx == 4096 and sorted(llama_backend.adapters) == ["answer", "manager"]
    assert "hi" in llama_backend.render_prompt([Message("user", "hi")])
