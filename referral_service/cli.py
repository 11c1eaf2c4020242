"""`referral-service` command line (click, as Flask's own CLI)."""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from kombu.exceptions import OperationalError as KombuOperationalError
from marshmallow import ValidationError
from sqlalchemy.exc import OperationalError

from referral_service.config import ConfigError, Settings
from referral_service.crypto import KeyringError
from referral_service.domain.errors import DomainError
from referral_service.files import UMASK

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def operator_errors(fn: F) -> F:
    """Configuration, key and connection problems end the command with one line, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, KeyringError) as exc:
            _fail(str(exc))
        except DomainError as exc:
            details = "; ".join(
                f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in exc.fields.items()
            )
            _fail(f"{exc.message}{' (' + details + ')' if details else ''}")
        except OperationalError as exc:
            _fail(
                f"REFERRAL_DATABASE_URL: cannot use the database ({type(exc.orig).__name__ if exc.orig else 'error'})"
                "; is it running and reachable?"
            )
        except (KombuOperationalError, ConnectionError) as exc:
            _fail(f"REFERRAL_BROKER_URL: cannot reach the broker ({type(exc).__name__}); is it running and reachable?")

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    return Settings.from_env()


def _services(settings: Settings | None = None, *, check_keys: bool = True) -> Any:
    from referral_service.bootstrap import bootstrap
    from referral_service.services.access import RequestContext, set_request_context
    from referral_service.services.keys import verify_keys

    # What this command does is audited as the operating-system account that ran it.
    set_request_context(RequestContext(request_id=uuid.uuid4().hex, operator=f"os:{_os_user()}", via="cli"))

    services = bootstrap(settings or _settings())
    if check_keys:
        with services.uow() as uow:
            _require_schema(uow.session)
        verify_keys(services)
    return services


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _require_schema(session: Any) -> None:
    from sqlalchemy import inspect

    if not inspect(session.get_bind()).has_table("referrals"):
        raise ConfigError("REFERRAL_DATABASE_URL: the database has no schema; run 'referral-service init' first")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def main(verbose: bool) -> None:
    """Victim Assistance Network referral service."""
    # Before any command creates a file (database, WAL, keyring, folders): none is for other users.
    os.umask(UMASK)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "kombu.connection"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
@operator_errors
def init() -> None:
    """Create or upgrade the database schema; on the embedded profile, create a dev keyring."""
    from referral_service.bootstrap import bootstrap, prepare_database
    from referral_service.crypto.keyring import create_keyring

    settings = _settings()
    if settings.database_url.startswith("sqlite") and not settings.keyring_path.exists():
        create_keyring(settings.keyring_path)
        click.echo(f"created a development keyring at {settings.keyring_path} (keep it secret; back it up)")
    services = bootstrap(settings)
    report = prepare_database(services)
    click.echo(f"database schema is at head: {services.engine.url.render_as_string(hide_password=True)}")
    if report.followups_sealed or report.followup_events_scrubbed:
        click.echo(
            f"{report.followups_sealed} free-text follow-up outcome(s) moved into their sealed notes, "
            f"{report.followup_events_scrubbed} outbox event(s) cleaned"
        )
    if report.idempotency_keys_dropped:
        click.echo(f"{report.idempotency_keys_dropped} plaintext idempotency key(s) of an earlier version deleted")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@operator_errors
def run(host: str, port: int, threads: int) -> None:
    """The whole service in one process: HTTP API and pages, relay, router, deadline scheduler, audit integrator."""
    from referral_service.app import create_app
    from referral_service.http_server import waitress_server
    from referral_service.malloc import limit_arenas
    from workers.runtime import Runtime

    limit_arenas()  # before any thread: one process of many threads for as long as it runs
    services = _services()
    runtime = Runtime(services)
    runtime.start()
    server = waitress_server(create_app(services), host=host, port=port, threads=threads)
    # Only interrupt the loop: waitress then lets its request threads finish (they still signal the loop's
    # trigger as they end), and the server is closed after that, not under them.
    _on_stop_signal(lambda: None)
    click.echo(
        f"referral-service listening on http://{host}:{server.effective_port} "
        f"({'embedded' if services.settings.embedded else 'custom'} profile)"
    )
    try:
        server.run()
    finally:
        server.close()
        runtime.shutdown()
        services.dispose()
        click.echo("stopped")


def _on_stop_signal(callback: Callable[[], None]) -> None:
    def handler(signum: int, _frame: Any) -> None:
        callback()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 - containers listen on all
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "workers_", default=2, show_default=True, type=int)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Request threads per worker; above 1, gunicorn's gthread workers (keep-alive, overlapping database waits).",
)
@operator_errors
def serve(host: str, port: int, workers_: int, threads: int) -> None:
    """The HTTP API under gunicorn (production)."""
    from gunicorn.app.base import BaseApplication

    from referral_service.http_server import GUNICORN_LIMITS, hide_gunicorn_banner

    _services().dispose()  # fail fast, in one line, before gunicorn forks
    hide_gunicorn_banner()
    metrics_dir, made_metrics_dir = _multiprocess_metrics_dir()

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for name, value in GUNICORN_LIMITS.items():
                self.cfg.set(name, value)
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers_)
            if threads > 1:
                self.cfg.set("worker_class", "gthread")
                self.cfg.set("threads", threads)
            # No gunicorn access log: it would write the path as the client sent it (decoded), and a client
            # can put anything there. The app logs each request by its route instead (app.py, `_observe`).
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("child_exit", _metrics_child_exit)
            if made_metrics_dir:
                self.cfg.set("on_exit", lambda _arbiter: shutil.rmtree(metrics_dir, ignore_errors=True))

        def load(self) -> Any:
            from referral_service.app import create_app

            return create_app(_services(check_keys=False))

    _Gunicorn().run()


def _multiprocess_metrics_dir() -> tuple[Path, bool]:
    """Where gunicorn's workers keep their Prometheus samples, so that a scrape sums every worker's
    (prometheus-client multiprocess mode). Set before any worker imports prometheus-client. An operator's
    PROMETHEUS_MULTIPROC_DIR is used and emptied of an earlier run's samples; else a private temporary
    folder, removed at exit. Returns the folder and whether it was made here."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="referral-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def _metrics_child_exit(_arbiter: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


@main.command()
@click.argument("name", type=click.Choice(["relay", "router", "deadlines", "integrator", "notify", "all"]))
@operator_errors
def worker(name: str) -> None:
    """Run one worker (or all) in this process; start as many processes as you need."""
    from referral_service.malloc import limit_arenas
    from workers.runtime import WORKERS, Runtime

    limit_arenas()  # before any thread (`all` runs every worker in threads of this process)
    services = _services()
    runtime = Runtime(services)
    _on_stop_signal(runtime.stop.set)
    runtime.start(WORKERS if name == "all" else (name,))
    click.echo(f"worker {name} running")
    try:
        runtime.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.shutdown()
        services.dispose()
        click.echo("stopped")


@main.command()
@operator_errors
def demo() -> None:
    """Seed demo partner organisations and one user per role; print their sign-in details."""
    from referral_service.services import partners, users
    from schemas import PartnerSchema

    services = _services()
    raw = json.loads((Path(__file__).parent / "data" / "demo_partners.json").read_text())
    loaded = PartnerSchema(many=True).load(raw)
    partners.upsert_partners(services, loaded)
    click.echo(f"{len(loaded)} demo partner organisations loaded")
    people = [
        ("caseworker", "demo-caseworker", None),
        ("supervisor", "demo-supervisor", None),
        ("partner", "demo-partner", loaded[0]["id"]),
        ("auditor", "demo-auditor", None),
        ("admin", "demo-admin", None),
        ("analyst", "demo-analyst", None),
    ]
    for role, name, partner_id in people:
        created = users.ensure_demo_user(services, name=name, role=role, partner_id=partner_id)
        click.echo(json.dumps(created))
    services.dispose()


@main.group("users")
def users_group() -> None:
    """Manage users."""


@users_group.command("create")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["caseworker", "supervisor", "partner", "auditor", "admin", "analyst"]),
)
@click.option("--name", required=True)
@click.option("--partner", "partner_id", default=None, help="Partner id (partner staff only).")
@click.option("--password-stdin", is_flag=True, help="Read a web sign-in password from standard input.")
@operator_errors
def users_create(role: str, name: str, partner_id: str | None, password_stdin: bool) -> None:
    """Create a user; print one JSON object with its id and bearer token (shown once)."""
    from referral_service.services import users

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if password_stdin and (not password or len(password) < 10):
        _fail("the password must be at least 10 characters")
    services = _services()
    click.echo(json.dumps(users.create_user(services, name=name, role=role, partner_id=partner_id, password=password)))
    services.dispose()


