"""One bundle, one generation configuration: what is served is what is trained, checked and evaluated.

- `GenerationConfig` reads a manifest's `generation` table once (old manifests included) and refuses bad values;
- a bundle whose settings differ reaches the runtime (Agent, its backend and agents), the training reward's
  reader and the export's parity runners, all together;
- a role served by an adapter is served by that adapter or fails, never by the base model;
- the training reward applies a Manager reply through the runtime's own function, so its bank holds the
  facts the runtime Manager's bank holds for the same reply.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.backends.scripted import ScriptedBackend
from edge.bank import MemoryBank
from edge.bundle import DEFAULT_GENERATION, MANIFEST, Bundle, default_generation, write_manifest
from edge.embedder import HashEmbedder
from edge.errors import BackendError, BundleError, InvalidInputError
from edge.files import link_or_copy
from edge.generation import GenerationConfig
from edge.manager import MemoryManager
from edge.model_calls import adapter_for
from edge.operations import AddOp
from edge.prompts import REPEAT_PENALTY, Turn

CHANGED = {"repeat_penalty": 1.3, "answer_k": 7, "answer_tokens": 200, "manager_max_tokens": 150}


def bundle_copy(source: Bundle, target: Path, **changes) -> Bundle:
    """`source` as a bundle folder of its own (files hard-linked) with its manifest changed by `changes`."""
    for rel in source.manifest["files"]:
        link_or_copy(source.root / rel, target / rel)
    manifest = {k: v for k, v in source.manifest.items() if k != "files"}
    manifest.update(changes)
    write_manifest(target, manifest)
    return Bundle.load(target)


# ---------------------------------------------------------------------- reading the table


def test_an_old_manifest_without_settings_reads_with_the_defaults():
    assert GenerationConfig.from_manifest(None) == GenerationConfig()
    partial = GenerationConfig.from_manifest({"answer_k": 20})
    assert partial.answer_k == 20 and partial.repeat_penalty == REPEAT_PENALTY and partial.n_ctx == 4096
    assert default_generation() == GenerationConfig.from_manifest(DEFAULT_GENERATION)


def test_a_bundle_without_a_generation_table_serves_the_defaults(default_bundle):
    old = Bundle(default_bundle.root, {k: v for k, v in default_bundle.manifest.items() if k != "generation"})
    assert old.generation == GenerationConfig()
    assert default_bundle.generation == default_generation()


def test_json_numbers_read_as_the_settings_types():
    config = GenerationConfig.from_manifest({"answer_k": 20.0, "repeat_penalty": 1, "n_ctx": 2048})
    assert (config.answer_k, config.repeat_penalty, config.n_ctx) == (20, 1.0, 2048)
    assert isinstance(config.answer_k, int) and isinstance(config.repeat_penalty, float)
    assert GenerationConfig.from_manifest(config.to_manifest()) == config


@pytest.mark.parametrize("table, says", [
    ({"repeat_penalty": 0}, "repeat_penalty must be a number > 0"),
    ({"answer_k": 0}, "answer_k must be a whole number >= 1"),
    ({"answer_k": 2.5}, "answer_k must be a whole number"),
    ({"answer_k": True}, "answer_k must be a whole number"),
    ({"temperature": -0.1}, "temperature must be a number >= 0"),
    ({"text_mode": "poetry"}, "text_mode must be one of extractive, free"),
    ({"n_ctx": 64}, "n_ctx must be a whole number >= 256"),
    ({"unknown_margin": -1}, "unknown_margin must be a number >= 0"),
    ({"answer_retrieval": "psychic"}, "answer_retrieval must be one of hybrid, replies"),
    ({"repeat_penalt": 1.2}, "unknown generation setting"),
    (["answer_k"], "must be an object"),
])
def test_a_bad_setting_is_a_bundle_error_with_a_hint(table, says):
    with pytest.raises(BundleError, match=says) as raised:
        GenerationConfig.from_manifest(table, source="The bundle x")
    assert raised.value.hint and "The bundle x" in raised.value.message


def test_a_bad_setting_fails_the_bundle_at_load(default_bundle, tmp_path):
    with pytest.raises(BundleError, match="answer_k must be a whole number"):
        bundle_copy(default_bundle, tmp_path / "bad", generation={"answer_k": "many"})


def test_the_unknown_margin_is_the_answer_agents_choice_bias():
    """0 biases nothing; a margin holds "unknown" back by that many logits (`Backend.complete(choice_bias=...)`)."""
    assert GenerationConfig().answer_bias is None
    assert GenerationConfig.from_manifest({"unknown_margin": 2}).answer_bias == {"unknown": -2.0}


def test_overrides_keep_what_they_do_not_name_and_are_validated():
    config = GenerationConfig(answer_k=20)
    assert config.override(answer_k=None, text_mode="free") == GenerationConfig(answer_k=20, text_mode="free")
    with pytest.raises(InvalidInputError, match="text_mode"):
        config.override(text_mode="poetry")


# ---------------------------------------------------------------------- one object, everywhere


def test_changed_settings_reach_the_runtime_the_reward_reader_and_the_parity_check(default_bundle, tmp_path):
    """One bundle with other settings: the served agents, the reward's reader and the parity runners all see them."""
    from edge.export.pipeline import ExportOptions, parity_plan
    from edge.train.config import RewardSettings, TrainConfig
    from edge.train.recipe import build_reader

    changed = bundle_copy(default_bundle, tmp_path / "changed",
                          generation={**default_bundle.manifest["generation"], **CHANGED})
    generation = changed.generation
    assert (generation.repeat_penalty, generation.answer_k) == (1.3, 7)
    assert default_bundle.generation.repeat_penalty != 1.3 and default_bundle.generation.answer_k != 7
    model, _ = changed.role("answer")

    # The runtime: the Agent's settings, its backend, its Manager and its Answer Agent.
    with Agent(bundle=changed, db=tmp_path / "bank.db") as agent:
        assert agent.generation == generation
        assert agent.manager_backend.repeat_penalty == 1.3
        assert agent.manager.generation == generation and agent.manager.max_tokens == 150
        assert agent.answerer.generation == generation
        assert (agent.answerer.k, agent.answerer.answer_tokens) == (7, 200)

    # The training reward's frozen reader, built for the bundle the Manager will be served in.
    config = TrainConfig(device="cpu", reward=RewardSettings(reader="agent", reader_model=str(model)))
    reader = build_reader(config, generation=changed.generation)
    try:
        assert reader.generation == generation
        assert reader.agent.backend.repeat_penalty == 1.3
        assert (reader.agent.k, reader.agent.answer_tokens) == (7, 200)
    finally:
        reader.agent.backend.close()

    # The export's parity check: every runner it opens decodes with the settings the bundles will carry.
    options = ExportOptions(out=tmp_path / "dist", gguf=("q8_0",), generation=changed.generation)
    targets = parity_plan(options, ["base"], {"base": tmp_path / "hf"},
                           {("base", "f16"): model, ("base", "q8_0"): model}, {}, {}, ["f16", "q8_0"])
    for candidate in targets[0].candidates:
        runner = candidate.open()
        try:
            assert runner.backend.repeat_penalty == 1.3
        finally:
            runner.close()


