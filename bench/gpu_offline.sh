#!/bin/bash
# Run bench/bench_train_gpu.py on a CUDA machine that has Python 3.12, torch and accelerate but no internet.
#
#   bash bench/gpu_offline.sh prepare      # here, with pip access: wheels and data into .whl/ and .gpu/
#   bash bench/gpu_offline.sh run          # there, in a copy of the repository holding .whl/ and .gpu/
#   AGENT=manager STEPS=4 OUT=/tmp/out bash bench/gpu_offline.sh run
#
# `prepare` downloads the training extras (the versions this repository's tests run) as cp312 manylinux
# wheels, builds edge's own wheel, and copies the bundled tokenizer, conv-26 and llama-cpp-python's
# pure-Python grammar module (edge.train.constrained reads llama.cpp's grammar through it; the compiled
# binding is not needed for training). `run` installs them into /tmp/site and runs the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
case "${1:-}" in
prepare)
    mkdir -p .whl .gpu/tokenizer .gpu/llama_cpp_grammar/llama_cpp
    rm -f .whl/edge_memory-*.whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
        transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 trl==1.16.0 peft==0.21.2 \
        datasets==5.0.1 dill==0.4.1 multiprocess==0.70.19 llguidance==1.9.1 sqlite-vec==0.1.9 \
        sqlean.py==3.50.4.5 dateparser==1.5.0 tzlocal==5.4.5 pytz==2026.6 snowballstemmer==3.1.1 \
        platformdirs==4.14.8 tomli_w==1.2.0 fsspec==2026.6.0
    "$PY" -m pip wheel -q --no-deps --no-build-isolation . -w .whl
    base=$("$PY" -c "from edge.train.base_model import resolve_base; print(resolve_base('bundled').path)")
    cp "$base"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.json,merges.txt} .gpu/tokenizer/
    cp "$base"/chat_template.jinja .gpu/tokenizer/ 2>/dev/null || true
    cp "${LOCOMO:-../shared/data/locomo/conv-26.json}" .gpu/conv-26.json
    grammar=$("$PY" -c "import llama_cpp.llama_grammar as g; print(g.__file__)")
    cp "$grammar" .gpu/llama_cpp_grammar/llama_cpp/
    echo "# llama-cpp-python's grammar module alone" > .gpu/llama_cpp_grammar/llama_cpp/__init__.py
    du -sh .whl .gpu
    ;;
run)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    cp -r .gpu/llama_cpp_grammar/llama_cpp /tmp/site/
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 EDGE_HOME=${EDGE_HOME:-/tmp/edge-home} TOKENIZERS_PARALLELISM=false
    repo=$(pwd)
    out=${OUT:-$repo/bench/results}
    mkdir -p "$out"
    agent=${AGENT:-answer}
    file=$([ "$agent" = answer ] && echo train_gpu || echo "train_gpu_$agent")
    # From /tmp: the repository's own edge/ folder must not shadow the installed wheel (edge.train lives in train/).
    cd /tmp && python3 "$repo/bench/bench_train_gpu.py" --agent "$agent" --steps "${STEPS:-12}" \
        --tokenizer "$repo/.gpu/tokenizer" --locomo "$repo/.gpu/conv-26.json" --out "$out/$file.json" 2>&1 \
        | grep -v "Warning\|warn(" | tee "$out/$file.log"
    ;;
*)
    echo "usage: bash bench/gpu_offline.sh prepare|run" >&2
    exit 2
    ;;
esac
