"""The write side's one event-sourced application.

Every service shares the name ``trove``, hence one table and one notification log: the relay tails
a single, totally ordered sequence and the public stream keeps a global order.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application


class TroveApplication(Application[UUID]):
    name = "trove"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The library names each subclass after itself, which would give every service its own
        # table and log; a service only gets another store by saying so.
        if "name" not in cls.__dict__:
            cls.name = TroveApplication.name
        super().__init_subclass__(**kwargs)
