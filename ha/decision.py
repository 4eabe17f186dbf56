"""What one agent cycle decided (election or duties), as a value the agent logs.

The agent logs every decision at info, but a routine one (no action, following,
renewed, lease vacant, holding off) only the first time per topic since the last
real decision, so a steady leader does not fill the log. The producer says which
it is by naming the topic; nobody tells them apart by reading the sentence.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    sentence: str  # logged as is: what was decided and why
    routine_topic: str = ""  # "" for a real decision; else logged once per topic

    @property
    def routine(self) -> bool:
        return bool(self.routine_topic)

    def __str__(self) -> str:
        return self.sentence
