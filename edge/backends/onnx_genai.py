"""ONNX decoder models on onnxruntime-genai.

`model_dir` is a folder with `genai_config.json`, the ONNX model and a
Hugging Face `tokenizer.json` — what `onnxruntime_genai.models.builder`
writes, or an optimum `text-generation-with-past` export with a
`genai_config.json` beside it.

- Chat formatting uses the folder's chat template
  (`Tokenizer.apply_chat_template`), ChatML when it has none.
- Schema-constrained output uses onnxruntime-genai's guidance
  (`GeneratorParams.set_guidance("json_schema", ...)`, llguidance underneath;
  present in the 0.18 wheels). If a build lacks it, the output is generated
  freely and checked afterwards: a reply that is not JSON matching the
  schema raises ModelOutputError. `constrained` tells which case holds.
- Adapters are onnxruntime-genai adapter files (`.onnx_adapter`), activated
  per call with `Generator.set_active_adapter`.
- Each call evaluates its whole prompt: there is no KV reuse across calls.
- Sampling at temperature > 0 draws from the full distribution; 0 is greedy.
- `repeat_penalty` is llama.cpp's (`LlamaCppBackend`): among the last 64
  tokens of the reply, positive logits are divided by it and the others
  multiplied, so a bundle decodes alike on both runtimes. onnxruntime-genai's
  own `repetition_penalty` search option is not used: it penalises every
  token of the sequence, the prompt included (transformers' rule), i.e. the
  very memories an answer must be free to quote. The penalty is applied
  through `Generator.get_logits` / `set_logits` before each token is chosen
  (the schema's mask is applied by onnxruntime-genai either way).
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edge.backends.base import (
    CHATML_TEMPLATE,
    Backend,
    Completion,
    DecodeLock,
    Message,
    StopScanner,
    check_messages,
)
from edge.backends.penalty import PENALTY_LAST_N, repeat_penalised
from edge.errors import BackendError, require_extra


def _import_og():
    return require_extra("The onnxruntime-genai backend", "onnx-genai", "onnxruntime_genai")


class OnnxGenAIBackend(Backend):
    def __init__(
        self,
        model_dir: Path,
        *,
        adapters: dict[str, Path] | None = None,
        seed: int = 0,
        repeat_penalty: float = 1.0,
    ) -> None:
        """Load the onnxruntime-genai folder `model_dir` (and `.onnx_adapter` files under their names).

        `repeat_penalty`: llama.cpp's repetition penalty (see the module
        docstring); 1.0 is none. Raises `BackendError` for a folder that does
        not load, or for a penalty this onnxruntime-genai cannot apply (no
        `Generator.get_logits`/`set_logits`) rather than decode without it.
        """
        self.model_dir = Path(model_dir)
        config_path = self.model_dir / "genai_config.json"
        if not config_path.is_file():
            raise BackendError(
                f"No genai_config.json in {self.model_dir}",
                hint="export the model with `edge export --onnx` (or onnxruntime_genai.models.builder)",
            )
        og = _import_og()
        self._og = og
        try:
            self._model = og.Model(str(self.model_dir))
            self._tokenizer = og.Tokenizer(self._model)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeErrors/OrtExceptions
            raise BackendError(
                f"onnxruntime-genai could not load {self.model_dir}: {exc}",
                hint="the folder may be incomplete or from another onnxruntime-genai version; export it again",
            ) from exc
        config = json.loads(config_path.read_text())
        self.context_length = int(config.get("model", {}).get("context_length", 2048))
        self.n_ctx = self.context_length
        eos = config.get("model", {}).get("eos_token_id", [])
        self._eos = set(eos if isinstance(eos, list) else [eos])
        self.name = f"onnx-genai:{self.model_dir.name}"
        self.seed = seed
        self.constrained = hasattr(og.GeneratorParams, "set_guidance")
        if not repeat_penalty > 0:
            raise BackendError(f"repeat_penalty must be > 0, not {repeat_penalty!r}.", hint="1.0 is no penalty")
        if repeat_penalty != 1.0 and not all(hasattr(og.Generator, a) for a in ("get_logits", "set_logits")):
            raise BackendError(
                f"This onnxruntime-genai ({getattr(og, '__version__', '?')}) cannot apply a repeat penalty: "
                "its Generator has no get_logits/set_logits.",
                hint="install onnxruntime-genai >= 0.8, or set the bundle's generation.repeat_penalty to 1.0",
            )
        self.repeat_penalty = float(repeat_penalty)
        self._calls = 0
        self._lock = DecodeLock()
        self._adapters = None
        self._adapter_names: set[str] = set()
        for adapter_name, path in (adapters or {}).items():
            self.load_adapter(adapter_name, path)

    # ------------------------------------------------------------ public API

    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapter_names)

    def load_adapter(self, name: str, path: Path) -> None:
        if self._adapters is None:
            self._adapters = self._og.Adapters(self._model)
        try:
            self._adapters.load(str(path), name)
        except Exception as exc:
            raise BackendError(
                f"onnxruntime-genai could not load the adapter {path}: {exc}",
                hint="an adapter must be an .onnx_adapter file made for this model",
            ) from exc
        self._adapter_names.add(name)

    def render_prompt(self, messages: list[Message]) -> str:
        check_messages(messages)
        payload = json.dumps([{"role": m.role, "content": m.content} for m in messages])
        try:
            return self._tokenizer.apply_chat_template(payload, add_generation_prompt=True)
        except Exception:  # the folder has no chat template
            return self._tokenizer.apply_chat_template(
                payload, template_str=CHATML_TEMPLATE, add_generation_prompt=True
            )

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text))

    def close(self) -> None:
        self._adapters = None
        self._tokenizer = None
        self._model = None

    # -------------------------------------------------------------- decoding

    @property
    def checks_replies(self) -> bool:
        """A model whose genai version cannot constrain decoding has its JSON replies checked (`Backend.complete`)."""
        return not self.constrained

    def _decode(self, messages: list[Message], *, schema: dict | None, max_tokens: int, temperature: float,
                adapter: str | None, stop: list[str] | None, cancel: threading.Event | None,
                done: Callable[[Completion], None]) -> Iterator[str]:
        if self._model is None:
            raise BackendError("This backend has been closed.", hint="create a new one")
        self.require_adapter(adapter)
        og = self._og
        with self._lock.exclusive():
            start = time.perf_counter()
            ids = self._tokenizer.encode(self.render_prompt(messages))
            if len(ids) >= self.context_length:
                raise BackendError(
                    f"The prompt has {len(ids)} tokens; the model's context holds {self.context_length}.",
                    hint="shorten the prompt (fewer memories)",
                )
            max_tokens = max(0, min(max_tokens, self.context_length - len(ids)))
            self._calls += 1
            params = og.GeneratorParams(self._model)
            options = {"max_length": len(ids) + max_tokens, "random_seed": self.seed + self._calls}
            if temperature > 0:
                options.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                options.update(do_sample=False)
            params.set_search_options(**options)
            if schema is not None and self.constrained:
                params.set_guidance("json_schema", json.dumps(schema))
            generator = og.Generator(self._model, params)
            if adapter is not None:
                generator.set_active_adapter(self._adapters, adapter)
            decoder = self._tokenizer.create_stream()
            scanner = StopScanner(stop)
            n_out, finish = 0, "length"
            recent: deque[int] = deque(maxlen=PENALTY_LAST_N)
            try:
                if max_tokens == 0:
                    return
                generator.append_tokens(ids)
                while not generator.is_done():
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    if self.repeat_penalty != 1.0 and recent:
                        self._penalise(generator, recent)
                    generator.generate_next_token()
                    token = int(generator.get_next_tokens()[0])
                    recent.append(token)
                    if token in self._eos:
                        finish = "stop"
                        break
                    n_out += 1
                    out, stopped = scanner.feed(decoder.decode(token))
                    if out:
                        yield out
                    if stopped:
                        finish = "stop"
                        break
                    if n_out >= max_tokens:
                        break
                if finish != "cancelled":
                    tail = scanner.flush()
                    if tail:
                        yield tail
            except GeneratorExit:
                finish = "cancelled"
                raise
            finally:
                done(Completion.since(start, scanner.text, len(ids), n_out, finish))

    def _penalise(self, generator, recent: deque[int]) -> None:
        """Apply the repeat penalty to the next token's logits (shape [1, vocab], or [1, 1, vocab])."""
        logits = np.array(generator.get_logits(), dtype=np.float32, copy=True)
        repeat_penalised(logits.reshape(-1, logits.shape[-1])[0], recent, self.repeat_penalty)  # a view: batch 1
        generator.set_logits(logits)
