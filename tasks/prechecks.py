"""Prechecks as a Prefect task: a table artifact of every check; a failed check stops the move."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from hvmove import names, pipeline, prechecks
from hvmove.hyperv.client import HostClient
from hvmove.models import MoveRequest, PrecheckReport
from hvmove.store import Store
from tasks._common import STEP_OPTIONS, only_transient, recorded


def artifact_key(prefix: str, host: str, vm: str) -> str:
    return names.artifact_key(prefix, host, vm)  # any VM name -> a key Prefect accepts


def report_rows(report: PrecheckReport) -> list[dict[str, str]]:
    return [
        {"check": c.name, "result": c.status.upper(), "detail": c.detail, "remedy": c.remedy}
        for c in report.checks
    ]


@task(
    name="prechecks",
    task_run_name="prechecks-{request.vm}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def prechecks_task(
    client: HostClient,
    store: Store,
    move_id: str,
    request: MoveRequest,
    options: prechecks.Options,
    reserved: dict[str, int] | None = None,
) -> PrecheckReport:
    log = get_run_logger()
    with recorded(store, move_id, "prechecks") as set_state:
        try:
            report = pipeline.run_prechecks(client, store, move_id, request, options, reserved)
        except pipeline.Blocked:
            report = PrecheckReport.model_validate(store.get(move_id).precheck)
            _publish(report)
            for c in report.failures():
                log.error("blocked by %s: %s (remedy: %s)", c.name, c.detail, c.remedy)
            raise
        _publish(report)
        for c in report.checks:
            (log.warning if c.status == "warn" else log.info)(
                "%s %s: %s", c.status.upper(), c.name, c.detail
            )
        if report.already_done:
            set_state("completed", "already at the destination")
        return report


def _publish(report: PrecheckReport) -> None:
    create_table_artifact(
        key=artifact_key("prechecks", report.host, report.vm),
        table=report_rows(report),
        description=f"Prechecks of {report.vm} on {report.host} -> {report.destination}",
    )
