"""What MergeBench is, as plain data: domains, tasks, metrics and base models.

Standard library only, so the host-side orchestrator, the report and every container can import it.
"""

from mergebench.catalog.domains import (
    DOMAIN_NAMES,
    DOMAINS,
    HARNESSES,
    TASKS,
    Domain,
    MetricSpec,
    Task,
    UnknownNameError,
    get_domain,
    get_task,
    validation_repo,
)
from mergebench.catalog.models import MODEL_NAMES, MODELS, BaseModel, get_model, specialist_repo_id

__all__ = [
    "DOMAIN_NAMES",
    "DOMAINS",
    "HARNESSES",
    "MODELS",
    "MODEL_NAMES",
    "TASKS",
    "BaseModel",
    "Domain",
    "MetricSpec",
    "Task",
    "UnknownNameError",
    "get_domain",
    "get_model",
    "get_task",
    "validation_repo",
    "specialist_repo_id",
]
