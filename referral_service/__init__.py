"""Victim Assistance Network referral service."""

__version__ = "0.1.0"
