"""Hugging Face folders and PEFT adapters to GGUF, and GGUF quantisation.

The converter is llama.cpp's own `convert_hf_to_gguf.py` / `convert_lora_to_gguf.py`
from the *same* llama.cpp the installed llama-cpp-python was built from: its
sdist carries them in `vendor/llama.cpp/` with the matching `gguf-py` and
`conversion/` package. A converter from another llama.cpp release can write
metadata (tokenizer pre-tokenizer names, tensor layouts) the runtime does not
know, so the files are taken from the llama-cpp-python sdist of the installed
version and kept under `$EDGE_CACHE/llama-cpp-convert/<version>/`:

    $EDGE_LLAMA_CPP_SDIST=/path/llama_cpp_python-0.3.36.tar.gz   use this file, or else
    pip download --no-deps --no-binary :all: llama-cpp-python==<installed>

The converter runs in a subprocess with its own `gguf-py` first on the path:
the `gguf` package on PyPI (which transformers uses in this process) is a
different release, and the two must not meet in one interpreter.

The converter writes only f32/f16/bf16/q8_0; the k-quants (Q4_K_M, ...) are
made from the f16 file with `llama_cpp.llama_model_quantize`. Tensors whose
rows are not a multiple of 256 (SmolLM2-135M's 576-wide ones) cannot hold
k-quants; llama.cpp falls back to a legacy type for those, so a "Q4_K_M"
135M model is a mix (the file's real size is what the report shows).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from edge.errors import EdgeError, MissingExtraError, require_extra
from edge.files import staged_dir

QUANT_TYPES = ("f16", "q8_0", "q4_k_m", "q4_k_s", "q5_k_m", "q6_k", "q4_0")
_FTYPE_NAMES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
_VENDOR = "vendor/llama.cpp/"
_WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
_READY = ".complete"


def _llama_cpp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception as exc:  # PackageNotFoundError
        raise MissingExtraError("GGUF export", "export") from exc


def converter_dir(*, log=lambda message: None) -> Path:
    """The folder holding llama.cpp's converters for the installed llama-cpp-python (fetched once)."""
    from edge.paths import cache_dir

    version = _llama_cpp_version()
    target = cache_dir() / "llama-cpp-convert" / version
    if (target / _READY).is_file():
        return target
    sdist = os.environ.get("EDGE_LLAMA_CPP_SDIST")
    with tempfile.TemporaryDirectory(prefix="edge-sdist-") as tmp:
        if sdist:
            archive = Path(sdist).expanduser()
            if not archive.is_file():
                raise EdgeError(f"EDGE_LLAMA_CPP_SDIST points at {archive}, which does not exist.")
        else:
            log(f"fetching llama.cpp's converter (llama-cpp-python {version} sdist, once)")
            archive = _download_sdist(version, Path(tmp))
        with staged_dir(target) as staging:
            _extract_converter(archive, staging)
            (staging / _READY).write_text(f"llama-cpp-python {version}\n")
    return target


def _download_sdist(version: str, folder: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        f"llama-cpp-python=={version}", "-d", str(folder), "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise EdgeError(
            f"Could not fetch the llama-cpp-python {version} sdist, which carries llama.cpp's GGUF converter "
            f"(pip said: {(result.stderr or result.stdout).strip().splitlines()[-1:] or ['nothing']}).",
            hint=f"on a connected machine run `pip download --no-deps --no-binary :all: "
            f"llama-cpp-python=={version}` and set EDGE_LLAMA_CPP_SDIST to the .tar.gz it saves",
        )
    return found[0]


def _extract_converter(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            _, _, rel = member.name.partition("/")
            if not rel.startswith(_VENDOR) or not (member.isfile() or member.isdir()):
                continue
            inner = rel[len(_VENDOR):]
            if any(inner == w or (w.endswith("/") and inner.startswith(w)) for w in _WANTED):
                member.name = inner
                members.append(member)
        if not any(m.name == "convert_hf_to_gguf.py" for m in members):
            raise EdgeError(f"{archive.name} carries no vendor/llama.cpp/convert_hf_to_gguf.py.")
        tar.extractall(into, members=members, filter="data")


def _run_converter(script: str, args: list[str], *, log) -> None:
    folder = converter_dir(log=log)
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py"), str(folder), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    result = subprocess.run([sys.executable, str(folder / script), *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise EdgeError(f"llama.cpp's {script} failed:\n{tail}", hint="see the converter's message above")


def hf_to_gguf(model_dir: Path, out_file: Path, *, outtype: str = "f16", model_name: str | None = None,
               log=lambda message: None) -> Path:
    """Convert a Hugging Face model folder to one GGUF file (f32, f16, bf16 or q8_0)."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    args = [str(model_dir), "--outfile", str(tmp), "--outtype", outtype]
    if model_name:
        args += ["--model-name", model_name]
    _run_converter("convert_hf_to_gguf.py", args, log=log)
    os.replace(tmp, out_file)
    return out_file


def lora_to_gguf(adapter_dir: Path, base_dir: Path, out_file: Path, *, outtype: str = "f16",
                 log=lambda message: None) -> Path:
    """Convert a PEFT LoRA folder to a GGUF LoRA adapter for the base in `base_dir`."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    _run_converter(
        "convert_lora_to_gguf.py",
        [str(adapter_dir), "--base", str(base_dir), "--outfile", str(tmp), "--outtype", outtype],
        log=log,
    )
    os.replace(tmp, out_file)
    return out_file


_QUANTIZE = r"""
import ctypes, sys
import llama_cpp
src, dst, ftype, threads, requantize = sys.argv[1:6]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, ftype)
params.nthread = int(threads)
params.allow_requantize = requantize == "1"
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
"""


def quantize_gguf(
    src: Path, dst: Path, quant: str, *, threads: int | None = None, allow_requantize: bool = False
) -> Path:
    """Quantise a GGUF file (normally the f16 one) to `quant` (see QUANT_TYPES) with llama.cpp.

    Runs `llama_cpp.llama_model_quantize` in a child process, which keeps
    llama.cpp's per-tensor log off the terminal (it is shown on failure).
    `allow_requantize` lets llama.cpp start from an already quantised file
    (the default bundle turns the shipped Q4_1 weights into Q8_0).

    Raises `EdgeError` for an unknown type or a failed quantisation.
    """
    quant = quant.lower()
    if quant not in _FTYPE_NAMES:
        raise EdgeError(f"Unknown GGUF quantisation {quant!r}.", hint=f"choose from {', '.join(QUANT_TYPES)}")
    require_extra("GGUF quantisation", "export", "llama_cpp")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    result = subprocess.run(
        [sys.executable, "-c", _QUANTIZE, str(src), str(tmp), _FTYPE_NAMES[quant], str(threads or cores),
         "1" if allow_requantize else "0"],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise EdgeError(f"llama.cpp could not quantise {src.name} to {quant} (status {result.returncode}):\n{tail}")
    os.replace(tmp, dst)
    return dst


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict:
    """A few metadata fields of a GGUF file (read with llama.cpp, so with the runtime's view of them)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return {key: llm.metadata.get(key) for key in keys}
    finally:
        llm.close()
