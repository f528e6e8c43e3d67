"""Your own model: GGUF headers, size-aware settings, the config file, `edge bundle create`, `edge config`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.bundle import Bundle
from edge.cli import cli
from edge.config import config_path, load_config, set_value, unset_value
from edge.errors import BackendError, InvalidInputError
from edge.generation import GenerationConfig
from edge.gguf_info import read_gguf_info, write_gguf_header
from edge.model_source import ModelChoice, create_bundle, generation_for, gguf_bundle, server_bundle, with_generation
from edge.models import bundled_gguf_path

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def fake_gguf(path: Path, *, billions: float, template: str | None = TEMPLATE, context: int = 32768) -> Path:
    """A GGUF header whose tensors add up to `billions` parameters (no weights: enough for the header reader)."""
    metadata = {"general.architecture": "qwen2", "general.name": "Fake", "qwen2.context_length": context}
    if template:
        metadata["tokenizer.chat_template"] = template
    rows = int(billions * 1e9) // 1000
    write_gguf_header(path, metadata, {"token_embd.weight": (1000, rows)})
    return path


@pytest.fixture
def gguf_copy(tmp_path: Path) -> Path:
    """The bundled model under another name and folder, as a user's own GGUF would be."""
    target = tmp_path / "models" / "my-model.gguf"
    target.parent.mkdir()
    shutil.copy(bundled_gguf_path(), target)
    return target


def test_header_of_the_bundled_model():
    info = read_gguf_info(bundled_gguf_path())
    assert info.parameters == 134_515_008  # what llama.cpp reports for SmolLM2-135M
    assert info.context_length == 8192
    assert info.quantization == "Q4_1"
    assert "<|im_start|>" in info.require_chat_template()


def test_a_gguf_without_chat_template_is_refused_naming_the_key(tmp_path):
    path = fake_gguf(tmp_path / "base.gguf", billions=0.5, template=None)
    with pytest.raises(BackendError, match="tokenizer.chat_template") as err:
        gguf_bundle(path)
    assert "instruct" in err.value.hint
    out = CliRunner().invoke(cli, ["ask", "Where?", "--model", str(path)])
    assert out.exit_code != 0 and "tokenizer.chat_template" in str(out.exception)


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(BackendError, match="Not a GGUF"):
        read_gguf_info(path)
    with pytest.raises(BackendError, match="not found"):
        read_gguf_info(tmp_path / "missing.gguf")


@pytest.mark.parametrize("billions, text_mode, answer_k, n_ctx", [
    (0.135, "extractive", 20, 4096), (0.5, "extractive", 20, 4096), (1.5, "free", 20, 8192), (8.0, "free", 30, 8192),
])
def test_settings_follow_the_models_size(tmp_path, billions, text_mode, answer_k, n_ctx):
    generation = generation_for(read_gguf_info(fake_gguf(tmp_path / "m.gguf", billions=billions)))
    assert (generation["text_mode"], generation["answer_k"], generation["n_ctx"]) == (text_mode, answer_k, n_ctx)


def test_a_short_trained_context_is_kept(tmp_path):
    info = read_gguf_info(fake_gguf(tmp_path / "m.gguf", billions=1.5, context=2048))
    assert generation_for(info)["n_ctx"] == 2048


def test_gguf_bundle_serves_every_role_from_the_file_with_the_default_embedder(gguf_copy, minilm):
    bundle = gguf_bundle(gguf_copy, generation={"answer_k": 7})
    assert bundle.backend == "llama.cpp"
    for role in ("manager", "answer", "chat"):
        assert bundle.role(role) == (gguf_copy, None)
    assert bundle.embedder_name == minilm.name and bundle.embedder_dir.is_dir()
    assert (bundle.answer_k, bundle.text_mode, bundle.n_ctx) == (7, "extractive", 4096)
    bundle.check_compatible()


def test_options_win_over_the_config_and_the_config_over_the_default(tmp_path, gguf_copy):
    config = {"model.server": "http://localhost:11434", "model.name": "qwen2.5:1.5b", "generation.answer_k": 9}
    from_config = ModelChoice.from_options(config=config)
    assert (from_config.server, from_config.name, from_config.origin) == ("http://localhost:11434", "qwen2.5:1.5b",
                                                                           "config")
    assert from_config.generation == {"answer_k": 9}
    chosen = ModelChoice.from_options(model=str(gguf_copy), answer_k=3, config=config)
    assert (chosen.gguf, chosen.server, chosen.origin, chosen.generation) == (gguf_copy, None, "options",
                                                                               {"answer_k": 3})
    assert ModelChoice.from_options(config={}).is_default


