"""Training configs: the shipped TOML files load, and mistakes are refused with a way out."""
from __future__ import annotations

import pytest

from edge.train.config import CONFIG_DIR, ConfigError, TrainConfig, config_from_dict, describe, load_config

SHIPPED = ["smollm2-135m-manager", "smollm2-135m-answer", "smollm2-135m-manager-outcome", "qwen2.5-3b-manager",
           "qwen2.5-3b-answer"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    config = load_config(name)
    assert config.agent == name.removesuffix("-outcome").rsplit("-", 1)[-1]
    assert (CONFIG_DIR / f"{name}.toml").is_file()
    if name.startswith("qwen"):
        assert (config.dtype, config.device, config.temperature) == ("bfloat16", "cuda", 1.0)
        assert config.data.source == "both" and config.reward.metric == "em"  # synthetic gold + LoCoMo
    assert config.sft_steps > 0 and config.sft_loss_tokens == "choices"
    if name.endswith("-outcome"):  # the shipped Answer Agent reads the log and the facts, as the bundle serves them
        r = config.reward
        assert (r.context, r.reader, r.reader_model, r.reader_adapter) == ("served", "agent", "bundled", "bundled")
        assert config.data.embedder == "minilm" and r.op_match_weight == 0.0 and config.steps > 0
    elif not name.startswith("qwen"):
        assert (config.base, config.dtype, config.device) == ("bundled", "float32", "cpu")


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="stepz"):
        config_from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match=r"\[lora\]"):
        config_from_dict({"lora": {"rank": 3}})


def test_bad_combinations_say_what_to_set():
    with pytest.raises(ConfigError, match="num_generations"):
        TrainConfig(num_generations=1)
    with pytest.raises(ConfigError, match="temperature"):
        TrainConfig(temperature=0)
    with pytest.raises(ConfigError, match="candidates"):
        config_from_dict({"data": {"source": "locomo", "locomo_path": "x.json"}, "reward": {"reader": "candidates"}})
    with pytest.raises(ConfigError, match="locomo_path"):
        config_from_dict({"data": {"source": "locomo"}})
    with pytest.raises(ConfigError, match="embedder"):
        config_from_dict({"data": {"embedder": "hash"}, "reward": {"reader": "agent", "context": "served"}})
    with pytest.raises(ConfigError, match="float32"):
        TrainConfig(dtype="bfloat16", device="cpu")


def test_overrides_replace_top_level_and_section_fields(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('agent = "answer"\nsteps = 7\n[data]\nsource = "synthetic"\n')
    config = load_config(path, steps=2, seed=None, **{"data.train_conversations": 3})
    assert (config.agent, config.steps, config.data.train_conversations) == ("answer", 2, 3)
    with pytest.raises(ConfigError):
        load_config("no-such-config")


def test_every_setting_has_help():
    rows = describe()
    assert rows and all(help_text for _, help_text, _ in rows)
    assert "lora.top_layers" in {name for name, _, _ in rows}


def test_the_manager_reward_terms_follow_the_config():
    from edge.embedder import HashEmbedder
    from edge.train.recipe import build_rewards
    from edge.train.rewards import CandidateReader

    outcome_only = load_config("smollm2-135m-manager", **{"reward.op_match_weight": 0.0})
    funcs, weights = build_rewards(outcome_only, HashEmbedder(), CandidateReader())
    assert [getattr(f, "__name__", "") for f in funcs] == [
        "manager_outcome_reward", "manager_format_reward", "manager_compression_reward"]
    shaped = load_config("smollm2-135m-manager", **{"reward.op_match_weight": 0.5})
    funcs, weights = build_rewards(shaped, HashEmbedder(), CandidateReader())
    assert funcs[-1].__name__ == "manager_op_match_reward" and weights[-1] == 0.5
    with pytest.raises(ConfigError, match="gold"):
        config_from_dict({"data": {"source": "locomo", "locomo_path": "x"}, "reward": {"op_match_weight": 1.0}})
    with pytest.raises(ConfigError, match="balance_ops"):
        config_from_dict({"agent": "answer", "data": {"balance_ops": True}})
    with pytest.raises(ConfigError, match="time_questions"):
        config_from_dict({"agent": "manager", "data": {"time_questions": 2}})
    with pytest.raises(ConfigError, match="time_questions"):
        config_from_dict({"agent": "answer", "data": {"time_questions": -1}})
    with pytest.raises(ConfigError, match="at most"):
        config_from_dict({"agent": "answer", "data": {"time_questions": 1000}})
    with pytest.raises(ConfigError, match="time_questions"):
        config_from_dict({"agent": "answer", "data": {"source": "locomo", "locomo_path": "x", "time_questions": 2}})


def test_a_grpo_table_reaches_trls_config_as_written(tmp_path):
    """[grpo] is passed to TRL's GRPOConfig over edge's values; a key GRPOConfig lacks, or one edge owns, is refused
    when the config loads."""
    from edge.train.trainer import grpo_trainer

    path = tmp_path / "mine.toml"
    path.write_text('agent = "answer"\nsteps = 3\n[data]\nsource = "synthetic"\n[grpo]\ntop_p = 0.9\n'
                    'num_iterations = 2\nepsilon = 0.3\n')
    config = load_config(path, **{"grpo.mask_truncated_completions": True})
    assert config.grpo == {"top_p": 0.9, "num_iterations": 2, "epsilon": 0.3, "mask_truncated_completions": True}
    with pytest.raises(ConfigError, match="top_pp"):
        config_from_dict({"grpo": {"top_pp": 0.9}})
    with pytest.raises(ConfigError, match="max_steps"):
        config_from_dict({"grpo": {"max_steps": 9}})

    captured = {}

    class Stop(Exception):
        pass

    import trl

    real = trl.GRPOConfig

    def spy(**kwargs):
        captured.update(kwargs)
        raise Stop  # the arguments are what is checked; no model is built

    trl.GRPOConfig = spy
    try:
        with pytest.raises(Stop):
            grpo_trainer(config, None, None, None, [], [1.0], None, checkpoints=tmp_path / "c", steps=3, device="cpu")
    finally:
        trl.GRPOConfig = real
    assert captured["top_p"] == 0.9 and captured["num_iterations"] == 2 and captured["epsilon"] == 0.3
    assert captured["max_steps"] == 3 and captured["output_dir"] == str(tmp_path / "c")


def test_the_private_trl_methods_the_constrained_trainer_overrides_keep_their_signatures():
    """The constrained rollouts override three private methods of TRL's GRPOTrainer (TRL documents no hook for
    per-row grammars with transformers generation); a TRL that renames them or changes their arguments fails
    here, not in the middle of a training run."""
    import inspect

    from trl import GRPOTrainer

    expected = {
        "_generate_and_score_completions": ["self", "inputs"],
        "_generate": ["self", "prompts"],
        "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields", "num_generations",
                                  "has_tool_images"],
    }
    for name, parameters in expected.items():
        assert hasattr(GRPOTrainer, name), name
        assert list(inspect.signature(getattr(GRPOTrainer, name)).parameters) == parameters, name
