"""Roles of API keys. Each role may do everything the roles below it may."""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    """What a key may do; compare with ``>=`` (an operator may do what a viewer may)."""

    VIEWER = 1
    """Reads: jobs, queues, dead letters, schedules, workers, tasks, events."""
    SUBMITTER = 2
    """Also sends jobs (limited to listed tasks or queues where the key says so)."""
    OPERATOR = 3
    """Also cancels, retries, deletes, pauses, resumes and purges."""
    ADMIN = 4
    """Also manages keys and schedules, and reads the audit log."""

    @property
    def label(self) -> str:
        """The role's name as users write it: ``viewer``, ``submitter``, ..."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text`` (any case); ``ValueError`` naming the roles otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r}; use one of {names}") from None
