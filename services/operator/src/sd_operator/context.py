"""What every handler needs besides its resource: settings, the API client, the clock, the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter

from sd_operator.kube import Kube
from sd_operator.lifecycle import Policy
from sd_operator.settings import OperatorSettings

JOBS_CREATED = Counter("sd_operator_jobs_created_total", "Jobs the operator created, by owner kind", ["kind"])
FINISHED = Counter("sd_operator_resources_finished_total", "TrainingRuns and Evaluations that reached a final "
                   "phase, by kind and phase", ["kind", "phase"])
CHILDREN_CREATED = Counter("sd_operator_children_created_total", "TrainingRuns and Evaluations created by "
                           "DatasetVersion policies, by kind", ["kind"])


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class OperatorContext:
    """Passed to every handler as kopf's ``memo``."""

    settings: OperatorSettings
    kube: Kube
    now: Callable[[], datetime] = field(default=_utc_now)

    @property
    def policy(self) -> Policy:
        """The retry backoff of every run and evaluation."""
        return Policy(self.settings.retry_backoff_s, self.settings.retry_backoff_max_s)
