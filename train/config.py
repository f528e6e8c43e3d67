"""Training configuration: dataclasses whose fields say what they do, loaded from TOML.

    agent = "manager"
    base = "bundled"
    steps = 120
    [lora]
    r = 16
    [data]
    source = "synthetic"
    [reward]
    reader = "candidates"

Top-level keys fill `TrainConfig`; the `[lora]`, `[data]` and `[reward]`
tables fill `LoraSettings`, `DataSettings` and `RewardSettings`. Unknown
keys are errors (a typo must not silently train with a default). Values not
set follow TRL's `GRPOConfig` defaults, except where a field says otherwise.
The shipped configs live in `edge/train/configs/` (`config_path(name)`).
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from edge.config import tomllib  # the standard library's, or `tomli` on Python 3.10
from edge.errors import EdgeError
from edge.generation import ANSWER_ORDERS, CONSOLIDATIONS
from edge.prompts import ANSWER_TOP_K, TEXT_MODES

AGENTS = ("manager", "answer")
SOURCES = ("synthetic", "locomo", "both", "mix")
MIX_SOURCES = ("synthetic", "locomo", "friendsqa")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(EdgeError):
    """A training configuration that cannot be used as written."""


def _help(text: str, default: Any = None, **kw: Any) -> Any:
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class LoraSettings:
    r: int = _help("LoRA rank.", 16)
    alpha: int = _help("LoRA alpha (scale = alpha / r).", 32)
    dropout: float = _help("LoRA dropout.", 0.0)
    target_modules: list[str] = _help(
        "Linear layers that get adapters.",
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    top_layers: int = _help(
        "Adapt only the last N transformer layers (0: all). The backward pass then stops at the first adapted "
        "layer, which on a CPU saves most of its cost.", 0)

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ConfigError(f"[lora] r and alpha must be positive (got r={self.r}, alpha={self.alpha}).")
        if self.top_layers < 0:
            raise ConfigError("[lora] top_layers must be 0 (all layers) or a positive number of layers.")


@dataclass
class DataSettings:
    source: str = _help("Where episodes come from: 'synthetic' (seeded generator), 'locomo', 'both' (the "
                        "synthetic episodes and LoCoMo's training questions), or 'mix' (Answer Agent: synthetic, "
                        "LoCoMo and FriendsQA episodes in the shares of `weights`).", "synthetic")
    friendsqa_path: str | None = _help(
        "FriendsQA folder (friendsqa_dev.json and friendsqa_tst.json) for source = 'mix': scenes of the dev file, "
        "four of every five trained on, every fifth dev; the test file is never trained on.", None)
    weights: dict[str, float] = _help(
        "source = 'mix': each source's share of the training rows, e.g. {synthetic = 1, locomo = 1, friendsqa = 2} "
        "(a source left out or 0 is not used; a small source is repeated to reach its share). Empty: every "
        "source at its natural size. Other sources ignore it.", default_factory=dict)
    unanswerable: float = _help(
        "Answer episodes whose gold is \"unknown\", per answerable one (0.2: one for every five): FriendsQA "
        "questions of another scene over this one's log, \"When did ...?\" about events never told; any value "
        "above 0 also adds LoCoMo's adversarial (category 5) questions.", 0.0)
    locomo_path: str | None = _help("LoCoMo JSON file (locomo10.json layout) when source = 'locomo'.", None)
    dev_locomo_path: str | None = _help("LoCoMo file for dev evaluation (default: the last 20% of the episodes of "
                                        "locomo_path, by turn order).", None)
    train_conversations: int = _help("Synthetic conversations to train on (train seed range).", 200)
    dev_conversations: int = _help("Synthetic conversations for dev evaluation (dev seed range).", 6)
    embedder: str = _help("Embedder of the episode banks: 'minilm' (the runtime default) or 'hash' "
                          "(model-free, fast).", "minilm")
    related_k: int = _help("Memories the Manager is shown per turn (the runtime's related_k).", 8)
    answer_k: int = _help("Memories the Answer Agent is shown per question: the default bundle's "
                          "(edge.prompts.ANSWER_TOP_K; Memory-R1: 60).", ANSWER_TOP_K)
    window: int = _help("LoCoMo Manager episodes: how many previous turns the bank holds.", 50)
    max_dev_episodes: int = _help("Cap on dev episodes evaluated (0: all).", 0)
    text_mode: str = _help(
        "The action space: 'extractive' (memory texts are clauses of the turn, answers spans of what is shown; "
        "the default bundle's) or 'free' (written by the model).", "extractive")
    dev_questions: str = _help(
        "LoCoMo Answer episodes: 'every-fifth' keeps questions whose index is a multiple of 5 for dev and never "
        "trains on them; 'none' trains on all.", "every-fifth")
    time_questions: int = _help(
        "Synthetic Answer episodes: dated events told per conversation (\"I went to a pottery class yesterday.\"), "
        "each asked \"When did ...?\" with its resolved date as gold; 0: none.", 0)
    answer_order: str | None = _help(
        "Answer episodes over a log: the order their reader reads memories in (edge.generation.ANSWER_ORDERS; "
        "'facts-first' shows the facts a question finds before its turns). Unset: the default bundle's. A "
        "bundle serving the adapter must read in the same order.", None)
    locomo_bank: str | None = _help(
        "LoCoMo Answer episodes: a bank `edge eval locomo` built for the conversation of locomo_path (its "
        "episodic log and the Manager's facts, e.g. OUT/bundle/conv-26/bank.db), read as served instead of "
        "a bank of the log alone. A copy is read; the file is left as it is.", None)
    locomo_log_too: bool = _help(
        "With locomo_bank: every LoCoMo question also over its log alone (a bank without a Manager's facts, "
        "as `bundle-log-only` serves it), so the reader learns both layouts.", False)
    synthetic_log: bool = _help(
        "Synthetic Answer episodes: the bank holds the conversation's episodic log beside its gold facts and "
        "the question is answered from what the runtime reader shows (answer_order); off: the gold facts alone, "
        "their top answer_k.", False)
    balance_ops: bool = _help(
        "Synthetic Manager episodes: repeat the turns whose gold operation is rarer (UPDATE, DELETE) until each "
        "operation is right as often as the commonest, served in rounds of one turn per operation (set "
        "prompts_per_step = 4 for one round per step). Dev and test keep their natural mix.", False)
    consolidation: str = _help(
        "Manager: 'extend' offers EXTEND (a clause of the turn joined to a fact its speaker said: a consolidated "
        "fact), as a bundle with generation.consolidation = 'extend' serves it; 'none' (the shipped Manager's) "
        "offers ADD, UPDATE, DELETE and NOOP. `edge export` writes the Manager adapter's setting into the "
        "bundle's generation. With balance_ops, rounds hold five operations: set prompts_per_step = 5.", "none")
    activity_conversations: int = _help(
        "Synthetic Manager episodes: activity conversations added to the training ones (a person takes up one "
        "activity per session: an ADD, then EXTENDs; edge.train.synthetic.activity_conversation), and as many "
        "of the dev seeds as dev_conversations; 0: none.", 0)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"[data] source must be one of {', '.join(SOURCES)}, not {self.source!r}.")
        unknown = sorted(set(self.weights) - set(MIX_SOURCES))
        if unknown or any(not isinstance(v, (int, float)) or v < 0 for v in self.weights.values()):
            raise ConfigError(f"[data] weights are shares >= 0 of {', '.join(MIX_SOURCES)}"
                              + (f"; unknown: {', '.join(unknown)}." if unknown else "."))
        if self.source == "mix" and self.weights and not any(self.weights.values()):
            raise ConfigError("[data] weights leave no source to train on.", hint="give one source a weight > 0")
        if self.unanswerable < 0:
            raise ConfigError(f"[data] unanswerable must be 0 or more, not {self.unanswerable}.")
        if self.source == "locomo" and not self.locomo_path:  # "both" is checked when its episodes are built
            raise ConfigError("[data] source = 'locomo' needs locomo_path.",
                              hint="set locomo_path to a locomo10.json-style file, e.g. conv-26.json")
        if self.text_mode not in TEXT_MODES:
            raise ConfigError(f"[data] text_mode must be one of {', '.join(TEXT_MODES)}, not {self.text_mode!r}.")
        if self.answer_order is not None and self.answer_order not in ANSWER_ORDERS:
            raise ConfigError(f"[data] answer_order must be one of {', '.join(ANSWER_ORDERS)}, not "
                              f"{self.answer_order!r}.")
        for setting in fields(self):  # a TOML string "no" would read as true
            if isinstance(setting.default, bool) and not isinstance(getattr(self, setting.name), bool):
                raise ConfigError(f"[data] {setting.name} is true or false, not {getattr(self, setting.name)!r}.")
        if self.locomo_bank is not None:
            self.locomo_bank = _served_bank_path(self.locomo_bank)
            if self.dev_locomo_path:
                raise ConfigError("[data] locomo_bank holds locomo_path's conversation only; a dev_locomo_path "
                                  "conversation has no served bank.", hint="leave dev_locomo_path out: every fifth "
                                  "question of locomo_path is held out for dev (dev_questions = 'every-fifth')")
        elif self.locomo_log_too:
            raise ConfigError("[data] locomo_log_too asks for LoCoMo's questions over a served bank besides the log "
                              "alone, but no locomo_bank is set.", hint=_SERVED_BANK_HINT)
        if self.dev_questions not in ("every-fifth", "none"):
            raise ConfigError(f"[data] dev_questions must be 'every-fifth' or 'none', not {self.dev_questions!r}.")
        if self.time_questions < 0:
            raise ConfigError(f"[data] time_questions must be 0 or more, not {self.time_questions}.")
        if self.consolidation not in CONSOLIDATIONS:
            raise ConfigError(f"[data] consolidation must be one of {', '.join(CONSOLIDATIONS)}, "
                              f"not {self.consolidation!r}.")
        if self.activity_conversations < 0:
            raise ConfigError(f"[data] activity_conversations must be 0 or more, not {self.activity_conversations}.")
        if self.embedder not in ("minilm", "hash"):
            raise ConfigError(f"[data] embedder must be 'minilm' or 'hash', not {self.embedder!r}.")


_SERVED_BANK_HINT = "build it with `edge eval locomo CONV.json --system bundle --out OUT` (OUT/bundle/conv-26/bank.db)"


def _served_bank_path(value: Any) -> str:
    """`locomo_bank` checked before any model loads: a path (~ expanded) to an SQLite file holding edge's memories."""
    import sqlite3

    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"[data] locomo_bank is the path of a bank file, not {value!r}.", hint=_SERVED_BANK_HINT)
    path = Path(value).expanduser()
    if path.is_dir():
        raise ConfigError(f"[data] locomo_bank {path} is a folder, not a bank file.", hint=_SERVED_BANK_HINT)
    if not path.is_file():
        raise ConfigError(f"[data] locomo_bank {path}: no such file.", hint=_SERVED_BANK_HINT)
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            conn.execute("SELECT 1 FROM memories LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:  # not SQLite, or SQLite without edge's tables
        raise ConfigError(f"[data] locomo_bank {path} is not an edge memory bank ({exc}).",
                          hint=_SERVED_BANK_HINT) from exc
    return str(path)


@dataclass
class RewardSettings:
    metric: str = _help("Answer score: 'em' (Memory-R1's exact match) or 'f1' (token F1).", "em")
    format_weight: float = _help("Weight of the format term (partial credit for malformed replies).", 0.25)
    outcome_weight: float = _help("Manager: weight of the frozen reader's score after applying the reply.", 1.0)
    compression_weight: float = _help("Manager: weight of minus the number of memories added.", 0.2)
    op_match_weight: float = _help(
        "Manager, synthetic data only: weight of a term that is 1 when the reply's operations match the gold ones, "
        "0.5 for the right kinds on the wrong memories (supervision through the reward; 0: outcome only, as "
        "Memory-R1).", 0.0)
    reader: str = _help(
        "Manager: the frozen reader that answers from the edited bank: 'agent' (the Answer Agent on a model, "
        "Memory-R1) or 'candidates' (model-free, synthetic questions only).", "agent")
    reader_model: str = _help("reader = 'agent': 'bundled' or a GGUF path (run by llama.cpp), 'base' (a frozen "
                              "copy of the run's base model, run by transformers), or a model served at reader_url.",
                              "bundled")
    reader_url: str | None = _help("reader = 'agent': an OpenAI-compatible server to ask instead of llama.cpp.", None)
    reader_adapter: str | None = _help("reader = 'agent': a GGUF LoRA for the frozen Answer Agent; 'bundled': the "
                                       "default bundle's shipped Answer adapter.", None)
    reader_k: int = _help("Memories the frozen reader retrieves per question.", ANSWER_TOP_K)
    reader_n_ctx: int = _help("reader = 'agent' on llama.cpp: context window.", 4096)
    context: str = _help(
        "Manager: what the frozen reader reads after the reply: 'facts' (the facts alone) or 'served' (the "
        "episodic log of the conversation so far plus the facts, as the bundle serves them: a reply earns "
        "only what its facts add to the log; needs reader = 'agent').", "facts")

    def __post_init__(self) -> None:
        if self.metric not in ("em", "f1"):
            raise ConfigError(f"[reward] metric must be 'em' or 'f1', not {self.metric!r}.")
        if self.reader not in ("agent", "candidates"):
            raise ConfigError(f"[reward] reader must be 'agent' or 'candidates', not {self.reader!r}.")
        if self.context not in ("facts", "served"):
            raise ConfigError(f"[reward] context must be 'facts' or 'served', not {self.context!r}.")
        if self.context == "served" and self.reader != "agent":
            raise ConfigError("[reward] context = 'served' needs reader = 'agent': the candidate reader would "
                              "see every value the log ever held and never answer.", hint="set reader = \"agent\"")


@dataclass
class TrainConfig:
    agent: str = _help("Which agent to train: 'manager' or 'answer'.", "manager")
    base: str = _help("Base model: 'bundled' (SmolLM2-135M GGUF), a .gguf path, a folder or a hub id.", "bundled")
    dtype: str = _help("Weights dtype: 'float32' (CPU) or 'bfloat16' (GPU).", "float32")
    device: str = _help("'cpu', 'cuda' or 'auto'.", "auto")
    threads: int = _help("CPU threads for torch (0: torch's default). On a busy machine 1 is often fastest.", 0)
    seed: int = _help("Random seed (sampling, LoRA init, data order).", 0)
    steps: int = _help("GRPO optimiser steps (0: the supervised warm start only).", 200)
    sft_steps: int = _help(
        "Supervised warm-start steps on the episodes' gold replies before GRPO (TRL SFTTrainer; 0: none).", 0)
    sft_learning_rate: float = _help("Learning rate of the warm start (LoRA weights).", 2e-4)
    sft_batch_size: int = _help("Episodes per warm-start step.", 8)
    sft_loss_tokens: str = _help(
        "Gold reply tokens the warm start learns: 'all' (TRL's completion-only loss) or 'choices', only those at "
        "the schema's branch points (which operation, id, clause), the tokens served decoding decides; the rest "
        "the grammar forces. With 'all' the clause's copied tokens outweigh the operation ~20 to 1 and the "
        "135M Manager learned the operations' marginal, not which turn calls for which "
        "(bench/results/learned_manager_sft.json).", "all")
    learning_rate: float = _help("AdamW learning rate (LoRA weights).", 1e-5)
    lr_scheduler: str = _help("transformers scheduler name ('linear', 'constant', 'cosine', ...).", "linear")
    warmup_steps: int = _help("Linear warm-up steps.", 0)
    prompts_per_step: int = _help("Distinct prompts per optimiser step (each sampled num_generations times).", 2)
    num_generations: int = _help("Completions sampled per prompt (the GRPO group).", 8)
    gradient_accumulation_steps: int = _help("Micro-batches per optimiser step.", 1)
    max_completion_length: int = _help("Most tokens a sampled reply may take.", 256)
    temperature: float = _help("Sampling temperature of rollouts (Memory-R1: 1.0).", 1.0)
    choice_temperature: float = _help(
        "Extra temperature where the schema branches between values only (which operation, id, tier) during "
        "rollouts, so that groups try operations the model rarely picks (1.0: off; not in Memory-R1).", 1.0)
    loss_tokens: str = _help(
        "Completion tokens the policy gradient updates: 'all' (TRL) or 'choices', only those sampled at the "
        "schema's branch points (which operation, id, tier; one more operation or not). With 'choices' the few "
        "decision tokens are not drowned among the memory text's tokens, which the model keeps copying from the "
        "turn as it did before training.", "all")
    beta: float = _help("KL coefficient against the base model (TRL default 0: no reference model).", 0.0)
    loss_type: str = _help("TRL GRPO loss aggregation ('dapo', 'grpo', 'dr_grpo', 'bnpo', ...).", "dapo")
    scale_rewards: str = _help("Advantage scaling: 'group', 'batch' or 'none'.", "group")
    epsilon: float = _help("PPO clip range.", 0.2)
    max_grad_norm: float = _help("Gradient clipping norm.", 1.0)
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass (saves GPU memory).", False)
    save_every: int = _help("Checkpoint every N steps (resume picks up the latest).", 25)
    eval_every: int = _help("Evaluate on the dev episodes every N steps (0: only before and after).", 25)
    eval_max_new_tokens: int = _help("Token budget of greedy dev replies.", 256)
    eval_batch_size: int = _help("Prompts per batch in dev evaluation.", 8)
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "[lora] table."})
    data: DataSettings = field(default_factory=DataSettings, metadata={"help": "[data] table."})
    reward: RewardSettings = field(default_factory=RewardSettings, metadata={"help": "[reward] table."})
    grpo: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "[grpo] table: any setting of TRL's GRPOConfig, passed to it as written, over edge's own values "
        "(e.g. top_p, mask_truncated_completions, num_iterations); output_dir and max_steps stay edge's.")})

    def __post_init__(self) -> None:
        self._check_grpo()
        if self.agent not in AGENTS:
            raise ConfigError(f"agent must be one of {', '.join(AGENTS)}, not {self.agent!r}.")
        if self.num_generations < 2:
            raise ConfigError("num_generations must be at least 2: GRPO compares completions of one prompt.",
                              hint="set num_generations = 4 (CPU) or 8")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for rollouts (greedy rollouts are all the same).",
                              hint="Memory-R1 samples rollouts at 1.0")
        for name in ("loss_tokens", "sft_loss_tokens"):
            if getattr(self, name) not in ("all", "choices"):
                raise ConfigError(f"{name} must be 'all' or 'choices', not {getattr(self, name)!r}.")
        if self.choice_temperature < 1.0:
            raise ConfigError("choice_temperature must be >= 1.0 (1.0 leaves rollouts as sampled).")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16, not {self.dtype!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, not {self.device!r}.")
        if self.dtype != "float32" and self.resolved_device() == "cpu":
            raise ConfigError(f"dtype {self.dtype} on a CPU is slow or unsupported in training.",
                              hint="set dtype = \"float32\" for CPU runs")
        if self.reward.op_match_weight and self.data.source != "synthetic":
            raise ConfigError("[reward] op_match_weight needs gold operations, which only synthetic data has.",
                              hint="set op_match_weight = 0 for LoCoMo")
        if self.data.balance_ops and (self.data.source != "synthetic" or self.agent != "manager"):
            raise ConfigError("[data] balance_ops applies to synthetic Manager episodes only (they know each turn's "
                              "gold operation).", hint="remove balance_ops from this config")
        if (self.data.source == "mix" or self.data.unanswerable) and self.agent != "answer":
            raise ConfigError("[data] source = 'mix' and unanswerable are for the Answer Agent's episodes.",
                              hint="remove them from this manager config")
        if self.data.time_questions and (self.agent != "answer" or self.data.source == "locomo"):
            raise ConfigError("[data] time_questions adds synthetic Answer episodes; this config trains the "
                              f"{self.agent} on source = {self.data.source!r}.",
                              hint="remove time_questions, or train the answer agent on source 'synthetic' or 'both'")
        from edge.train.synthetic import EVENTS

        if self.data.time_questions > len(EVENTS):
            raise ConfigError(f"[data] time_questions is at most {len(EVENTS)} (the distinct events the generator "
                              f"knows), not {self.data.time_questions}.")
        if self.reward.context == "served" and self.data.embedder != "minilm":
            raise ConfigError("[reward] context = 'served' reads as the bundle does, with its embedder.",
                              hint="set [data] embedder = \"minilm\"")
        if self.reward.reader == "candidates" and self.data.source != "synthetic":
            raise ConfigError("[reward] reader = 'candidates' only works on synthetic data (its questions list "
                              "their possible answers).", hint="set reader = \"agent\" for LoCoMo")
        if self.steps < 0 or self.sft_steps < 0 or self.steps + self.sft_steps < 1 or self.prompts_per_step < 1:
            raise ConfigError("steps (GRPO) and sft_steps (warm start) must be >= 0, one of them >= 1, and "
                              "prompts_per_step >= 1.")

    def _check_grpo(self) -> None:
        """A [grpo] key TRL's GRPOConfig does not have is refused here, not when training starts."""
        if not isinstance(self.grpo, dict):
            raise ConfigError("[grpo] must be a table of TRL GRPOConfig settings.")
        if not self.grpo:
            return
        owned = sorted(set(self.grpo) & GRPO_OWNED)
        if owned:
            raise ConfigError(f"[grpo] cannot set {', '.join(owned)}: edge sets them (--out, --steps).")
        try:
            from trl import GRPOConfig
        except ImportError:  # without the train extra nothing trains; the trainer checks again
            return
        unknown = sorted(set(self.grpo) - {f.name for f in fields(GRPOConfig)})
        if unknown:
            raise ConfigError(f"[grpo] names setting(s) TRL's GRPOConfig does not have: {', '.join(unknown)}.",
                              hint="see https://huggingface.co/docs/trl/grpo_trainer (GRPOConfig)")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {"lora": LoraSettings, "data": DataSettings, "reward": RewardSettings}
GRPO_OWNED = frozenset({"output_dir", "max_steps"})  # GRPOConfig settings edge sets itself


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown setting(s) in {where}: {', '.join(unknown)}.",
                          hint=f"known: {', '.join(sorted(known))}")
    return cls(**values)


