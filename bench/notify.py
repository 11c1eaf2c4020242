"""What partner notifications add to the pipeline's CPU per referral, measured in one run.

    .venv/bin/python bench/notify.py [--referrals 300] [--rounds 3] [--groups 1,10]

Copies of the same freshly migrated embedded-profile (SQLite) database, each with the same partners,
run the same kind of referrals through the real pipeline in this process, over kombu's memory://:
`submit_referral`, the outbox relay, the router, the audit log's integrator, and the notify worker's
round (`deliver_due`), which takes up each offer's partner notice from the outbox. On the *with*
copies every partner also has a webhook endpoint, so the round also writes the notification row,
signs it (standardwebhooks) and POSTs it to a keep-alive HTTP receiver in another process (its CPU is
not counted); on the *without* copies it finds no channel. Referrals come `group` at a time, so each
round finds `group` notices (group 1: one referral at a time, the worst case; group 10: about ten
referrals per second against the worker's 1 s poll). CPU is this process's CPU time per referral,
best of the rounds per part; the rounds alternate *without* and *with*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from referral_service.bootstrap import Services, bootstrap, prepare_database  # noqa: E402
from referral_service.config import Settings  # noqa: E402
from referral_service.crypto.keyring import create_keyring  # noqa: E402
from referral_service.domain.model import Actor, Role  # noqa: E402
from referral_service.services import notifications, partners, users  # noqa: E402
from referral_service.services.audit import integrate_all  # noqa: E402
from referral_service.services.referrals import submit_referral  # noqa: E402
from referral_service.services.webhooks import register_webhook  # noqa: E402
from schemas import PartnerSchema, ReferralInputSchema  # noqa: E402
from tests.pipeline import InProcessPipeline  # noqa: E402

RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as most receivers allow
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""

PARTNERS = [
    {
        "id": f"bench-{d.lower()}",
        "name": f"Bench {d}",
        "services": ["medical", "psychosocial"],
        "provinces": ["Khyber Pakhtunkhwa"],
        "districts": [d],
        "languages": ["ur", "ps"],
        "capacity": 100_000,
        "accepts_minors": True,
        "staff_sex": ["female", "male"],
    }
    for d in ("Peshawar", "Mardan")
]


def _body(i: int) -> dict[str, Any]:
    return {
        "subject": {
            "full_name": f"Bench Person {i}",
            "date_of_birth": "1991-03-04",
            "sex": "female",
            "cnic": f"61101-{i:07d}-{i % 10}",
            "phone": f"+92321{i:07d}",
            "province": "Khyber Pakhtunkhwa",
            "district": ("Peshawar", "Mardan")[i % 2],
            "preferred_language": "ur",
        },
        "incident": {"type": "bombing", "date": "2026-01-02", "narrative": "bench narrative"},
        "needs": ["medical"],
        "risk_level": "high",
        "consent": {"given": True, "method": "verbal", "share": ["contact"]},
        "preferences": {"staff_sex": "any"},
    }


def _home(root: Path, name: str, template: Path) -> Path:
    home = root / name
    shutil.copytree(template, home)
    return home


def _template(root: Path) -> Path:
    home = root / "template"
    settings = Settings.from_env({"REFERRAL_HOME": str(home)})
    create_keyring(settings.keyring_path)
    services = bootstrap(settings)
    prepare_database(services)
    partners.upsert_partners(services, PartnerSchema(many=True).load(PARTNERS))
    services.dispose()
    return home


class Meter:
    """CPU time of this process spent in each part, summed over the run."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def wrap(self, part: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[part] = self.cpu.get(part, 0.0) + time.process_time() - t

        return timed