@users_group.command("revoke")
@click.argument("user_id")
@operator_errors
def users_revoke(user_id: str) -> None:
    """End a user's access everywhere at once: deactivated, API tokens revoked, web sessions ended."""
    from referral_service.services import users

    services = _services()
    done = users.revoke_user(services, user_id)
    click.echo(
        f"revoked user {done['id']}: deactivated (password sign-in refused), "
        f"{done['tokens_revoked']} API token(s) revoked, {done['sessions_ended']} web session(s) ended"
    )
    services.dispose()


@main.group("partners")
def partners_group() -> None:
    """Manage the partner directory."""


@partners_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option(
    "--default-capacity",
    default=10,
    show_default=True,
    type=click.IntRange(min=0, max=100000),
    help="Capacity for new partners from HSDS data (HSDS has no such field).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@operator_errors
def partners_import(file: Path, default_capacity: int, dry_run: bool) -> None:
    """Load or update partners: a JSON list of partner objects, or Open Referral HSDS 3 data
    (one organization, a list, an API page or a folder of pages, a tabular datapackage folder or zip).

    Prints new / updated / unchanged / skipped (with the reason) per organization; all or nothing."""
    from referral_service.services import partners
    from referral_service.services.hsds import HsdsFileError, convert_records, read_directory_source

    try:
        converted = convert_records(read_directory_source(file), capacity=default_capacity)
    except HsdsFileError as exc:
        _fail(str(exc))
    for record in converted:
        _validate_partner(record)
        for warning in record.warnings:
            click.echo(f"warning: {warning}", err=True)
    services = _services()
    lines = partners.import_partners(services, converted, dry_run=dry_run)
    services.dispose()
    for line in lines:
        detail = f" ({', '.join(line.changed)})" if line.changed else ""
        detail = f": {line.reason}" if line.reason else detail
        click.echo(f"{line.outcome:<9}  {line.partner_id or '-'}  {line.label}{detail}")
    counts = {k: sum(1 for line in lines if line.outcome == k) for k in ("new", "updated", "unchanged", "skipped")}
    click.echo(
        ", ".join(f"{n} {k}" for k, n in counts.items())
        + (
            "; dry run: nothing was changed"
            if dry_run
            else f"; imported {len(lines) - counts['skipped']} partner(s) in one transaction"
        )
    )


def _validate_partner(record: Any) -> None:
    """Validate one converted record as a partner object; a failure skips it with the reason."""
    from schemas import PartnerSchema

    if record.partner is None:
        return
    try:
        record.partner = PartnerSchema().load(record.partner)
    except ValidationError as exc:
        record.partner = None
        messages = exc.messages if isinstance(exc.messages, dict) else {"record": exc.messages}
        record.reason = "; ".join(
            f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else json.dumps(v)}" for k, v in messages.items()
        )[:300]