def test_a_bundles_unknown_margin_reaches_the_answer_agent(default_bundle, tmp_path):
    """The real Agent on a bundle whose Answer Agent must see "unknown" lead by 100 logits: a question the same
    bundle without a margin answers "unknown" gets a span of what was said instead."""
    free = bundle_copy(default_bundle, tmp_path / "free",
                       generation={**default_bundle.manifest["generation"], "unknown_margin": 0.0})
    held = bundle_copy(default_bundle, tmp_path / "held",
                       generation={**default_bundle.manifest["generation"], "unknown_margin": 100.0})
    turns = [{"speaker": "Jon", "text": "I'm reading The Lean Startup, it's full of ideas for my dance studio.",
              "time": "2023-06-04 14:00"},
             {"speaker": "Gina", "text": "I opened my online clothing store last month, I'm swamped with orders.",
              "time": "2023-06-04 14:01"}]
    answers = []
    for i, bundle in enumerate((free, held)):
        with Agent(bundle=bundle, db=tmp_path / f"bank{i}.db") as agent:
            agent.remember(turns)
            answers.append(agent.ask("What instrument does Gina play?").answer)
    assert answers[0] == "unknown"
    assert answers[1] != "unknown" and any(answers[1] in t["text"] for t in turns), answers


def test_the_default_reward_reader_decodes_as_the_default_bundle(default_bundle):
    from edge.train.config import RewardSettings, TrainConfig
    from edge.train.recipe import build_reader

    model, _ = default_bundle.role("answer")
    config = TrainConfig(device="cpu", reward=RewardSettings(reader="agent", reader_model=str(model), reader_k=9))
    reader = build_reader(config)
    try:
        assert reader.agent.backend.repeat_penalty == default_bundle.generation.repeat_penalty == REPEAT_PENALTY
        assert reader.agent.k == 9 and reader.agent.text_mode == default_bundle.generation.text_mode
    finally:
        reader.agent.backend.close()


