"""Shared fixtures: every test gets its own EDGE_HOME; rebuildable caches persist across runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGE_TEST_CACHE", REPO / ".cache" / "edge"))


def pytest_configure(config: pytest.Config) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    os.environ["EDGE_CACHE"] = str(CACHE)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("EDGE_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set EDGE_RUN_SLOW=1 (bench/ and CI run it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def edge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "edge-home"
    monkeypatch.setenv("EDGE_HOME", str(home))
    monkeypatch.setenv("EDGE_CACHE", str(CACHE))
    return home


@pytest.fixture(scope="session")
def minilm():
    """The real default embedder (all-MiniLM-L6-v2 on onnxruntime)."""
    from edge.export.embedder import build_default_minilm

    return build_default_minilm()


@pytest.fixture(scope="session")
def default_bundle(minilm):
    """The default bundle, built once per machine into the test cache."""
    from edge.bundle import build_default

    target = CACHE / "bundle-default"
    try:
        bundle = build_default(target, log=lambda _: None)  # rebuilt when made by another edge version
        if not bundle.verify():
            return bundle
    except Exception:  # noqa: BLE001 - any problem: rebuild
        pass
    return build_default(target, force=True, log=lambda _: None)


@pytest.fixture(scope="session")
def llama_backend(default_bundle):
    """One llama.cpp backend on the bundled model with the default bundle's adapters, shared by the tests that
    only read from it (adapter=None asks the base model)."""
    from edge.backends.llama_cpp import LlamaCppBackend
    from edge.prompts import REPEAT_PENALTY

    model, _ = default_bundle.role("answer")
    backend = LlamaCppBackend(model, n_ctx=4096, repeat_penalty=REPEAT_PENALTY,
                              adapters=default_bundle.adapter_paths() or None)
    yield backend
    backend.close()


# ----------------------------------------------------------------------------- a real model server


class LocalServer:
    """`python -m llama_cpp.server` on the bundled model, on a port of its own (stopped and started by tests)."""

    def __init__(self, log_path: Path, port: int | None = None, n_ctx: int = 4096) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.n_ctx = n_ctx
        self.process = None

    def start(self, timeout: float = 90) -> "LocalServer":
        import subprocess
        import sys
        import time

        import httpx

        from edge.models import bundled_gguf_path

        threads = str(max(1, (os.cpu_count() or 2) // 2))
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
             "--n_threads", threads, "--n_threads_batch", threads],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited early:\n{self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer /v1/models within {timeout} s")
            time.sleep(0.3)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash or a closed laptop lid would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """A real OpenAI-compatible server (llama-cpp-python's) on the bundled model, for a test module."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    server = LocalServer(tmp_path_factory.mktemp("server") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the bundled model, in a process of its own."""
    import subprocess
    import sys
    import time

    import httpx

    from edge.models import bundled_gguf_path

    port = free_port()
    threads = str(max(1, (os.cpu_count() or 2) // 2))
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
         "--n_threads", threads, "--n_threads_batch", threads],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited early:\n{log.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
