"""Background workers: outbox relay, router (a kombu consumer), deadline scheduler."""