def test_wrong_model_options_say_what_to_give(tmp_path):
    with pytest.raises(InvalidInputError, match="not a .gguf file") as err:
        ModelChoice.from_options(model="qwen2.5:1.5b", config={})
    assert "--server" in err.value.hint
    with pytest.raises(InvalidInputError, match="Which model"):
        ModelChoice.from_options(server="http://localhost:8080", config={})
    with pytest.raises(InvalidInputError, match="give one"):
        ModelChoice.from_options(bundle=tmp_path, model="x.gguf", config={})


def test_config_set_show_unset(edge_home):
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "model.server", "http://localhost:8080"]).exit_code == 0
    assert runner.invoke(cli, ["config", "set", "model.name", "smollm2"]).exit_code == 0
    assert runner.invoke(cli, ["config", "set", "generation.answer_k", "15"]).exit_code == 0
    shown = json.loads(runner.invoke(cli, ["config", "show", "--json"]).stdout)
    assert shown["settings"] == {"model.server": "http://localhost:8080", "model.name": "smollm2",
                                 "generation.answer_k": 15}
    assert Path(shown["path"]) == edge_home / "config.toml"
    text = config_path().read_text()
    assert "[model]" in text and "[generation]" in text
    # Choosing another source replaces the server (and its model name); generation settings stay.
    assert runner.invoke(cli, ["config", "set", "model.gguf", "/models/x.gguf"]).exit_code == 0
    assert load_config() == {"model.gguf": "/models/x.gguf", "generation.answer_k": 15}
    assert runner.invoke(cli, ["config", "unset", "generation.answer_k"]).exit_code == 0
    assert load_config() == {"model.gguf": "/models/x.gguf"}


def test_config_sets_any_decoding_setting_over_the_bundles(edge_home, default_bundle):
    """Every `generation` setting a bundle has can be set by the user, and reaches the bundle served."""
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "generation.unknown_margin", "0"]).exit_code == 0
    assert runner.invoke(cli, ["config", "set", "generation.answer_retrieval", "hybrid"]).exit_code == 0
    assert load_config() == {"generation.unknown_margin": 0.0, "generation.answer_retrieval": "hybrid"}
    served = with_generation(default_bundle, ModelChoice.from_options(config=load_config()).generation).generation
    assert (default_bundle.generation.unknown_margin, default_bundle.generation.answer_retrieval) == (1.5, "replies-3")
    assert (served.unknown_margin, served.answer_retrieval, served.answer_k) == (0.0, "hybrid",
                                                                                 default_bundle.generation.answer_k)
    shown = json.loads(runner.invoke(cli, ["bundle", "show", str(default_bundle.root), "--json"]).stdout)
    assert shown["generation"]["unknown_margin"] == 1.5 and shown["generation_in_force"]["unknown_margin"] == 0.0
    assert all("sha256" in entry for entry in shown["files"].values()), "--json prints the manifest as written"
    negative = runner.invoke(cli, ["config", "set", "generation.unknown_margin", "-1"])
    assert negative.exit_code != 0 and "unknown_margin must be a number >= 0" in str(negative.exception)
    unknown = runner.invoke(cli, ["config", "set", "generation.answer_retrieval", "speakers"])
    assert unknown.exit_code != 0 and "replies-3" in str(unknown.exception), "the refusal lists what is accepted"
    assert load_config()["generation.unknown_margin"] == 0.0, "a refused value leaves the file as it was"
    known = json.loads(runner.invoke(cli, ["config", "show", "--all", "--json"]).stdout)["known"]
    assert {f"generation.{name}" for name in GenerationConfig().to_manifest()} <= set(known), "every setting is listed"


def test_a_config_file_edge_refuses_can_be_repaired_with_edge(edge_home):
    """A key left by another edge version, or a bad value, is named with its file and removed or replaced."""
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text('[generation]\nanswer_k = 15.0\nold_setting = 3\n[model]\nname = "x"\n')
    with pytest.raises(InvalidInputError, match="old_setting") as err:
        load_config()
    assert str(config_path()) in err.value.message and "edge config unset generation.old_setting" in err.value.hint
    left, was_set = unset_value("generation.old_setting")
    assert was_set and left == {"generation.answer_k": 15, "model.name": "x"}
    assert load_config() == {"generation.answer_k": 15, "model.name": "x"}, "TOML's 15.0 is read as 15"
    assert unset_value("generation.answer_order") == (left, False), "a known setting that is not set: nothing changes"
    with pytest.raises(InvalidInputError, match="Unknown setting"):
        unset_value("generation.old_setting")
    config_path().write_text('[generation]\nanswer_k = "many"\n')
    with pytest.raises(InvalidInputError, match="whole number") as err:
        load_config()
    assert str(config_path()) in err.value.message
    assert set_value("generation.answer_k", "5") == {"generation.answer_k": 5}
    assert load_config() == {"generation.answer_k": 5}


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(InvalidInputError, match="Unknown setting"):
        set_value("model.colour", "blue")
    with pytest.raises(InvalidInputError, match="generation.text_mode"):
        set_value("generation.text_mode", "poetry")
    with pytest.raises(InvalidInputError, match="whole number"):
        set_value("generation.answer_k", "2.5")
    with pytest.raises(InvalidInputError, match="environment variable"):
        set_value("model.api_key_env", "sk-123 secret")
    config_path().write_text("[model\n")
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        load_config()


