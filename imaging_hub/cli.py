"""The ``imaging-hub`` command.

The core defines the command group and the commands that need only the core (``db``, ``jobs``,
``users``, ``import``, ``serve``). The front ends add their own commands (``scp``, ``api``,
``worker``) through the ``imaging_hub.commands`` entry-point group, so the core never imports
them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import click
import structlog

from imaging_hub.config import Settings, load_settings
from imaging_hub.errors import ConfigError
from imaging_hub.logging import configure_logging

if TYPE_CHECKING:
    from imaging_hub.hub import Hub
    from imaging_hub.supervisor import Receivers

__all__ = [
    "cannot_listen",
    "hub_command",
    "main",
    "open_checked_hub",
    "pass_settings",
    "receiver_children",
]

log = structlog.get_logger(__name__)


class HubGroup(click.Group):
    """A command group that also lists the front ends' commands found as entry points."""

    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group="imaging_hub.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in and front-end commands, sorted."""
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, or load a front end's command on first use."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._plugins().get(cmd_name)
        return ep.load() if ep is not None else None


@click.group(cls=HubGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: $HUB_CONFIG). Environment variables win over it.",
)
@click.version_option(package_name="imaging-hub")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Imaging Hub: receive, index and serve DICOM studies for the whole clinic."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level)
    ctx.obj = settings


pass_settings = click.make_pass_decorator(Settings)


@main.group()
def db() -> None:
    """Index database maintenance."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_settings
def db_upgrade(settings: Settings, revision: str) -> None:
    """Apply the schema migrations to the index database."""
    from imaging_hub.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, revision)
    click.echo(f"index database is at revision {revision}")


@main.group()
def jobs() -> None:
    """Inspect and retry background work."""


@jobs.command("list")
@click.option("--state", default=None, help="Only jobs in this state (queued, failed, …).")
@click.option("--limit", default=50, show_default=True)
@pass_settings
def jobs_list(settings: Settings, state: str | None, limit: int) -> None:
    """List recent jobs with their state and last error."""
    from imaging_hub.hub import Hub
    from imaging_hub.jobs import recent_jobs

    hub = Hub.open(settings)
    try:
        for job in recent_jobs(hub.db, state=state, limit=limit):
            error = (job.last_error or "").splitlines()[-1:] or [""]
            click.echo(f"{job.id}\t{job.kind}\t{job.state}\t{job.attempts}\t{error[0]}")
    finally:
        hub.close()


@jobs.command("retry")
@click.argument("job_ids", nargs=-1, type=int)
@pass_settings
def jobs_retry(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Queue failed jobs again (all failed jobs when no IDs are given)."""
    from imaging_hub.hub import Hub
    from imaging_hub.jobs import retry_failed

    hub = Hub.open(settings)
    try:
        count = retry_failed(hub.db, list(job_ids) or None)
    finally:
        hub.close()
    click.echo(f"{count} job(s) queued again")


@main.group()
def users() -> None:
    """User accounts: add, list, disable, reset passwords."""


def _read_password(from_stdin: bool) -> str:
    """A new password: the first line of stdin, or typed twice at a hidden prompt."""
    if not from_stdin:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("no password on standard input")
    return password


def _account_command(settings: Settings, action: Callable[[Hub], str]) -> None:
    """Run an account action on the migrated index and print its result, or a clean error."""
    from imaging_hub.errors import HubError

    hub = open_checked_hub(settings)
    try:
        click.echo(action(hub))
    except (HubError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        hub.close()


_password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, help="clinician, radiology or admin.")
@click.option("--specialty", default=None, help="e.g. neurosurgery, physiatry, pain-medicine.")
@_password_stdin
@pass_settings
def users_add(
    settings: Settings, name: str, role: str, specialty: str | None, password_stdin: bool
) -> None:
    """Create a user with a role (and optionally a specialty)."""
    from imaging_hub.auth import LoginPolicy, create_user

    password = _read_password(password_stdin)
    policy = LoginPolicy.from_settings(settings)

    def add(hub: Hub) -> str:
        user = create_user(hub.db, name, password, role=role, specialty=specialty, policy=policy)
        return f"user {user.username} created with role {user.role}"

    _account_command(settings, add)


@users.command("list")
@pass_settings
def users_list(settings: Settings) -> None:
    """List users: name, role, specialty, state, last login."""
    from imaging_hub.auth import list_users
    from imaging_hub.db.models import utcnow

    def show(hub: Hub) -> str:
        now, lines = utcnow(), []
        for u in list_users(hub.db):
            state = "disabled" if u.disabled else "active"
            if u.locked_until is not None and u.locked_until > now:
                state += ",locked"
            last = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "-"
            lines.append(f"{u.username}\t{u.role}\t{u.specialty or '-'}\t{state}\t{last}")
        return "\n".join(lines) or "no users"

    _account_command(settings, show)


