"""`edge export`: a fresh LoRA adapter on the bundled SmolLM2-135M, exported, checked, bundled and used.

The main test exports once through the CLI (GGUF Q4_K_M and ONNX int8) and
every test of the module reads that export. It keeps the dev set to two
items per role so the whole module stays within a few minutes on two cores:
the greedy-token gates of the f16 GGUF and the fp32 ONNX model are enforced
as in a real export, while the task-score margin is opened to 1.0 because
two items cannot measure a 0.15 drop (the slow test runs the full gates).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.bundle import Bundle
from edge.cli import cli
from edge.errors import EdgeError, MissingExtraError
from edge.prompts import PROMPT_VERSION

pytest.importorskip("torch")
pytest.importorskip("peft")


def make_fresh_adapter(
    base_dir: Path, out: Path, *, seed: int = 0, std: float = 0.08, role: str = "manager"
) -> Path:
    """A rank-8 LoRA on every projection, its B matrices drawn at random so that outputs change.

    Its record has the fields `edge train` writes to edge-adapter.json.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    peft_model.save_pretrained(str(out))
    from edge.export.hf_base import prepare_base

    (out / "edge-adapter.json").write_text(json.dumps({
        "agent": role, "prompt_version": PROMPT_VERSION, "base": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "base_sha256": prepare_base("bundled").gguf_sha256, "config": {"base": "bundled"},
    }))
    return out


@pytest.fixture(scope="module")
def base_dir():
    from edge.export.hf_base import prepare_base

    return prepare_base("bundled").path


@pytest.fixture(scope="module")
def manager_adapter(base_dir, tmp_path_factory) -> Path:
    return make_fresh_adapter(base_dir, tmp_path_factory.mktemp("adapter") / "manager")