def config_from_dict(data: dict[str, Any], *, where: str = "the config") -> TrainConfig:
    top = {k: v for k, v in data.items() if k not in _SECTIONS}
    if "grpo" in top:
        top["grpo"] = dict(top["grpo"]) if isinstance(top["grpo"], dict) else top["grpo"]
    sections = {k: _build(cls, dict(data.get(k, {})), f"[{k}] of {where}") for k, cls in _SECTIONS.items()}
    return _build(TrainConfig, {**top, **sections}, where)


def config_path(name: str) -> Path:
    """A shipped config by name ('smollm2-135m-manager') or a path to a TOML file."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name.removesuffix('.toml')}.toml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
    raise ConfigError(f"No config file {name!r}.", hint=f"pass a .toml path or one of: {names}")


def load_config(name: str | Path, **overrides: Any) -> TrainConfig:
    """Read a TOML config; keyword overrides replace top-level fields (e.g. steps=2)."""
    path = config_path(str(name))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    # Overrides go into the table before it is checked: a setting may need another that only an override
    # gives (source = "both" in the file, locomo_path from --locomo).
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        (data.setdefault(section, {}) if section else data)[name] = value
    return config_from_dict(data, where=str(path))


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """A copy with top-level fields replaced, or section fields given as 'section.field'."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, values in sections.items():
        current = getattr(config, section, None)
        if section == "grpo":
            top["grpo"] = {**current, **values}
            continue
        if not is_dataclass(current):
            raise ConfigError(f"No [{section}] table in training configs.")
        top[section] = replace(current, **values)
    return replace(config, **top) if top else config


def describe(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(name, help, default) of every setting, for `edge train --help-config`."""
    rows: list[tuple[str, str, Any]] = []
    for f in fields(cls):
        if f.name in _SECTIONS:
            rows += describe(_SECTIONS[f.name], f"{f.name}.")
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        rows.append((prefix + f.name, f.metadata.get("help", ""), default))
    return rows