@partners_group.command("webhook")
@click.argument("partner_id")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    help="Only these event types (repeat); default: assignment.offered, assignment.withdrawn, "
    "followup.due, followup.overdue.",
)
@operator_errors
def partners_webhook(partner_id: str, url: str, events: tuple[str, ...]) -> None:
    """Register the partner's webhook endpoint (Standard Webhooks); print its signing secret once.

    Only https:// URLs to public addresses, unless REFERRAL_WEBHOOK_ALLOW_PRIVATE=1. Registering again
    replaces the URL and the secret."""
    from referral_service.services.webhooks import WEBHOOK_EVENTS, register_webhook

    services = _services()
    click.echo(json.dumps(register_webhook(services, partner_id, url, events or WEBHOOK_EVENTS)))
    services.dispose()


@main.group("keys")
def keys_group() -> None:
    """Manage the keyring."""


@keys_group.command("init")
@operator_errors
def keys_init() -> None:
    """Create a new keyring at REFERRAL_KEYRING (refuses to overwrite one)."""
    from referral_service.crypto.keyring import create_keyring

    settings = _settings()
    kek = create_keyring(settings.keyring_path)
    click.echo(f"created keyring {settings.keyring_path} with active key {kek}")


@keys_group.command("rotate")
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Data keys re-wrapped per transaction.",
)
@click.option(
    "--pause",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait between batches, to spare a busy database.",
)
@click.option("--resume", is_flag=True, help="Only re-wrap (after an interrupted rotation); no new key.")
@operator_errors
def keys_rotate(batch_size: int, pause: float, resume: bool) -> None:
    """Make a new KEK active and re-wrap every data key under it, online and resumable.

    Each batch commits on its own, so a crash loses at most one batch of work: run
    `keys rotate --resume` to finish. Running services pick the new KEK up from the keyring file.
    """
    from referral_service.services import keys

    services = _services()
    if not resume:
        click.echo(f"new active key-encryption key: {keys.start_rotation(services)}")
    with click.progressbar(length=keys.keys_to_rewrap(services), label="re-wrapping data keys", file=sys.stderr) as bar:
        result = keys.rotate(services, batch_size=batch_size, pause=pause, progress=bar.update)
    click.echo(f"done; data keys per key-encryption key: {json.dumps(result.usage)}")
    for d in result.damaged:
        click.echo(f"damaged: {json.dumps(d.as_dict())}", err=True)
    if result.damaged:
        click.echo(
            f"warning: {len(result.damaged)} damaged data key(s) do not open, so they were not re-wrapped "
            "and stay under their old key-encryption key; 'referral-service records check' lists every "
            "damaged record",
            err=True,
        )
    services.dispose()


