"""What a config asks for, built: episodes, the frozen reader, reward functions and their weights.

Kept apart from the trainer so the bench and the tests can build the same
pieces without starting a training run.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge.embedder import Embedder, HashEmbedder
from edge.evaluation.scoring import exact_match, f1_score
from edge.generation import GenerationConfig
from edge.locomo import dev_question, load_locomo

from edge.train import episodes as ep
from edge.train import rewards
from edge.train.config import TrainConfig
from edge.train.synthetic import activity_conversations, generate

log = logging.getLogger(__name__)

@dataclass
class Data:
    train: list[Any]  # ManagerEpisode or AnswerEpisode
    dev: list[Any]
    dev_conversations: list[Any]  # synthetic conversations behind `dev` (empty for LoCoMo)


def load_embedder(name: str) -> Embedder:
    if name == "hash":
        return HashEmbedder()
    from edge.export.embedder import build_default_minilm

    return build_default_minilm()


class TokenCounter:
    """What `edge.answer.AnswerAgent` needs of a backend to choose a prompt's memories: token counts and a window.

    The training tokenizer is the served model's (the GGUF's vocabulary), so
    an episode shows the memories, focused lines and budget the runtime shows.
    """

    def __init__(self, tokenizer, n_ctx: int = 8192) -> None:
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_context_agent(tokenizer, config: TrainConfig):
    """The Answer Agent whose retrieval and token budget LoCoMo Answer episodes reproduce (no model loaded).

    Its settings are those `edge export` writes into a bundle (`edge.bundle.default_generation`: the retrieval,
    `answer_retrieval`, among them), with the config's `answer_k` and `text_mode`.
    """
    from edge.answer import AnswerAgent
    from edge.bundle import default_generation

    return AnswerAgent(TokenCounter(tokenizer), generation=default_generation(),  # type: ignore[arg-type]
                       k=config.data.answer_k, text_mode=config.data.text_mode, order=config.data.answer_order)


def build_data(config: TrainConfig, embedder: Embedder, *, reader: Any = None) -> Data:
    """Train and dev episodes of `config`'s agent, on its action space (`data.text_mode`).

    `reader`: for Answer episodes over the episodic log (LoCoMo's, the
    synthetic time questions), the `edge.answer.AnswerAgent` whose
    retrieval and token budget the episodes reproduce (None: top-k turns).
    """
    d = config.data
    mode = d.text_mode
    if d.source == "mix":
        return _mixed_data(config, embedder, reader)
    if d.source == "both":  # the synthetic episodes, then LoCoMo's; dev from both
        from dataclasses import replace

        if not d.locomo_path:
            from edge.train.config import ConfigError

            raise ConfigError("[data] source = 'both' needs locomo_path: the LoCoMo file to train on.",
                              hint="pass --locomo conv-26.json (or set locomo_path in the config)")

        synthetic = build_data(replace(config, data=replace(d, source="synthetic", max_dev_episodes=0)), embedder,
                               reader=reader)
        locomo_data = replace(d, source="locomo", max_dev_episodes=0, time_questions=0)
        locomo = build_data(replace(config, data=locomo_data), embedder, reader=reader)
        train = [e for e in synthetic.train + locomo.train if ep.learnable(e)]
        random.Random(config.seed).shuffle(train)
        dev = synthetic.dev + locomo.dev
        if d.max_dev_episodes and len(dev) > d.max_dev_episodes:
            dev = random.Random(config.seed).sample(dev, d.max_dev_episodes)
        return Data(train=train, dev=dev, dev_conversations=synthetic.dev_conversations)
    if d.source == "synthetic":
        train_convs = generate("train", d.train_conversations)
        dev_convs = generate("dev", d.dev_conversations)
        if config.agent == "manager":
            ops = GenerationConfig(consolidation=d.consolidation).manager_ops
            if d.activity_conversations:  # lists told over sessions: what EXTEND keeps as one fact
                train_convs += activity_conversations("train", d.activity_conversations)
                dev_convs += activity_conversations("dev", d.dev_conversations)
            managed = dict(related_k=d.related_k, text_mode=mode, ops=ops)
            train = ep.synthetic_manager_episodes(train_convs, embedder, **managed)
            if d.balance_ops:
                train = ep.balance_ops(train, config.seed)
            dev = ep.synthetic_manager_episodes(dev_convs, embedder, **managed)
        else:
            facts = dict(k=d.answer_k, text_mode=mode, reader=reader, with_log=d.synthetic_log)
            train = ep.synthetic_answer_episodes(train_convs, embedder, **facts)
            dev = ep.synthetic_answer_episodes(dev_convs, embedder, **facts)
            if d.time_questions:  # "When did ...?" over the episodic log, shown as the runtime shows it
                timed = dict(per_conversation=d.time_questions, k=d.answer_k, text_mode=mode, reader=reader,
                             unanswerable=d.unanswerable)
                train += ep.synthetic_time_episodes(train_convs, embedder, **timed)
                dev += ep.synthetic_time_episodes(dev_convs, embedder, **timed)
                random.Random(config.seed).shuffle(train)
    else:
        convs = load_locomo(d.locomo_path)  # type: ignore[arg-type]
        dev_convs = load_locomo(d.dev_locomo_path) if d.dev_locomo_path else []

        def episodes_of(conversations):
            if config.agent == "manager":
                return ep.locomo_manager_episodes(conversations, embedder, related_k=d.related_k, window=d.window,
                                                  text_mode=mode)
            asked = dict(k=d.answer_k, text_mode=mode, reader=reader, include_adversarial=d.unanswerable > 0)
            if not d.locomo_bank:
                return ep.locomo_answer_episodes(conversations, embedder, **asked)
            try:
                served = ep.locomo_answer_episodes(conversations, embedder, bank=Path(d.locomo_bank), **asked)
            except ValueError as exc:  # a bank of another conversation, or of several users
                from edge.train.config import ConfigError

                raise ConfigError(f"[data] locomo_bank: {exc}", hint="give the bank `edge eval locomo` built for "
                                  "locomo_path's conversation (OUT/bundle/<sample id>/bank.db)") from exc
            # Each question over the log alone too: the reader keeps reading a bank without a Manager's facts.
            return served + (ep.locomo_answer_episodes(conversations, embedder, **asked) if d.locomo_log_too else [])

        every = episodes_of(convs)
        if dev_convs:
            train, dev = every, episodes_of(dev_convs)
        elif d.dev_questions == "every-fifth":
            if config.agent == "answer":
                held = [dev_question(int(e.episode_id.rsplit("qa", 1)[1])) for e in every]
            else:  # a turn that is evidence for a dev question is never trained on
                held = [any(dev_question(q["index"]) for q in e.questions) for e in every]
            train = [e for e, h in zip(every, held) if not h]
            dev = [e for e, h in zip(every, held) if h]
        else:  # hold out the last fifth, in conversation order
            cut = max(1, len(every) * 4 // 5)
            train, dev = every[:cut], every[cut:]
        dev_convs = []
    if config.agent == "answer":
        train = [e for e in train if ep.learnable(e)]
        if d.source == "locomo":
            train = unanswerable_share(train, d.unanswerable, config.seed)
    if d.max_dev_episodes and len(dev) > d.max_dev_episodes:
        dev = random.Random(config.seed).sample(dev, d.max_dev_episodes)
    return Data(train=train, dev=dev, dev_conversations=dev_convs if d.source == "synthetic" else [])


def unanswerable_share(train: list[Any], share: float, seed: int) -> list[Any]:
    """At most `share` unanswerable episodes (gold "unknown") per answerable one, sampled; order kept.

    LoCoMo's adversarial questions are about a quarter of a conversation's
    questions, more than the one in five (`data.unanswerable`) the other
    sources ask; trained all, they taught conv-26's answerable questions
    "unknown" (41.9 % of its answerable dev questions, against 22.6 % for
    the adapter trained without them: `bench/results/learned_answer.json`).
    """
    answerable = [e for e in train if e.answerable]
    unanswerable = [e for e in train if not e.answerable]
    room = int(round(share * len(answerable)))
    if len(unanswerable) <= room:
        return train
    keep = {id(e) for e in random.Random(seed).sample(unanswerable, room)}
    return [e for e in train if e.answerable or id(e) in keep]


def _mixed_data(config: TrainConfig, embedder: Embedder, reader: Any) -> Data:
    """source = 'mix': each source's episodes built as on its own, training rows in the shares of `weights`.

    Dev is every source's dev episodes at their natural sizes (capped by
    `max_dev_episodes`), so a checkpoint is chosen on all of them.
    """
    from dataclasses import replace

    from edge.train.config import MIX_SOURCES, ConfigError

    d = config.data
    weights = {name: float(w) for name, w in (d.weights or dict.fromkeys(MIX_SOURCES, 0.0)).items()}
    wanted = [name for name in MIX_SOURCES if weights.get(name) or not d.weights]
    parts: dict[str, Data] = {}
    for name in wanted:
        if name == "friendsqa":
            if not d.friendsqa_path:
                if d.weights:
                    raise ConfigError("[data] weights name friendsqa, which needs friendsqa_path.",
                                      hint="pass --friendsqa DIR (the folder with friendsqa_dev.json)")
                continue
            parts[name] = friendsqa_data(config, embedder, reader)
            continue
        if name == "locomo" and not d.locomo_path:
            if d.weights:
                raise ConfigError("[data] weights name locomo, which needs locomo_path.",
                                  hint="pass --locomo conv-26.json (or set locomo_path in the config)")
            continue
        single = replace(d, source=name, max_dev_episodes=0, weights={},
                         time_questions=d.time_questions if name == "synthetic" else 0)
        parts[name] = build_data(replace(config, data=single), embedder, reader=reader)
    if not parts:
        raise ConfigError("[data] source = 'mix' found no source to train on.",
                          hint="set locomo_path and/or friendsqa_path, or give synthetic a weight")
    shares = {name: weights.get(name, 0.0) if d.weights else float(len(part.train)) for name, part in parts.items()}
    train = mix({name: part.train for name, part in parts.items()}, shares, config.seed)
    dev = [e for part in parts.values() for e in part.dev]
    if d.max_dev_episodes and len(dev) > d.max_dev_episodes:
        dev = random.Random(config.seed).sample(dev, d.max_dev_episodes)
    synthetic = parts.get("synthetic")
    return Data(train=train, dev=dev, dev_conversations=synthetic.dev_conversations if synthetic else [])


def friendsqa_data(config: TrainConfig, embedder: Embedder, reader: Any) -> Data:
    """FriendsQA Answer episodes: train and dev scenes of the dev file (`edge.train.friendsqa.split_scenes`).

    Only the questions whose gold answer is an offered span
    (`AnswerEpisode.gold_offered`), and `data.unanswerable` questions of
    other scenes per kept one.
    """
    from edge.train.friendsqa import load_split

    d = config.data

    def episodes(split: str) -> list[Any]:
        return ep.friendsqa_answer_episodes(load_split(d.friendsqa_path, split), embedder, k=d.answer_k,  # type: ignore[arg-type]
                                            text_mode=d.text_mode, reader=reader, only_offered=True,
                                            unanswerable=d.unanswerable, seed=config.seed)

    return Data(train=episodes("train"), dev=episodes("dev"), dev_conversations=[])


def mix(groups: dict[str, list[Any]], shares: dict[str, float], seed: int) -> list[Any]:
    """The groups' items in the proportions of `shares`, as many as they hold together, in a seeded order.

    A group whose share asks for more items than it holds is repeated (each
    of its items once before any twice); one that asks for fewer gives a
    seeded sample.
    """
    groups = {name: items for name, items in groups.items() if items and shares.get(name, 0) > 0}
    total = sum(len(items) for items in groups.values())
    weight = sum(shares[name] for name in groups)
    rng = random.Random(seed)
    out: list[Any] = []
    for name, items in groups.items():
        count = round(total * shares[name] / weight)
        order = list(items)
        rng.shuffle(order)
        out += (order * (count // len(order) + 1))[:count]
    rng.shuffle(out)
    return out


def answer_metric(config: TrainConfig) -> Callable[[object, object], float]:
    return exact_match if config.reward.metric == "em" else f1_score


def shipped_answer_role() -> tuple[Path, Path]:
    """The default bundle's Answer Agent: its model file and its adapter (GGUF LoRA), the bundle built in
    $EDGE_HOME first if it is not there. Raises `ConfigError` when that bundle serves the answer role
    without an adapter."""
    from edge.bundle import build_default

    bundle = build_default(log=lambda message: log.info("%s", message))
    adapter = bundle.role_adapter("answer")
    if adapter is None:
        from edge.train.config import ConfigError

        raise ConfigError("The default bundle serves the Answer Agent without an adapter.",
                          hint="set reader_adapter to a GGUF LoRA path, or leave it out for the base model")
    model, _ = bundle.role("answer")
    return Path(model), bundle.adapter_paths()[adapter]


def build_reader(config: TrainConfig, generation: GenerationConfig | None = None) -> rewards.Reader:
    """The frozen reader of the Manager's reward, decoding as the served Answer Agent decodes.

    `generation` is the decoding settings of the bundle the trained Manager
    will be served in (`Bundle.generation`): the reader's backend gets its
    repeat penalty and context window, its Answer Agent its k, token budgets
    and text mode. Without one, the default bundle's settings
    (`edge.bundle.default_generation`), sized by the config's `reader_k` and
    `reader_n_ctx`. An answer adapter (`reader_adapter`) serves the reader
    when given, else the base model. Raises `ConfigError` when the reader
    cannot decode with those settings (the transformers reader applies the
    runtime's default penalty only), `BackendError` for a `reader_adapter`
    its backend cannot serve (a server, the transformers reader).
    """
    r = config.reward
    if r.reader == "candidates":
        return rewards.CandidateReader(k=r.reader_k)
    from edge.answer import AnswerAgent
    from edge.backends import load_backend
    from edge.bundle import default_generation

    if generation is None:
        generation = default_generation().override(answer_k=r.reader_k, n_ctx=r.reader_n_ctx)
    if r.reader_url:
        backend = load_backend("http", base_url=r.reader_url, model=r.reader_model, n_ctx=generation.n_ctx)
    elif r.reader_model == "base":
        from edge.prompts import REPEAT_PENALTY
        from edge.train.base_model import load_base
        from edge.train.config import ConfigError
        from edge.train.hf_backend import TransformersBackend

        if generation.repeat_penalty != REPEAT_PENALTY:
            raise ConfigError(
                f"The 'base' reader decodes with repeat penalty {REPEAT_PENALTY}, not the bundle's "
                f"{generation.repeat_penalty}.", hint="set reader_model = \"bundled\" or a GGUF path")
        model, tokenizer, base = load_base(config.base, dtype=config.dtype)
        model.to(config.resolved_device()).eval().requires_grad_(False)
        backend = TransformersBackend(model, tokenizer, name=f"frozen {base.name}", n_ctx=generation.n_ctx)
    else:
        from edge.models import bundled_gguf_path

        path = bundled_gguf_path() if r.reader_model == "bundled" else Path(r.reader_model)
        adapters = {"answer": Path(r.reader_adapter)} if r.reader_adapter else None
        if r.reader_adapter == "bundled":  # the shipped Answer Agent: the bundle's model file with its adapter
            shipped_model, shipped_adapter = shipped_answer_role()
            path = shipped_model if r.reader_model == "bundled" else path
            adapters = {"answer": shipped_adapter}
        backend = load_backend("llama.cpp", model_path=path, n_ctx=generation.n_ctx, adapters=adapters,
                               repeat_penalty=generation.repeat_penalty)
    # A reader_adapter the backend could not load (a server, the transformers reader) raises BackendError here.
    adapter = "answer" if r.reader_adapter else None
    return rewards.AgentReader(AnswerAgent(backend, generation=generation, adapter=adapter))


def build_rewards(config: TrainConfig, embedder: Embedder, reader: rewards.Reader | None
                  ) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
    """TRL reward functions and their weights for the agent being trained."""
    r = config.reward
    if config.agent == "answer":
        score = rewards.answer_em_reward if r.metric == "em" else rewards.answer_f1_reward
        return [score, rewards.answer_format_reward], [1.0, r.format_weight]
    if reader is None:
        raise ValueError("the Manager's reward needs a reader")
    outcome = rewards.ManagerOutcomeReward(reader, embedder, answer_metric(config), r.context)
    funcs = [outcome, rewards.manager_format_reward, rewards.manager_compression_reward]
    weights = [r.outcome_weight, r.format_weight, r.compression_weight]
    if r.op_match_weight:
        funcs.append(rewards.manager_op_match_reward)
        weights.append(r.op_match_weight)
    return funcs, weights
