"""`harness worker`: join this machine to a Ray cluster as a node of its detected hardware profile.

It detects the profile (harness.profiles.detect, as `harness detect` does) and runs

    ray start --address ADDR --resources '{"profile:<id>": 1}'        (a worker node)
    ray start --head --port 6379 --resources '{"profile:<id>": 1}'    (--head)

so that `harness run --executor ray --profile <id>` places that profile's cells here, one model
group at a time (one unit of the resource). ray itself is not imported: its `ray start` command is
run (the [ray] extra installs it).
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys

import click


def ray_start_argv(profile_id: str, address: str | None, head: bool, port: int | None, extra: tuple[str, ...]):
    from harness.executor.ray_node import resources_json

    argv = ["ray", "start"]
    if head:
        argv += ["--head", "--port", str(port or 6379)]
    else:
        argv += ["--address", address]
    return argv + ["--resources", resources_json(profile_id), *extra]


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", default=None, help="host:port of the cluster's head (a worker node).")
@click.option("--head", is_flag=True, help="Start the cluster's head on this machine (it runs cells too).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="--head: the port (default 6379).")
@click.option("--profile", "profile_id", default="auto", show_default=True,
              help="The profile this node advertises; auto detects it.")
@click.option("--profiles-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder of profile YAML files for detection (default: the shipped profiles/).")
@click.option("--dry-run", is_flag=True, help="Print the `ray start` line and run nothing.")
@click.argument("ray_args", nargs=-1, type=click.UNPROCESSED)
def worker(address, head, port, profile_id, profiles_dir, dry_run, ray_args) -> None:
    """Detect this machine's profile and start a Ray node advertising it (extra arguments go to
    `ray start`, e.g. --num-cpus 8 --block)."""
    if head == bool(address):
        raise click.UsageError("give --address HOST:PORT (a worker node) or --head, one of them")
    if profile_id == "auto":
        from harness.profiles import detect

        d = detect(profiles_dir)
        profile_id = d.profile.id
        click.echo(f"profile {profile_id}: {d.reason}", err=True)
    argv = ray_start_argv(profile_id, address, head, port, ray_args)
    click.echo(shlex.join(argv))
    if dry_run:
        return
    ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray):
        raise click.UsageError("the ray command is not installed: pip install 'harness[ray]'")
    os.execv(ray, [ray, *argv[1:]])