# ---------------------------------------------------------------------- adapters named by the roles


def _with_manager_adapter(bundle: Bundle, path: str = "adapters/absent.gguf") -> dict:
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["adapters"] = {**manifest.get("adapters", {}), "manager": {"path": path, "base_model": "base"}}
    manifest["roles"]["manager"] = {"model": "base", "adapter": "manager"}
    return manifest


def test_a_bundle_naming_a_missing_adapter_file_fails_at_load(default_bundle, tmp_path):
    manifest = _with_manager_adapter(default_bundle)
    folder = bundle_copy(default_bundle, tmp_path / "copy").root
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="adapter 'manager' not found"):
        Bundle.load(folder)
    in_memory = Bundle(folder, manifest)  # never checked by Bundle.load: the Agent still refuses it
    with pytest.raises(BundleError, match="adapter files that are not there"):
        Agent(bundle=in_memory, db=tmp_path / "bank.db")


def test_an_adapter_that_does_not_load_fails_the_agent(default_bundle, tmp_path):
    folder = tmp_path / "copy"
    for rel in default_bundle.manifest["files"]:
        link_or_copy(default_bundle.root / rel, folder / rel)
    bad = folder / "adapters" / "bad.gguf"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"GGUF" + os.urandom(512))
    manifest = {k: v for k, v in _with_manager_adapter(default_bundle, "adapters/bad.gguf").items() if k != "files"}
    write_manifest(folder, manifest)
    with pytest.raises(BackendError, match="could not load the LoRA adapter"):
        Agent(bundle=Bundle.load(folder), db=tmp_path / "bank.db")


def test_a_backend_without_the_named_adapter_is_an_error_not_the_base_model(default_bundle, tmp_path):
    bundle = Bundle(default_bundle.root, _with_manager_adapter(default_bundle))
    with pytest.raises(BundleError, match="manager role with the adapter 'manager'"):
        Agent(bundle=bundle, db=tmp_path / "bank.db", backend=ScriptedBackend())
    backend = ScriptedBackend()
    with pytest.raises(BackendError, match="not loaded"):
        adapter_for(backend, "manager")
    with MemoryBank.open(tmp_path / "other.db", HashEmbedder()) as bank:
        with pytest.raises(BackendError, match="not loaded"):
            MemoryManager(backend, bank, adapter="manager")
    assert adapter_for(backend, None) is None  # a role with adapter null: the base model


def test_roles_without_adapters_are_served_by_the_base_model(default_bundle, tmp_path):
    manifest = json.loads(json.dumps(default_bundle.manifest))
    manifest["roles"] = {role: {**spec, "adapter": None} for role, spec in manifest["roles"].items()}
    backend = ScriptedBackend(['{"ops": [{"op": "NOOP"}]}'], check_schema=False)
    with Agent(bundle=Bundle(default_bundle.root, manifest), db=tmp_path / "bank.db", backend=backend) as agent:
        assert agent.manager.adapter is None and agent.answerer.adapter is None
        agent.remember(["I like tea."], wait=True)
    assert backend.calls[0]["adapter"] is None


# ---------------------------------------------------------------------- one function from reply to bank


FACTS = [("semantic", "Maya lives in Lisbon."), ("semantic", "Maya has a pet dog."), ("core", "Maya is a nurse.")]


def _facts(bank: MemoryBank) -> list[tuple]:
    """Every fact, current or superseded, its ids replaced by the texts they name (the banks number them apart)."""
    rows = bank.list(tier=["semantic", "core"], include_superseded=True)
    text_of = {m.id: m.text for m in rows}

    def named(metadata: dict) -> str:
        return json.dumps({k: text_of.get(v, v) if k == "supersedes" else v for k, v in metadata.items()},
                          sort_keys=True)

    return sorted((m.tier, m.text, m.event_time, m.source_turns, named(m.metadata), m.valid_until,
                   text_of.get(m.superseded_by or ""), m.superseded_turn) for m in rows)


