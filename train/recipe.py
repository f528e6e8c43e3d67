"""What a config asks for, built: episodes, the frozen reader, reward functions and their weights.

Kept apart from the trainer so the bench and the tests can build the same
pieces without starting a training run.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from edge.embedder import Embedder, HashEmbedder
from edge.evaluation.scoring import exact_match, f1_score

from edge.train import episodes as ep
from edge.train import rewards
from edge.train.config import TrainConfig
from edge.train.synthetic import generate


@dataclass
class Data:
    train: list[Any]  # ManagerEpisode or AnswerEpisode
    dev: list[Any]
    dev_conversations: list[Any]  # synthetic conversations behind `dev` (empty for LoCoMo)


def load_embedder(name: str) -> Embedder:
    if name == "hash":
        return HashEmbedder()
    from edge.onnx_embedder import build_default_minilm

    return build_default_minilm()


def build_data(config: TrainConfig, embedder: Embedder) -> Data:
    d = config.data
    if d.source == "synthetic":
        train_convs = generate("train", d.train_conversations)
        dev_convs = generate("dev", d.dev_conversations)
        if config.agent == "manager":
            train = ep.synthetic_manager_episodes(train_convs, embedder, related_k=d.related_k)
            if d.balance_ops:
                train = ep.balance_ops(train, config.seed)
            dev = ep.synthetic_manager_episodes(dev_convs, embedder, related_k=d.related_k)
        else:
            train = ep.synthetic_answer_episodes(train_convs, embedder, k=d.answer_k)
            dev = ep.synthetic_answer_episodes(dev_convs, embedder, k=d.answer_k)
    else:
        convs = ep.load_locomo_file(d.locomo_path)  # type: ignore[arg-type]
        dev_convs = ep.load_locomo_file(d.dev_locomo_path) if d.dev_locomo_path else []

        def episodes_of(conversations):
            if config.agent == "manager":
                return ep.locomo_manager_episodes(conversations, embedder, related_k=d.related_k, window=d.window)
            return ep.locomo_answer_episodes(conversations, embedder, k=d.answer_k)

        train = episodes_of(convs)
        if dev_convs:
            dev = episodes_of(dev_convs)
        else:  # hold out the last fifth, in conversation order
            cut = max(1, len(train) * 4 // 5)
            train, dev = train[:cut], train[cut:]
        dev_convs = []
    if d.max_dev_episodes and len(dev) > d.max_dev_episodes:
        dev = random.Random(config.seed).sample(dev, d.max_dev_episodes)
    return Data(train=train, dev=dev, dev_conversations=dev_convs if d.source == "synthetic" else [])


def answer_metric(config: TrainConfig) -> Callable[[object, object], float]:
    return exact_match if config.reward.metric == "em" else f1_score


def build_reader(config: TrainConfig) -> rewards.Reader:
    """The frozen reader of the Manager's reward."""
    r = config.reward
    if r.reader == "candidates":
        return rewards.CandidateReader(k=r.reader_k)
    from edge.answer import AnswerAgent
    from edge.backends import load_backend

    if r.reader_url:
        backend = load_backend("http", base_url=r.reader_url, model=r.reader_model)
    elif r.reader_model == "base":
        from edge.train.base_model import load_base
        from edge.train.hf_backend import TransformersBackend

        model, tokenizer, base = load_base(config.base, dtype=config.dtype)
        model.to(config.resolved_device()).eval().requires_grad_(False)
        backend = TransformersBackend(model, tokenizer, name=f"frozen {base.name}", n_ctx=r.reader_n_ctx)
    else:
        from pathlib import Path

        from edge.models import bundled_gguf_path

        path = bundled_gguf_path() if r.reader_model == "bundled" else Path(r.reader_model)
        adapters = {"answer": Path(r.reader_adapter)} if r.reader_adapter else None
        backend = load_backend("llama.cpp", model_path=path, n_ctx=r.reader_n_ctx, adapters=adapters)
    return rewards.AgentReader(AnswerAgent(backend, k=r.reader_k, adapter="answer"))


def build_rewards(config: TrainConfig, embedder: Embedder, reader: rewards.Reader | None
                  ) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
    """TRL reward functions and their weights for the agent being trained."""
    r = config.reward
    if config.agent == "answer":
        score = rewards.answer_em_reward if r.metric == "em" else rewards.answer_f1_reward
        return [score, rewards.answer_format_reward], [1.0, r.format_weight]
    if reader is None:
        raise ValueError("the Manager's reward needs a reader")
    outcome = rewards.ManagerOutcomeReward(reader, embedder, answer_metric(config))
    funcs = [outcome, rewards.manager_format_reward, rewards.manager_compression_reward]
    weights = [r.outcome_weight, r.format_weight, r.compression_weight]
    if r.op_match_weight:
        funcs.append(rewards.manager_op_match_reward)
        weights.append(r.op_match_weight)
    return funcs, weights