def test_bundle_create_for_a_gguf_file_with_adapters_verifies(tmp_path, gguf_copy, minilm):
    # The adapters are only copied and checksummed here; loading real LoRA files is tested in test_export.
    adapter = fake_gguf(tmp_path / "manager-lora.gguf", billions=0.001)
    out = tmp_path / "bundle"
    made = create_bundle(out, gguf=gguf_copy, manager_adapter=adapter, log=lambda _: None)
    assert made.role("manager") == (out / "model.gguf", out / "adapters" / "manager.gguf")
    assert made.role("answer") == (out / "model.gguf", None)
    assert made.manifest["generation"]["text_mode"] == "extractive"
    assert Bundle.load(out).verify() == []
    with pytest.raises(Exception, match="already exists"):
        create_bundle(out, gguf=gguf_copy, log=lambda _: None)


def test_bundle_create_for_a_server_never_stores_the_key(tmp_path, minilm, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    out = tmp_path / "served"
    result = CliRunner().invoke(cli, ["bundle", "create", "--server", "http://127.0.0.1:9/v1", "--model", "qwen",
                                      "--api-key-env", "MY_KEY", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    made = Bundle.load(out)
    assert made.backend == "http" and made.verify() == []
    assert made.manifest["server"]["api_key_env"] == "MY_KEY"
    assert not any("sk-secret-value" in p.read_text(errors="replace") for p in out.rglob("*.json"))
    backend = made.load_backend("answer")
    assert backend.headers["authorization"] == "Bearer sk-secret-value"  # read from the environment
    backend.close()
    verified = CliRunner().invoke(cli, ["bundle", "verify", str(out), "--json"])
    assert verified.exit_code == 1 and "does not answer" in verified.stdout  # nothing listens on port 9


def test_server_bundle_in_memory(minilm):
    bundle = server_bundle("http://localhost:11434", "qwen2.5:1.5b", structured_output="ollama")
    assert bundle.backend == "http" and bundle.text_mode == "free" and bundle.answer_k == 20
    backend = bundle.load_backend("manager")
    assert backend.schema_format == "ollama" and backend.model == "qwen2.5:1.5b"
    backend.close()


def test_edge_chat_saves_the_model_for_next_time(monkeypatch, gguf_copy):
    import edge.tui.app

    opened = []
    monkeypatch.setattr(edge.tui.app, "run", opened.append)  # the app itself is driven in test_tui / test_byom
    result = CliRunner().invoke(cli, ["chat", "--model", str(gguf_copy), "--answer-k", "5"])
    assert result.exit_code == 0, result.output
    assert "from now on" in result.output
    assert load_config() == {"model.gguf": str(gguf_copy)}
    assert opened[0].source.gguf == gguf_copy and opened[0].source.generation == {"answer_k": 5}
    # Next time, no option: the saved model.
    CliRunner().invoke(cli, ["chat"])
    assert opened[1].source.gguf == gguf_copy and opened[1].source.origin == "config"
    assert load_config() == {"model.gguf": str(gguf_copy)}


def test_every_agent_command_takes_a_model_or_a_server():
    for command in (["chat"], ["remember"], ["ask"], ["run"], ["eval", "locomo"]):
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0
        for option in ("--bundle", "--model", "--server", "--structured-output", "--api-key-env"):
            assert option in result.output, (command, option)


@pytest.mark.parametrize("offset, what", [(8, "tensor count"), (16, "key/value count"), (24, "first key's length")])
def test_a_damaged_length_field_is_a_clean_refusal_not_a_memory_error(tmp_path, offset, what):
    """A length or count field overwritten with 2**62 made the reader allocate or seek exabytes."""
    import struct

    data = bytearray(bundled_gguf_path().read_bytes())
    data[offset:offset + 8] = struct.pack("<Q", 2 ** 62)
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="cannot be read .*more than the .* bytes left") as err:
        read_gguf_info(damaged)
    assert "download or export it again" in err.value.hint, what
    bank = tmp_path / "b.db"
    assert CliRunner().invoke(cli, ["memory", "add", "Ana lives in Ghent", "--db", str(bank)]).exit_code == 0
    out = CliRunner().invoke(cli, ["ask", "Where?", "--model", str(damaged), "--db", str(bank)])
    assert out.exit_code != 0 and isinstance(out.exception, (BackendError, SystemExit)), repr(out.exception)
    assert "cannot be read" in out.output + str(out.exception)