def test_the_reward_bank_after_a_reply_is_the_runtime_managers_bank(tmp_path):
    from edge.train.rewards import score_reply

    embedder = HashEmbedder()
    turn = Turn("Maya", "I moved from Lisbon to Oslo last week, and I quit being a nurse.", "2023-05-08 13:56", "S1:2")
    with MemoryBank.open(tmp_path / "runtime.db", embedder) as bank:
        bank.apply([AddOp(text, tier, metadata={"speaker": "Maya"}) for tier, text in FACTS])  # the Manager's facts
        probe = MemoryManager(ScriptedBackend(), bank, text_mode="free")
        shown = probe.related(turn)
        local = {m.text: str(i) for i, m in enumerate(shown)}
        reply = json.dumps({"ops": [
            {"op": "UPDATE", "id": local["Maya lives in Lisbon."], "text": "Maya moved to Oslo last week",
             "tier": "semantic"},
            {"op": "DELETE", "id": local["Maya is a nurse."]},
            {"op": "ADD", "text": "Maya moved to Paris", "tier": "semantic"},  # not said: refused
        ]})
        result = MemoryManager(ScriptedBackend([reply], check_schema=False), bank, text_mode="free").process(turn)
        assert len(result.applied) == 2 and len(result.rejected) == 1
        runtime = _facts(bank)

    keys = {text: f"k{i}" for i, (_, text) in enumerate(FACTS)}
    row = {
        "questions": json.dumps([{"question": "Where does Maya live?", "answer": "Oslo"}]),
        "shown_ids": json.dumps([str(i) for i in range(len(shown))]),
        "bank": json.dumps([{"key": keys[text], "tier": tier, "text": text, "metadata": {"speaker": "Maya"}}
                            for tier, text in FACTS]),
        "shown": json.dumps([keys[m.text] for m in shown]),
        "turn": json.dumps(asdict(turn)),
    }
    seen: list[list[tuple]] = []

    def reader(reward_bank: MemoryBank, question: dict) -> str:  # a reader that looks at the bank it is given
        seen.append(_facts(reward_bank))
        return "Oslo"

    score, _ = score_reply(reply, row, reader, embedder)
    assert score == 1.0
    assert seen == [runtime]


# ---------------------------------------------------------------------- onnxruntime-genai


@pytest.fixture(scope="module")
def onnx_model_dir() -> Path:
    """The ONNX SmolLM2 folder `tests/test_backends.py` builds into the test cache (skipped until it has)."""
    ready = os.environ.get("EDGE_TEST_ONNX_MODEL")
    folder = Path(ready) if ready else Path(os.environ["EDGE_CACHE"]) / "onnx-genai-smollm2-f32"
    if not (folder / "genai_config.json").is_file():
        pytest.skip("no ONNX model yet: run the slow tests/test_backends.py::test_onnx_genai_backend first")
    pytest.importorskip("onnxruntime_genai")
    return folder


def _greedy(folder: Path, penalty: float, messages, **kwargs) -> str:
    from edge.backends.onnx_genai import OnnxGenAIBackend

    with OnnxGenAIBackend(folder, repeat_penalty=penalty) as backend:
        assert backend.repeat_penalty == penalty
        return backend.complete(messages, **kwargs).text


@pytest.mark.slow
def test_onnx_genai_applies_the_repeat_penalty_as_llama_cpp_does(onnx_model_dir):
    from edge.backends.base import Message, parse_json

    looping = [Message("user", "Write a list of the numbers one, one, one, one, one, one")]
    plain = _greedy(onnx_model_dir, 1.0, looping, max_tokens=40)
    held = _greedy(onnx_model_dir, 1.5, looping, max_tokens=40)
    assert plain.count("one,") >= 10  # greedy SmolLM2 loops on it
    assert held.count("one,") <= 2  # the penalty breaks the loop
    # The schema's mask still holds on the penalised logits: no model answers France's capital with these.
    schema = {"type": "object", "properties": {"answer": {"enum": ["zebra crossing", "purple"]}},
              "required": ["answer"], "additionalProperties": False}
    asked = [Message("user", "What is the capital of France?")]
    reply = parse_json(_greedy(onnx_model_dir, 1.3, asked, schema=schema, max_tokens=30), schema)
    assert reply["answer"] in ("zebra crossing", "purple")
