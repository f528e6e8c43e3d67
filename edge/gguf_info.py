"""What a GGUF file says about itself, read from its header without loading the model.

A GGUF file starts with its metadata (key/value pairs: architecture, name,
context length, chat template, tokenizer) and the list of its tensors
(name, shape, type). Reading them takes milliseconds and no llama.cpp, so
`edge --model FILE.gguf` can check a file and choose its settings before
loading hundreds of megabytes. The layout (GGUF v2 and v3, little-endian):

    magic "GGUF", version u32, tensor count u64, key/value count u64,
    key/values: key (string), type u32, value
    tensor infos: name (string), n_dims u32, dims u64 x n_dims, type u32, offset u64

Strings are a u64 byte length and UTF-8 bytes. Arrays (the tokenizer's
vocabulary) are skipped except for their length.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edge.errors import BackendError

GGUF_MAGIC = b"GGUF"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

# value type -> struct format (scalars); 8 string, 9 array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# general.file_type -> the quantization people name it by (llama.cpp's llama_ftype)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              19: "IQ2_XXS", 20: "IQ2_XS", 23: "IQ3_XXS", 25: "IQ4_NL", 26: "IQ3_S", 30: "IQ4_XS", 32: "BF16"}


@dataclass(frozen=True)
class GgufInfo:
    """The parts of a GGUF header edge decides things with."""

    path: Path
    metadata: dict[str, Any] = field(repr=False)  # scalars and strings; arrays as {"array_length": n}
    parameters: int  # total elements of every tensor: the model's parameter count

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def name(self) -> str:
        """A human label: the file's `general.name` and size label, else the file name."""
        name = self.metadata.get("general.name") or self.path.stem
        size = self.metadata.get("general.size_label")
        return f"{name} ({size})" if size and str(size) not in str(name) else str(name)

    @property
    def context_length(self) -> int | None:
        """The context the model was trained for (`{architecture}.context_length`), in tokens."""
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get(CHAT_TEMPLATE_KEY)
        return value if isinstance(value, str) and value.strip() else None

    @property
    def quantization(self) -> str | None:
        return FILE_TYPES.get(self.metadata.get("general.file_type"))  # type: ignore[arg-type]

    @property
    def billions(self) -> float:
        """Parameters in billions (0.135 for SmolLM2-135M)."""
        return self.parameters / 1e9

    def require_chat_template(self) -> str:
        """The chat template, or a BackendError naming the missing metadata key and what to do."""
        template = self.chat_template
        if template is None:
            raise BackendError(
                f"{self.path.name} has no chat template: its metadata lacks '{CHAT_TEMPLATE_KEY}', so edge cannot "
                "tell how this model expects a conversation to be written.",
                hint="use the instruct/chat version of the model (its GGUF carries the template), or convert it "
                "again with a llama.cpp converter that writes the template from tokenizer_config.json",
            )
        return template


def read_gguf_info(path: Path | str) -> GgufInfo:
    """Read `path`'s GGUF header. Raises BackendError for a missing file, another format or a cut-off header."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackendError(f"Model file not found: {path}", hint="check the path to the .gguf file")
    try:
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise BackendError(
                    f"Not a GGUF model file: {path}",
                    hint="--model takes a .gguf file (llama.cpp's format); convert others with `edge export --gguf`",
                )
            version = _read(handle, "<I")
            if version < 2:
                raise BackendError(f"{path.name} is GGUF version {version}; edge reads versions 2 and 3.",
                                   hint="convert the model again with a current llama.cpp")
            n_tensors, n_kv = _count(handle, 8 + 4), _count(handle, 8 + 4)  # each at least a length and a type
            metadata = {}
            for _ in range(n_kv):
                key = _string(handle)
                metadata[key] = _value(handle, _read(handle, "<I"))
            parameters = 0
            for _ in range(n_tensors):
                _string(handle)
                dims = [_read(handle, "<Q") for _ in range(_read(handle, "<I"))]
                _read(handle, "<I")  # tensor type
                _read(handle, "<Q")  # data offset
                parameters += math.prod(dims)
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError) as exc:
        raise BackendError(f"The GGUF header of {path.name} cannot be read ({exc}).",
                           hint="the file may be truncated; download or export it again") from exc
    return GgufInfo(path=path, metadata=metadata, parameters=parameters)


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("unexpected end of file")
    return struct.unpack(fmt, data)[0]


def _count(handle: BinaryIO, least_bytes: int) -> int:
    """A count field, refused when that many items of at least `least_bytes` each cannot fit in what is left.

    A damaged count or length would otherwise ask for exabytes (`MemoryError`,
    `OverflowError`) or loop for hours before reaching the end of the file.
    """
    count = _read(handle, "<Q")
    left = os.fstat(handle.fileno()).st_size - handle.tell()
    if count * least_bytes > left:
        raise ValueError(f"a count or length field says {count}, more than the {left} bytes left in the file")
    return count


def _string(handle: BinaryIO) -> str:
    length = _count(handle, 1)
    data = handle.read(length)
    if len(data) != length:
        raise ValueError("unexpected end of file")
    return data.decode("utf-8")


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        item_kind = _read(handle, "<I")
        count = _count(handle, struct.calcsize(_SCALARS[item_kind]) if item_kind in _SCALARS else 8)
        if item_kind in _SCALARS:
            handle.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
        else:
            for _ in range(count):
                _value(handle, item_kind)
        return {"array_length": count}
    raise ValueError(f"unknown metadata value type {kind}")


def write_gguf_header(path: Path, metadata: dict[str, Any], tensors: dict[str, tuple[int, ...]] | None = None) -> None:
    """Write a GGUF header (no tensor data) with string / int / float / bool metadata: a test fixture."""
    with Path(path).open("wb") as handle:
        tensors = tensors or {}
        handle.write(GGUF_MAGIC + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
        for key, value in metadata.items():
            handle.write(_pack_string(key))
            if isinstance(value, bool):
                handle.write(struct.pack("<I?", 7, value))
            elif isinstance(value, int):
                handle.write(struct.pack("<Iq", 11, value))
            elif isinstance(value, float):
                handle.write(struct.pack("<Id", 12, value))
            else:
                handle.write(struct.pack("<I", _STRING) + _pack_string(str(value)))
        for offset, (name, dims) in enumerate(tensors.items()):
            handle.write(_pack_string(name) + struct.pack("<I", len(dims)))
            handle.write(b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, offset))


def _pack_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data
