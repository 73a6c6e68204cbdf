"""`harness sensitivity`: which blocks or layers a variant hurts most, and a mixed-precision policy
that keeps the worst ones in high precision. Register with `main.add_command(sensitivity)`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.models.spec import EMBEDDED_DEFAULT
from harness.quality.settings import SensitivitySettings

S = SensitivitySettings()
SYNTHETIC_NOTE = ("random weights and random token ids (synthetic model): KL measures how far the variant "
                  "moves a random model's outputs, i.e. numerical fragility, not language-model quality")


def _help(name: str) -> str:
    return SensitivitySettings.__dataclass_fields__[name].metadata["help"]


@click.command()
@click.option("--model", default=EMBEDDED_DEFAULT, show_default=True,
              help="smollm2-135m (embedded, real weights), synthetic:<preset>, a safetensors folder or a .gguf file.")
@click.option("--variant", required=True, help="A registered variant name (without @policy).")
@click.option("--granularity", type=click.Choice(["block", "linear"]), default=S.granularity, show_default=True,
              help=_help("granularity"))
@click.option("--tokens", type=click.IntRange(1), default=S.tokens, show_default=True, help=_help("tokens"))
@click.option("--window", type=click.IntRange(1), default=S.window, show_default=True, help=_help("window"))
@click.option("--stride", type=click.IntRange(1), default=S.stride, show_default=True, help=_help("stride"))
@click.option("--top-k", type=click.IntRange(1), default=S.top_k, show_default=True, help=_help("top_k"))
@click.option("--target-kl", type=click.FloatRange(0), default=S.target_kl, show_default=True,
              help=_help("target_kl"))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--corpus", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="UTF-8 text file (default: pydoc_data.topics prose).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: results/sensitivity-<UTC time>-<model>-<variant>/).")
def sensitivity(model: str, variant: str, granularity: str, tokens: int, window: int, stride: int, top_k: int,
                target_kl: float, device: str, corpus: Path | None, out: Path | None) -> None:
    """Apply VARIANT to one block (or one linear layer) at a time, rank the groups by the mean KL
    divergence from the baseline they cause, and measure mixed models that keep the k most
    sensitive groups in high precision (k = 0..top-k).

    Writes sensitivity.json, sensitivity.png and policy.txt (usable as VARIANT@policy.txt) into
    the output folder, whose path is the last line printed. Progress goes to stderr.
    """
    import torch

    from harness.backends.pytorch.backend import (CALIBRATION_SEED, CALIBRATION_SEQS, CALIBRATION_TOKENS,
                                             compute_dtype, resolve_device)
    from harness.corpus import load_corpus
    from harness.models import ModelSpecError, load_model
    from harness.provenance import utc_now
    from harness.quality.sensitivity import scan
    from harness.quality.sensitivity_output import table, write_outputs
    from harness.variants import get_variant, split_policy

    def echo(s: str) -> None:
        click.echo(s, err=True)

    try:
        settings = SensitivitySettings(granularity, tokens, window, stride, top_k, target_kl)
        qsettings = settings.quality()
        base, pol = split_policy(variant)
        if pol is not None:
            raise ValueError(f"--variant {variant!r}: give the bare variant name; the scan builds its own policies")
        v = get_variant(base)
        dev = resolve_device(device)
        cc = torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None
        why = v.unsupported_reason(dev.type, cc)
        if why:
            raise ValueError(why)
        corpus_name, corpus_text = load_corpus(corpus)
        echo(f"loading {model} ...")
        loaded = load_model(model)
    except (ValueError, ModelSpecError) as e:
        raise click.UsageError(str(e)) from None

    dtype = compute_dtype(dev)
    notes = []
    ids = loaded.token_ids(corpus_name, corpus_text)
    if ids is None:
        ids, _ = loaded.prompt_ids(corpus_name, corpus_text, 1, qsettings.tokens + 1, seed=0)
        notes.append(SYNTHETIC_NOTE)
        echo(f"note: {SYNTHETIC_NOTE}")
    calib, _ = loaded.prompt_ids(corpus_name, corpus_text, CALIBRATION_SEQS, CALIBRATION_TOKENS,
                                 seed=CALIBRATION_SEED, from_end=True)
    report = scan(lambda: loaded.instantiate(dev, dtype), v, ids.reshape(-1), qsettings, device_type=dev.type,
                  dtype=dtype, granularity=granularity, top_k=top_k, calibration_ids=calib.to(dev),
                  target_kl=target_kl, model_name=model, progress=echo)
    report.notes[:0] = notes
    slug = f"{model}-{base}".replace("synthetic:", "").replace("/", "_").replace(":", "_")[-60:]
    out_dir = out or Path("results") / f"sensitivity-{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{slug}"
    write_outputs(report, out_dir)
    click.echo(table(report))
    click.echo(f"scan took {report.elapsed_s:.1f} s; policy: {out_dir / 'policy.txt'}")
    click.echo(str(out_dir))


if __name__ == "__main__":
    sys.exit(sensitivity())
