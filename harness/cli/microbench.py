"""`harness import-microbench`: pytest-benchmark JSON -> records.jsonl / .csv / .parquet."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("import-microbench")
@click.argument("json_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: beside the JSON, named after it). Records already in its "
                   "records.jsonl are kept; the tables are rewritten from the whole file.")
@click.option("--profile", default="unknown", show_default=True,
              help="Hardware profile id to key the records by (the JSON names none).")
def import_microbench(json_path: Path, out: Path | None, profile: str) -> None:
    """Turn `make microbench` output (pytest-benchmark --benchmark-json) into harness Records.

    Prints the output folder.
    """
    from harness.microbench import records_from_benchmark_json
    from harness.records import append_jsonl, read_jsonl, write_tables

    try:
        records = records_from_benchmark_json(json_path, profile=profile)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    out = out or json_path.with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "records.jsonl"
    for r in records:
        append_jsonl(jsonl, r)
    write_tables(read_jsonl(jsonl), out)
    click.echo(f"{len(records)} records from {json_path}", err=True)
    click.echo(str(out))