def run_once(home: Path, *, referrals: int, url: str | None, start: int, group: int) -> dict[str, float]:
    """CPU per referral of each part: intake, relay, router, audit and the notify worker's rounds
    (which, with webhooks at `url`, write, sign and send the notification rows).
    Referrals come `group` at a time: the notify worker's round then finds `group` rows due, as it
    does at `group` referrals per second with its 1 s poll."""
    env = {"REFERRAL_HOME": str(home), "REFERRAL_WEBHOOK_ALLOW_PRIVATE": "1"}
    services: Services = bootstrap(Settings.from_env(env))
    meter = Meter()
    try:
        created = users.create_user(services, name=f"bench-{start}", role="caseworker")
        actor = Actor(created["id"], Role.CASEWORKER, None, created["name"])
        if url is not None:
            for p in PARTNERS:
                register_webhook(services, p["id"], url)
        pipeline = InProcessPipeline(services)
        pipeline.relay.publish_batch = meter.wrap("relay", pipeline.relay.publish_batch)  # type: ignore[method-assign]
        for consumer in pipeline.consumers:
            consumer.on_message = meter.wrap(consumer.group, consumer.on_message)  # type: ignore[method-assign]
        submit = meter.wrap("intake", submit_referral)
        # The audit log's integrator, one step per group as `worker integrator` takes them: part of what
        # the pipeline spends on each referral (issue 13 counts it in the pipeline's CPU too).
        integrate = meter.wrap("audit", integrate_all)
        deliver = meter.wrap("delivery", notifications.deliver_due)
        sender = notifications.Sender(services)  # the worker's, alive from round to round
        commands = [ReferralInputSchema().load(_body(start + i)) for i in range(referrals)]
        for first in range(0, referrals, group):
            batch = commands[first : first + group]
            for cmd in batch:
                submit(services, cmd, actor)
            pipeline.drain()
            integrate(services)
            # Without webhooks the worker still takes each partner notice up (and finds no channel):
            # that is what notifications cost a deployment whose partners have none.
            sent = deliver(services, sender=sender)
            if sent["delivered"] != (len(batch) if url is not None else 0):
                raise SystemExit(f"delivery failed: {sent}")
        pipeline.close()
        sender.close()
        return {part: cpu / referrals for part, cpu in meter.cpu.items()}
    finally:
        services.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", default="1,10", help="referrals per delivery round, comma-separated")
    args = parser.parse_args(argv)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    root = Path(tempfile.mkdtemp(prefix="referral-bench-notify-"))
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "referrals_per_round": args.referrals,
        "rounds": args.rounds,
        "goal": "notifications add <= 5 % to the pipeline's CPU per referral",
    }
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}/hook"
        template = _template(root)
        n = 0
        for group in (int(g) for g in args.groups.split(",")):
            runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
            for _ in range(args.rounds):  # alternate, so that drift in the machine's load hits both alike
                for name, target in (("without", None), ("with", url)):
                    n += 1
                    home = _home(root, f"run-{n}", template)
                    runs[name].append(
                        run_once(home, referrals=args.referrals, url=target, start=n * args.referrals, group=group)
                    )
            best = {name: {part: min(r.get(part, 0.0) for r in rs) for part in rs[0]} for name, rs in runs.items()}
            parts = ("intake", "relay", "router", "audit")
            without = sum(best["without"][p] for p in parts)
            with_ = sum(best["with"][p] for p in parts) + best["with"]["delivery"]
            # Within the same runs: the notify worker's rounds against the rest of the pipeline, with and
            # without the audit log's integrator in the pipeline. (The event's own transaction writes
            # nothing for notifications: only a flag on the outbox row it writes anyway.)
            direct = [r["delivery"] / (r["intake"] + r["relay"] + r["router"] + r["audit"]) for r in runs["with"]]
            direct_no_audit = [r["delivery"] / (r["intake"] + r["relay"] + r["router"]) for r in runs["with"]]
            no_channels = [
                r["delivery"] / (r["intake"] + r["relay"] + r["router"] + r["audit"]) for r in runs["without"]
            ]
            results[f"group_{group}"] = {
                "cpu_ms_per_referral_without_webhooks": {k: round(v * 1000, 3) for k, v in best["without"].items()},
                "cpu_ms_per_referral_with_webhooks": {k: round(v * 1000, 3) for k, v in best["with"].items()},
                "pipeline_cpu_ms": round(without * 1000, 3),
                "with_notifications_cpu_ms": round(with_ * 1000, 3),
                "overhead_percent_between_runs": round((with_ - without) / without * 100, 1),
                "overhead_percent_within_runs": [round(d * 100, 1) for d in direct],
                "overhead_percent_within_runs_without_audit": [round(d * 100, 1) for d in direct_no_audit],
                "partners_without_channels_percent_within_runs": [round(d * 100, 1) for d in no_channels],
            }
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(results, indent=2))
    finally:
        receiver.terminate()
        receiver.wait(5)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
