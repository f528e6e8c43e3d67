"""Parity gates: does the exported file behave like the model it came from?

Two kinds of check, each a row of the table `edge export` prints and writes
to `export.json`; an export whose gated rows fail raises `ParityError` and
writes no bundle.

1. Greedy tokens against the merged torch model (float32 compute on the
   merged 16-bit weights). The prompts are the dev set's (`edge.export.devset`,
   built with `edge.prompts`), sent through the runtime's own backends
   (`edge.backends`), which render them with the chat template and
   tokenizer stored in the exported files, so a wrong template or tokenizer
   shows up here. Up to `GREEDY_TOKENS` tokens are decoded; both
   replies are re-tokenised with the model's tokenizer and compared.
   *agreement* is the length of the common prefix over the longer reply,
   averaged over prompts (1.0: identical). A reply that leaves the
   reference where the torch model itself was torn (its top two logits
   within `NEAR_TIE_LOGITS`) counts as agreeing: rounding the weights to f16
   may flip such a tie, and what follows the flip is a different but equally
   likely reply, not a broken export. Gated for the f16 GGUF (>= 0.90) and
   the ONNX fp32 model (>= 0.95: same weights, fp32); the raw agreement and
   the number of near-tie flips are in the row's detail.
   Also gated: each runtime's backend renders every prompt to the same
   text and token count as the Hugging Face tokenizer does.

Every model is decoded with the repetition penalty of the bundles the
export writes (`generation`, an `edge.generation.GenerationConfig`, the
same object the pipeline writes into their manifests): the runtime
backends get it as the agents do, and the torch reference applies the same
rule (llama.cpp's, over the reply's last 64 tokens). The checks are greedy
whatever the configured temperature: greedy tokens are what can be compared.

2. Task score on the dev set, decoded under the runtime's JSON-schema
   constraint, for every quantised variant against its float original in
   the same runtime (Q4_K_M, Q8_0 against the f16 GGUF; ONNX int8, int4
   against ONNX fp32). Gate: score >= reference - `margin`. The default,
   0.15, is a little more than one of the eight dev items per role going
   wrong: the dev set is small enough to run on a laptop in minutes, so it
   catches a broken or collapsed quantisation, not a one-point drop (for
   that, run `edge eval` on both bundles).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from edge.errors import EdgeError
from edge.export.devset import DevItem, dev_items, score
from edge.generation import GenerationConfig

GREEDY_TOKENS = 32
GGUF_GREEDY_GATE = 0.90
ONNX_GREEDY_GATE = 0.95
NEAR_TIE_LOGITS = 0.5  # f16 rounding moves a 135M model's logits by about 0.1
DEFAULT_MARGIN = 0.15
N_CTX = 2048


class ParityError(EdgeError):
    """An exported model does not behave like the model it was exported from."""


@dataclass
class ParityRow:
    model: str  # which model (role) was checked: "manager" | "answer"
    artifact: str  # "gguf f16", "gguf q4_k_m + lora", "onnx int8", "torch (merged)"
    check: str  # "greedy vs torch" | "prompt render" | "task score"
    value: float
    reference: float | None = None
    gate: str = ""  # "" when the row is informational
    passed: bool = True
    detail: str = ""

    def cells(self) -> list[str]:
        ref = "" if self.reference is None else f"{self.reference:.3f}"
        verdict = ("ok" if self.passed else "FAIL") if self.gate else "-"
        return [self.model, self.artifact, self.check, f"{self.value:.3f}", ref, self.gate or "(info)", verdict]


@dataclass
class ParityReport:
    rows: list[ParityRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[ParityRow]:
        return [row for row in self.rows if row.gate and not row.passed]

    def table(self) -> str:
        header = ["model", "artifact", "check", "value", "reference", "gate", "result"]
        lines = [header] + [row.cells() for row in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for n, line in enumerate(lines):
            out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
            if n == 0:
                out.append("  ".join("-" * width for width in widths))
        return "\n".join(out)

    def to_json(self) -> list[dict]:
        return [asdict(row) for row in self.rows]

    def raise_on_failure(self) -> None:
        if self.failures:
            names = "; ".join(
                f"{r.model} {r.artifact} {r.check} = {r.value:.3f} (gate {r.gate})" for r in self.failures
            )
            raise ParityError(
                f"The export missed {len(self.failures)} parity gate(s): {names}.",
                hint="see the table above and export.json; a quantisation that misses its gate can be dropped "
                "(e.g. --gguf q8_0), the margin widened with --parity-margin, or the gates skipped with --no-parity",
            )


# ---------------------------------------------------------------------- runners


class Runner(Protocol):
    def generate(self, messages: list[dict], *, max_tokens: int, schema: dict | None = None) -> tuple[str, bool]:
        """Greedy reply text and whether it ended at end-of-generation."""

    def close(self) -> None: ...


class TorchRunner:
    """The merged Hugging Face model on torch, float32: the reference.

    `repeat_penalty` is applied as llama.cpp applies it (the reply's last 64
    tokens, `edge.train.constrained.RepeatPenaltyProcessor`), so the reference
    decodes like the runtime backends it is compared with.
    """

    def __init__(self, model_dir: Path, *, repeat_penalty: float = 1.0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        # Half the cores: OpenMP threads that spin while another process holds the
        # other cores make a 135M model ten times slower on a busy 2-core machine.
        self._threads = torch.get_num_threads()
        torch.set_num_threads(max(1, _cores() // 2))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(self.device).eval()
        self.repeat_penalty = repeat_penalty

    def generate(self, messages, *, max_tokens, schema=None):
        return self.generate_with_margins(messages, max_tokens=max_tokens)[:2]

    def generate_with_margins(self, messages, *, max_tokens) -> tuple[str, bool, list[int], list[float]]:
        """Greedy reply, whether it stopped, its token ids and the top-1 minus top-2 score at each step.

        The scores are the logits after the repeat penalty: what greedy decoding chose from.
        """
        from transformers import LogitsProcessorList

        from edge.train.constrained import RepeatPenaltyProcessor

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids.to(self.device)
        eos = self.tokenizer.eos_token_id
        with self._torch.no_grad():
            out = self.model.generate(
                ids, attention_mask=self._torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                eos_token_id=eos, pad_token_id=eos, output_scores=True, return_dict_in_generate=True,
                logits_processor=LogitsProcessorList([RepeatPenaltyProcessor(self.repeat_penalty)]),
            )
        new = out.sequences[0, ids.shape[1]:].tolist()
        margins = []
        for step_logits in out.scores:
            top2 = self._torch.topk(step_logits[0].float(), 2).values
            margins.append(float(top2[0] - top2[1]))
        stopped = bool(new) and new[-1] == eos
        text = self.tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=True)
        return text, stopped, new, margins

    def close(self) -> None:
        self.model = None
        self._torch.set_num_threads(self._threads)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class BackendRunner:
    """A runtime backend (`edge.backends`), used exactly as the agents use it."""

    def __init__(self, backend, adapter: str | None = None) -> None:
        self.backend = backend
        self.adapter = adapter

    def generate(self, messages, *, max_tokens, schema=None):
        completion = self.backend.complete(
            _messages(messages), schema=schema, max_tokens=max_tokens, temperature=0.0, adapter=self.adapter
        )
        return completion.text, completion.finish_reason == "stop"

    def render(self, messages) -> tuple[str, int]:
        text = self.backend.render_prompt(_messages(messages))
        return text, self.backend.count_tokens(text)

    def close(self) -> None:
        self.backend.close()


def _messages(messages: list[dict]):
    from edge.backends.base import Message

    return [Message(m["role"], m["content"]) for m in messages]


def gguf_runner(model_path: Path, adapter: Path | None = None, *,
                generation: GenerationConfig | None = None) -> BackendRunner:
    """A GGUF file (and optionally a GGUF LoRA) on the runtime's llama.cpp backend, decoded with `generation`'s
    repeat penalty (default `GenerationConfig()`)."""
    from edge.backends.llama_cpp import LlamaCppBackend

    generation = generation or GenerationConfig()
    backend = LlamaCppBackend(model_path, n_ctx=N_CTX, adapters={"tuned": adapter} if adapter else None,
                              repeat_penalty=generation.repeat_penalty)
    return BackendRunner(backend, "tuned" if adapter else None)


def onnx_runner(model_dir: Path, *, generation: GenerationConfig | None = None) -> BackendRunner:
    """An onnxruntime-genai folder on the runtime's onnx-genai backend, decoded with `generation`'s repeat penalty."""
    from edge.backends.onnx_genai import OnnxGenAIBackend

    generation = generation or GenerationConfig()
    return BackendRunner(OnnxGenAIBackend(model_dir, repeat_penalty=generation.repeat_penalty))


# ---------------------------------------------------------------------- checks


@dataclass
class Candidate:
    """An exported artifact to check for one model (role)."""

    model: str  # role: "manager" | "answer"
    artifact: str  # label, e.g. "gguf q4_k_m"
    kind: str  # "gguf" | "onnx"
    variant: str  # "f16", "q4_k_m", "fp32", "int4", ...
    open: Callable[[], Runner]
    reference: bool = False  # the float original of its runtime (f16 GGUF, ONNX fp32)


def _canonical(tokenizer, text: str, stopped: bool) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) + ([-1] if stopped else [])


def _common_prefix(a: list[int], b: list[int]) -> int:
    prefix = 0
    for x, y in zip(a, b):
        if x != y:
            break
        prefix += 1
    return prefix


def _agreement(a: list[int], b: list[int]) -> float:
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else _common_prefix(a, b) / longest


@dataclass
class ParityReference:
    """The torch model's greedy reply to one prompt."""

    tokens: list[int]  # canonical: re-tokenised text, -1 when it stopped
    generated: list[int]  # the ids as generated
    margins: list[float]  # top-1 minus top-2 logit at each generated step

    def near_tie_at(self, position: int) -> bool:
        """Was the torch model torn at `position` (and do canonical and generated ids agree up to it)?"""
        if position >= len(self.margins) or self.tokens[:position] != self.generated[:position]:
            return False
        return self.margins[position] < NEAR_TIE_LOGITS