@users.command("disable")
@click.argument("name")
@pass_settings
def users_disable(settings: Settings, name: str) -> None:
    """Disable a user: no more logins, and their tokens stop working."""
    from imaging_hub.auth import set_disabled

    _account_command(settings, lambda hub: f"user {set_disabled(hub.db, name).username} disabled")


@users.command("enable")
@click.argument("name")
@pass_settings
def users_enable(settings: Settings, name: str) -> None:
    """Enable a disabled user again."""
    from imaging_hub.auth import set_disabled

    _account_command(
        settings, lambda hub: f"user {set_disabled(hub.db, name, False).username} enabled"
    )


@users.command("reset-password")
@click.argument("name")
@_password_stdin
@pass_settings
def users_reset_password(settings: Settings, name: str, password_stdin: bool) -> None:
    """Set a new password, unlock the account and revoke its tokens."""
    from imaging_hub.auth import LoginPolicy, reset_password

    password = _read_password(password_stdin)
    policy = LoginPolicy.from_settings(settings)

    def reset(hub: Hub) -> str:
        user = reset_password(hub.db, name, password, policy=policy)
        return f"password of {user.username} reset"

    _account_command(settings, reset)


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@pass_settings
def import_(settings: Settings, paths: tuple[Path, ...]) -> None:
    """Import folders, DICOMDIR media and zip files (e.g. outside CDs) into the hub."""
    from imaging_hub.importer import collect, import_items

    hub = open_checked_hub(settings)
    try:
        items = collect(list(paths))
        with click.progressbar(length=len(items), label="Importing", show_pos=True) as bar:
            summary = import_items(hub, items, progress=lambda _item: bar.update(1))
    finally:
        hub.close()
    click.echo(
        f"{summary.stored} stored, {summary.duplicates} already present, "
        f"{summary.skipped} not DICOM, {len(summary.rejected)} rejected"
    )
    for label, reason in summary.rejected:
        click.echo(f"rejected {label}: {reason}", err=True)
    if summary.rejected:
        sys.exit(1)


@main.command()
@pass_settings
def serve(settings: Settings) -> None:
    """Run everything on this machine: receiver, API and a worker (embedded by default)."""
    from imaging_hub.db.migrate import upgrade
    from imaging_hub.jobs import FAST, SLOW
    from imaging_hub.supervisor import Supervisor

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    base = hub_command(settings)
    children = receiver_children(settings)
    commands = children.commands
    commands["api"] = [*base, "api"]
    # Indexing keeps up with receiving; previews wait while the receivers are busy (up to
    # HUB_WORKER_YIELD_SECONDS in a row) and render at a lower CPU priority.
    commands["worker"] = [*base, "worker", "--queues", FAST]
    renderer = ["--queues", SLOW, "--no-relay", "--nice", "10", "--yield-to-receivers"]
    commands["renderer"] = [*base, "worker", *renderer]
    env = {"HUB_DATA_DIR": str(settings.data_dir.resolve())}
    supervisor = Supervisor(commands, env=env, pass_fds=children.pass_fds)
    click.echo(
        f"Imaging Hub: DICOM {settings.dicom_aet}@{settings.dicom_host}:{settings.dicom_port}, "
        f"HTTP http://{settings.http_host}:{settings.http_port}/, data in {settings.data_dir}"
    )
    sys.exit(supervisor.run())


def receiver_children(settings: Settings) -> Receivers:
    """The receiver processes to supervise; a clear error when the DICOM port is taken."""
    from imaging_hub.supervisor import receivers

    host, port, processes = settings.dicom_host, settings.dicom_port, settings.receiver_processes
    try:
        return receivers(hub_command(settings), host, port, processes)
    except OSError as exc:
        raise cannot_listen(settings, exc) from None


def cannot_listen(settings: Settings, exc: OSError) -> click.ClickException:
    """The error to show when the DICOM port cannot be opened (e.g. another program has it)."""
    return click.ClickException(
        f"cannot listen on {settings.dicom_host}:{settings.dicom_port}: {exc.strerror}"
    )


def hub_command(settings: Settings) -> list[str]:
    """The command line that runs ``imaging-hub`` with these settings' config file."""
    base = [sys.executable, "-m", "imaging_hub"]
    if settings.config is not None:
        base += ["--config", str(settings.config)]
    return base


def open_checked_hub(settings: Settings) -> Hub:
    """Open the hub for a long-running command; exit with a clear message if it cannot start."""
    from imaging_hub.hub import Hub

    try:
        return Hub.open(settings, check_schema=True)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
