"""`hvmove deploy`: register deployments/prefect.yaml with every value a worker needs fixed at
deploy time, taken from hvmove.yaml: the schedule runs ``defaults.start_ahead_minutes`` before
the window's start in the config's time zone, so schedule, window and planner agree (DST
included: Prefect's cron schedules follow the zone's clock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from hvmove.cli.app import ConfigOpt, app, friendly, prefect_api
from hvmove.cli.render import out, plain
from hvmove.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]


def deploy_values(
    config: Path | None, plan: Path, project_dir: Path, pool: str = "hvmove"
) -> dict[str, str]:
    """The deploy-time variables deployments/prefect.yaml names, from the validated config."""
    from hvmove.config import load
    from hvmove.plans import load_plan

    cfg = load(config)
    load_plan(plan)  # a broken plan is one line now, not a failed night
    start = cfg.defaults.window.split("-")[0].strip()
    hours, minutes = (int(x) for x in start.split(":"))
    # ahead of the window, on the config zone's clock (cron fields wrap at midnight)
    hours, minutes = divmod((hours * 60 + minutes - cfg.defaults.start_ahead_minutes) % 1440, 60)
    assert cfg.path is not None
    return {
        "HVMOVE_PROJECT_DIR": str(project_dir.resolve()),
        "HVMOVE_CONFIG": str(cfg.path.resolve()),
        "HVMOVE_PLAN": str(plan.resolve()),
        "HVMOVE_TIMEZONE": cfg.defaults.timezone,
        "HVMOVE_NIGHT_CRON": f"{minutes} {hours} * * *",
        "HVMOVE_POOL": pool,
    }


def _prefect(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@app.command()
@friendly
def deploy(
    plan: Annotated[Path, typer.Option("--plan", help="the nightly plan file, as workers see it")],
    config: ConfigOpt = None,
    project_dir: Annotated[
        Path, typer.Option("--project-dir", help="the project folder on the workers")
    ] = PROJECT,
    pool: Annotated[str, typer.Option("--pool", help="process work pool (made if missing)")] = (
        "hvmove"
    ),
) -> None:
    """Register the nightly, migrate-vm and inventory deployments on the Prefect API your
    settings name. Paths are stored as given here: workers need the same paths, the code
    installed, and PREFECT_API_URL; nothing else from this shell."""
    values = deploy_values(config, plan, project_dir, pool)
    api = prefect_api()
    env = {**os.environ, **values, "PREFECT_API_URL": api}
    if _prefect("work-pool", "inspect", pool, env=env, cwd=PROJECT).returncode != 0:
        made = _prefect("work-pool", "create", pool, "--type", "process", env=env, cwd=PROJECT)
        if made.returncode != 0:
            raise ConfigError(f"cannot create work pool {pool!r}: {made.stderr.strip()[-500:]}")
    done = _prefect(
        "--no-prompt",
        "deploy",
        "--all",
        "--prefect-file",
        str(PROJECT / "deployments" / "prefect.yaml"),
        env=env,
        cwd=PROJECT,
    )
    if done.returncode != 0:
        raise ConfigError(f"prefect deploy failed: {(done.stdout + done.stderr).strip()[-1500:]}")
    out.print(f"deployed to {plain(api)} (work pool {plain(pool)}):")
    for key, value in values.items():
        out.print(f"  {key} = {plain(value)}")
    out.print(f"start a worker: prefect worker start --pool {plain(pool)}")