def tie_aware_agreement(ref: ParityReference, reply: list[int]) -> tuple[float, bool]:
    """Agreement that forgives a divergence at a near-tie; also whether one was forgiven."""
    raw = _agreement(ref.tokens, reply)
    if raw == 1.0:
        return raw, False
    if ref.near_tie_at(_common_prefix(ref.tokens, reply)):
        return 1.0, True
    return raw, False


def check_model(
    model: str,
    reference_dir: Path,
    candidates: list[Candidate],
    *,
    margin: float = DEFAULT_MARGIN,
    items: list[DevItem] | None = None,
    tick: Callable[[str], None] = lambda label: None,
    generation: GenerationConfig | None = None,
) -> list[ParityRow]:
    """All parity rows for one model: `reference_dir` is its merged Hugging Face folder.

    `generation` (default `GenerationConfig()`) gives the torch reference
    its repeat penalty; the candidates' runners carry their own (built by
    the caller with the same object).
    """
    generation = generation or GenerationConfig()
    if items is None:
        items = dev_items((model,) if model in ("manager", "answer") else ("manager", "answer"))
    rows: list[ParityRow] = []
    tick(f"{model}: torch reference")
    torch_runner = TorchRunner(reference_dir, repeat_penalty=generation.repeat_penalty)
    tokenizer = torch_runner.tokenizer
    try:
        generated = [torch_runner.generate_with_margins(item.messages, max_tokens=GREEDY_TOKENS) for item in items]
        rendered = [tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=False)
                    for item in items]
    finally:
        torch_runner.close()
    eos = tokenizer.eos_token_id
    references = [
        ParityReference(_canonical(tokenizer, text, stopped), [-1 if t == eos else t for t in ids], margins)
        for text, stopped, ids, margins in generated
    ]

    task_scores: dict[str, float] = {}
    for candidate in candidates:
        tick(f"{model}: {candidate.artifact}")
        runner = candidate.open()
        try:
            if isinstance(runner, BackendRunner) and candidate.reference:
                expected = [(text, len(tokenizer.encode(text, add_special_tokens=False))) for text in rendered]
                same = sum(runner.render(item.messages) == want for item, want in zip(items, expected))
                rows.append(ParityRow(model, candidate.artifact, "prompt render", same / len(items), gate="= 1.000",
                                      passed=same == len(items),
                                      detail="chat template text and token count equal to the HF tokenizer's"))
            greedy = [runner.generate(item.messages, max_tokens=GREEDY_TOKENS) for item in items]
            replies = [_canonical(tokenizer, text, stopped) for text, stopped in greedy]
            scored = [tie_aware_agreement(ref, reply) for ref, reply in zip(references, replies)]
            agreement = sum(value for value, _ in scored) / len(items)
            raw = sum(_agreement(ref.tokens, reply) for ref, reply in zip(references, replies)) / len(items)
            ties = sum(forgiven for _, forgiven in scored)
            exact = sum(ref.tokens == reply for ref, reply in zip(references, replies))
            gate_value = None
            if candidate.reference:
                gate_value = GGUF_GREEDY_GATE if candidate.kind == "gguf" else ONNX_GREEDY_GATE
            rows.append(ParityRow(
                model, candidate.artifact, "greedy vs torch", agreement,
                gate=f">= {gate_value:.2f}" if gate_value else "",
                passed=gate_value is None or agreement >= gate_value,
                detail=f"{exact}/{len(items)} replies identical over {GREEDY_TOKENS} tokens; raw agreement "
                       f"{raw:.3f}; {ties} divergence(s) at a near-tie (< {NEAR_TIE_LOGITS} logits)",
            ))
            value = sum(
                score(item, runner.generate(item.messages, max_tokens=item.max_tokens, schema=item.schema)[0])
                for item in items
            ) / len(items)
            task_scores[f"{candidate.kind}:{candidate.variant}"] = value
            reference = next((c for c in candidates if c.kind == candidate.kind and c.reference), None)
            if candidate.reference or reference is None:
                rows.append(ParityRow(model, candidate.artifact, "task score", value,
                                      detail=f"{len(items)} dev items, JSON-constrained"))
            else:
                ref_value = task_scores.get(f"{reference.kind}:{reference.variant}")
                passed = ref_value is None or value >= ref_value - margin
                rows.append(ParityRow(
                    model, candidate.artifact, "task score", value, reference=ref_value,
                    gate=f">= ref - {margin:.2f}", passed=passed,
                    detail=f"{len(items)} dev items, JSON-constrained; reference {reference.artifact}",
                ))
        finally:
            runner.close()
    return rows


@dataclass
class Target:
    """One model to check: its merged HF folder, its exported artifacts, the jobs (dev roles) it serves."""

    model: str
    reference_dir: Path
    candidates: list[Candidate]
    roles: tuple[str, ...]


def run_checks(
    targets: Iterable[Target],
    *,
    margin: float = DEFAULT_MARGIN,
    per_role: int | None = None,
    tick: Callable[[str], None] = lambda label: None,
    generation: GenerationConfig | None = None,
) -> ParityReport:
    """Check every target; within each runtime the float reference runs before its quantisations.

    `per_role` limits the dev items to the first N of each role (quick
    checks). `generation` is the decoding settings the exported bundles
    will serve with (the torch reference's repeat penalty; the candidates'
    runners are opened with the same object by `edge.export.pipeline`).
    """
    start = time.perf_counter()
    report = ParityReport()
    for target in targets:
        ordered = sorted(target.candidates, key=lambda c: (c.kind, not c.reference))
        report.rows += check_model(target.model, target.reference_dir, ordered, margin=margin,
                                   items=dev_items(target.roles, per_role=per_role), tick=tick,
                                   generation=generation)
    report.seconds = time.perf_counter() - start
    return report