@pytest.fixture(scope="module")
def exported(manager_adapter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "dist"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_HOME", str(out.parent / "home"))
        result = CliRunner().invoke(cli, [
            "export", "--adapter", str(manager_adapter), "--out", str(out), "--gguf", "q4_k_m", "--onnx", "int8",
            "--parity-items", "2", "--parity-margin", "1.0", "--quiet",
        ])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return out


# ----------------------------------------------------------------------------- the export


def test_export_writes_one_verified_bundle_per_format(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir() if not p.name.startswith(".")) == [
        "export.json", "gguf-q4_k_m", "onnx-int8"]
    for name in ("gguf-q4_k_m", "onnx-int8"):
        bundle = Bundle.load(exported / name)
        assert bundle.verify() == []
        assert bundle.prompt_version == PROMPT_VERSION
    gguf = Bundle.load(exported / "gguf-q4_k_m")
    assert gguf.backend == "llama.cpp"
    assert gguf.manifest["roles"]["manager"] == {"model": "manager", "adapter": None}
    assert gguf.manifest["roles"]["answer"] == {"model": "base", "adapter": None}
    assert {m["quantization"] for m in gguf.manifest["models"].values()} == {"Q4_K_M"}
    onnx = Bundle.load(exported / "onnx-int8")
    assert onnx.backend == "onnx-genai"
    assert (onnx.role("manager")[0] / "genai_config.json").is_file()
    assert not (exported / ".work").exists()


def test_exported_gguf_keeps_the_bpe_tokenizer_and_chat_template(exported: Path) -> None:
    from edge.export.gguf import gguf_metadata

    model, _ = Bundle.load(exported / "gguf-q4_k_m").role("manager")
    meta = gguf_metadata(model, ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"))
    assert meta["tokenizer.ggml.model"] == "gpt2"  # not "llama": the converted-back GGUF pitfall
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert "<|im_start|>" in meta["tokenizer.chat_template"]


def test_parity_gates_pass_and_are_recorded(exported: Path) -> None:
    summary = json.loads((exported / "export.json").read_text())
    parity = summary["parity"]
    assert parity["passed"] is True
    rows = {(r["model"], r["artifact"], r["check"]): r for r in parity["rows"]}
    for model in ("manager", "base"):
        for artifact, gate in (("gguf f16", 0.90), ("onnx fp32", 0.95)):
            row = rows[(model, artifact, "greedy vs torch")]
            assert row["value"] >= gate and row["passed"]
            assert rows[(model, artifact, "prompt render")]["value"] == 1.0
        assert (model, "gguf q4_k_m", "task score") in rows
        assert (model, "onnx int8", "task score") in rows
    assert set(summary["sizes_bytes"]) >= {"gguf manager q4_k_m", "onnx manager int8"}
    assert summary["sizes_bytes"]["gguf manager q4_k_m"] < summary["sizes_bytes"]["gguf manager f16"] / 2


def test_exported_gguf_bundle_remembers_and_answers(exported: Path, tmp_path: Path) -> None:
    from edge import Agent

    with Agent(bundle=exported / "gguf-q4_k_m", db=tmp_path / "bank.db", user="alice") as agent:
        remembered = agent.remember("My dog is called Biscuit.", wait=True)
        turn = remembered.turns[0]
        assert turn.raw.strip().startswith("{") and turn.completion_tokens > 0  # the exported manager answered
        fact = agent.bank.add("Alice's dog is called Biscuit.")
        answer = agent.ask("What is the name of Alice's dog?")
    assert_grounded_answer(answer, fact.id)


def assert_grounded_answer(answer, fact_id: str, *, constrained: bool = True) -> None:
    """The exported bundle's embedder found the fact, and its answer model answered from what it was shown.

    The parser turns any reply into some answer (at least "unknown"), so a non-empty answer proves nothing;
    under constrained decoding the answer must be a span of a shown memory or "unknown".
    """
    assert fact_id in [m.id for m in answer.retrieved], "the fact must be among the memories shown"
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0, "the exported model must have answered"
    if constrained:
        assert answer.error is None and answer.supported, answer
        assert answer.answer == "unknown" or answer.answer.lower() in "alice's dog is called biscuit.", answer.answer


def test_exported_onnx_bundle_remembers_and_answers(exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime_genai")
    from edge import Agent

    with Agent(bundle=exported / "onnx-int8", db=tmp_path / "bank.db", user="alice") as agent:
        turn = agent.remember("My dog is called Biscuit.", wait=True).turns[0]
        assert turn.raw.strip().startswith("{") and turn.completion_tokens > 0
        fact = agent.bank.add("Alice's dog is called Biscuit.")
        answer = agent.ask("What is the name of Alice's dog?")
        constrained = bool(getattr(agent.answer_backend, "constrained", False))
    assert_grounded_answer(answer, fact.id, constrained=constrained)


# ----------------------------------------------------------------------------- fast checks


def test_base_from_gguf_has_a_gpt2_tokenizer_matching_llama_cpp(base_dir: Path) -> None:
    from transformers import AutoTokenizer

    from edge.export.hf_base import compare_with_llama_cpp
    from edge.models import bundled_gguf_path

    config = json.loads((base_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer"
    assert not (base_dir / "tokenizer.model").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    assert compare_with_llama_cpp(tokenizer, bundled_gguf_path()) == []


def test_a_base_folder_saved_from_a_gguf_load_is_used_through_a_repaired_copy(tmp_path: Path) -> None:
    import shutil

    from edge.export.hf_base import prepare_base
    from edge.models import bundled_gguf_path

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    shutil.copyfile(bundled_gguf_path(), folder / "tokenizer.model")  # what transformers saves for a GGUF base
    before = sorted(p.name for p in folder.iterdir())

    base = prepare_base(folder)

    assert base.path != folder and sorted(p.name for p in folder.iterdir()) == before
    assert not (base.path / "tokenizer.model").exists()
    assert (base.path / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((base.path / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"
    assert prepare_base(folder).path == base.path  # cached


def test_a_missed_gate_fails_the_export_with_the_table() -> None:
    from edge.export.parity import ParityError, ParityReport, ParityRow

    report = ParityReport([
        ParityRow("manager", "gguf f16", "greedy vs torch", 1.0, gate=">= 0.90", passed=True),
        ParityRow("manager", "gguf q4_k_m", "task score", 0.40, reference=0.70, gate=">= ref - 0.15", passed=False),
    ])
    assert "FAIL" in report.table() and "0.700" in report.table()
    with pytest.raises(ParityError, match="gguf q4_k_m task score"):
        report.raise_on_failure()


def test_greedy_agreement_forgives_only_a_divergence_where_torch_was_torn() -> None:
    from edge.export.parity import NEAR_TIE_LOGITS, ParityReference, tie_aware_agreement

    ref = ParityReference(tokens=[5, 6, 7, 8, -1], generated=[5, 6, 7, 8, -1],
                     margins=[3.0, NEAR_TIE_LOGITS / 2, 4.0, 4.0, 4.0])
    assert tie_aware_agreement(ref, [5, 6, 7, 8, -1]) == (1.0, False)
    assert tie_aware_agreement(ref, [5, 9, 9, 9, -1]) == (1.0, True)  # flipped at the near-tie
    value, forgiven = tie_aware_agreement(ref, [5, 6, 9, 9, -1])  # flipped where torch was sure
    assert value == pytest.approx(2 / 5) and not forgiven
    shifted = ParityReference(tokens=[5, 6, 7], generated=[5, 4, 7], margins=[3.0, 0.1, 0.1])
    assert tie_aware_agreement(shifted, [5, 6, 9]) == (pytest.approx(2 / 3), False)  # ids out of step: no excuse


def test_dev_set_scores_manager_and_answer_replies() -> None:
    from edge.export.devset import dev_items, score

    items = dev_items()
    assert [i.role for i in items].count("manager") == [i.role for i in items].count("answer") == 8
    manager, answer = items[0], items[8]
    assert score(manager, '{"ops": [{"op": "ADD", "tier": "semantic", "text": "Alice adopted Biscuit."}]}') == 1.0
    assert score(manager, '{"ops": [{"op": "NOOP"}]}') == 0.5
    assert score(manager, "nonsense") == 0.0
    assert score(answer, '{"relevant": ["0"], "answer": "Biscuit"}') == 1.0
    assert score(answer, '{"relevant": [], "answer": "unknown"}') == 0.0


def test_options_refuse_unknown_formats_and_layouts(tmp_path: Path) -> None:
    from edge.export.pipeline import ExportOptions

    with pytest.raises(EdgeError, match="q3_x"):
        ExportOptions(out=tmp_path, gguf=("q3_x",))
    with pytest.raises(EdgeError, match="Nothing to export"):
        ExportOptions(out=tmp_path, gguf=(), onnx=())
    with pytest.raises(EdgeError, match="layout"):
        ExportOptions(out=tmp_path, layout="mixed")


def test_adapter_trained_with_other_prompts_is_refused(tmp_path: Path) -> None:
    from edge.export.merge import check_prompt_version, read_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "edge_adapter.json").write_text(json.dumps({"prompt_version": "edge-prompts/0"}))
    with pytest.raises(EdgeError, match="edge-prompts/0"):
        check_prompt_version(read_adapter(tmp_path, "manager"))


def test_adapter_trained_for_the_other_role_is_refused(tmp_path: Path) -> None:
    from edge.export.merge import read_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "edge-adapter.json").write_text(json.dumps({"agent": "answer", "prompt_version": PROMPT_VERSION}))
    with pytest.raises(EdgeError, match="--answer-adapter"):
        read_adapter(tmp_path, "manager")


def test_a_manager_trained_to_consolidate_is_exported_to_serve_extend(tmp_path: Path) -> None:
    """What is trained is what is served: the Manager's `[data] consolidation` becomes the bundles' setting."""
    from edge.export.merge import read_adapter
    from edge.export.pipeline import ExportOptions, served_as_trained

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    record = {"agent": "manager", "prompt_version": PROMPT_VERSION, "config": {"data": {"consolidation": "extend"}}}
    (tmp_path / "edge-adapter.json").write_text(json.dumps(record))
    adapter = read_adapter(tmp_path, "manager")
    assert adapter.consolidation == "extend"
    options = ExportOptions(out=tmp_path / "dist", adapters={"manager": tmp_path})
    assert options.generation.consolidation == "none"
    said: list[str] = []
    served = served_as_trained(options, {"manager": adapter}, said.append)
    assert served.generation.consolidation == "extend" and served.generation.manager_ops[-1] == "EXTEND"
    assert served.generation.answer_order == options.generation.answer_order, "the other settings are kept"
    assert said and "consolidation" in said[0]
    assert served_as_trained(options, {}, said.append) is options, "no Manager adapter: nothing to change"


def test_missing_onnx_builder_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.export.pipeline import ExportOptions, check_tools

    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    with pytest.raises(MissingExtraError, match="onnx-genai"):
        check_tools(ExportOptions(out=tmp_path, gguf=(), onnx=("int4",)))


def test_export_help_lists_formats_and_layouts() -> None:
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    for text in ("--adapter", "--answer-adapter", "--gguf", "q4_k_m", "--onnx", "int4", "--layout", "adapters"):
        assert text in result.output


# ----------------------------------------------------------------------------- slow variations


@pytest.mark.slow
def test_adapters_layout_with_two_adapters_passes_the_full_gates(base_dir: Path, manager_adapter: Path,
                                                               tmp_path: Path) -> None:
    """One Q8_0 base + two GGUF LoRAs; every dev item; then a remember/ask round.

    The adapters are random, so the task score on eight items is noise: one run lost 0.29 at Q8_0 while
    every greedy-token gate held. The margin here is 0.35; the greedy gates carry the conversion check.
    """
    from edge import Agent
    from edge.export.pipeline import ExportOptions, export

    answer_adapter = make_fresh_adapter(base_dir, tmp_path / "answer", seed=1, role="answer")
    result = export(ExportOptions(out=tmp_path / "dist", adapters={"manager": manager_adapter,
                                                                   "answer": answer_adapter},
                                  gguf=("q8_0",), layout="adapters", margin=0.35), progress=False)
    assert result.report is not None and not result.report.failures, result.report.table()
    bundle = Bundle.load(result.bundles[0])
    assert bundle.verify() == []
    assert set(bundle.manifest["adapters"]) == {"manager", "answer"}
    assert bundle.role("manager")[1].name == "manager.gguf"
    with Agent(bundle=bundle, db=tmp_path / "bank.db", user="alice") as agent:
        agent.remember("I moved to Lisbon last spring.", wait=True)
        result = agent.ask("Where does Alice live?")
    # The exported bundle's model was asked, over the stored turn, and answered under the schema it serves.
    assert result.error is None and result.completion_tokens > 0
    assert any("Lisbon" in m.text for m in result.retrieved)
    assert result.offered is None or result.answer in result.offered


@pytest.mark.slow
def test_int4_and_q4_k_m_with_full_dev_set(manager_adapter: Path, tmp_path: Path) -> None:
    """The default gates on the smallest formats; the table is printed for the record."""
    from edge.export.parity import ParityError
    from edge.export.pipeline import ExportOptions, export

    try:
        result = export(ExportOptions(out=tmp_path / "dist", adapters={"manager": manager_adapter},
                                      gguf=("q4_k_m",), onnx=("int4",)), progress=False)
    except ParityError:
        summary = json.loads((tmp_path / "dist" / "export.json").read_text())
        failed = [r for r in summary["parity"]["rows"] if r["gate"] and not r["passed"]]
        # Only task-score margins may be missed by a random adapter on a 135M model; never the f16/fp32 gates.
        assert all(r["check"] == "task score" for r in failed), failed
        return
    assert all(Bundle.load(b).verify() == [] for b in result.bundles)