@keys_group.command("reindex")
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Subjects re-indexed per transaction.",
)
@operator_errors
def keys_reindex(batch_size: int) -> None:
    """Re-key the CNIC/phone blind indexes (version N -> N+1) while the service keeps serving.

    Lookups ask both versions until the switch; rerun after a crash and it carries on.
    """
    from referral_service.services import keys

    services = _services()
    plan = keys.begin_reindex(services)
    click.echo(f"re-indexing blind indexes: version {plan.old} -> {plan.new}")
    with click.progressbar(length=plan.remaining, label="re-indexing subjects", file=sys.stderr) as bar:
        result = keys.reindex(services, batch_size=batch_size, progress=bar.update)
    click.echo(f"done; blind index version {result.new} is active ({result.dropped} old index rows removed)")
    if result.damaged:
        click.echo(
            f"warning: {len(result.damaged)} subject(s) skipped, damaged (their CNIC or phone does not open, "
            f"so they are not in the new index): {' '.join(result.damaged)}",
            err=True,
        )
    services.dispose()


@keys_group.command("status")
@operator_errors
def keys_status() -> None:
    """Print the active KEK, data keys per KEK and the blind-index versions, as one JSON object."""
    from referral_service.services import keys

    services = _services()
    click.echo(json.dumps(keys.status(services)))
    services.dispose()


@keys_group.command("retire")
@click.argument("kek_id")
@operator_errors
def keys_retire(kek_id: str) -> None:
    """Remove an old KEK from the keyring once no data key uses it."""
    from referral_service.services import keys

    services = _services()
    keys.retire(services, kek_id)
    click.echo(f"retired {kek_id}")


@main.group("records")
def records_group() -> None:
    """Check stored records."""


@records_group.command("check")
@click.option(
    "--batch-size", default=500, show_default=True, type=click.IntRange(min=1), help="Rows read per transaction."
)
@operator_errors
def records_check(batch_size: int) -> None:
    """List damaged records: every wrapped data key and sealed field that does not open.

    One JSON line per damaged record (table, row_id, column, subject_id, error), then a summary line.
    Nothing personal is printed or logged. Exit status 1 when any record is damaged, 0 when none.
    """
    from referral_service.services.records import check_records

    services = _services()
    summary = check_records(services, lambda d: click.echo(json.dumps(d.as_dict())), batch_size=batch_size)
    click.echo(json.dumps({"summary": summary.as_dict()}))
    services.dispose()
    sys.exit(1 if summary.damaged else 0)


@main.group("subjects")
def subjects_group() -> None:
    """Manage subjects (victims) as data subjects."""


@subjects_group.command("erase")
@click.argument("subject_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@operator_errors
def subjects_erase(subject_id: str, yes: bool) -> None:
    """Crypto-shredding: destroy the subject's data key; their fields become unreadable everywhere."""
    from referral_service.services.subjects import erase_subject

    if not yes and sys.stdin.isatty():
        click.confirm(f"Erase subject {subject_id} for good?", abort=True)
    services = _services()
    for warning in erase_subject(services, subject_id):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"subject {subject_id} erased")


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log: verify it, publish its key and checkpoints."""


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An earlier signed checkpoint (kept outside the database): also prove the log extends it.",
)
@click.option("--nodes", is_flag=True, help="Also check every stored tree node proofs are served from.")
@operator_errors
def audit_verify(checkpoint_file: Path | None, nodes: bool) -> None:
    """Recompute every entry's leaf and the tree, check the signed checkpoint; exit 1 naming the first bad entry."""
    from referral_service.services.audit import integrate_all, verify

    services = _services()
    integrate_all(services)  # what was written before this command is checked too
    earlier = checkpoint_file.read_text(encoding="utf-8") if checkpoint_file else None
    report = verify(services, earlier=earlier, nodes=nodes)
    services.dispose()
    if report.ok:
        click.echo(report.line())
        click.echo(report.head or "", nl=False)
        sys.exit(0)
    click.echo(report.line(), err=True)
    sys.exit(1)


@audit_group.command("key")
@operator_errors
def audit_key() -> None:
    """Print the log's verifier key (C2SP signed-note form NAME+KEYID+BASE64, Ed25519) for auditors to keep."""
    services = _services()
    click.echo(str(services.audit.keys.verifier_key))
    services.dispose()


@audit_group.command("checkpoint")
@operator_errors
def audit_checkpoint() -> None:
    """Print the latest signed checkpoint (after sequencing what is waiting), to keep off the database host."""
    from referral_service.services.audit import checkpoint, integrate_all

    services = _services()
    integrate_all(services)
    click.echo(checkpoint(services), nl=False)
    services.dispose()
