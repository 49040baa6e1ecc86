"""The episode catalog: SQLAlchemy models, Alembic migrations, a retrying repository that
returns frozen dataclasses, and the Dagster resource that hands it out."""

from pod_resources.catalog.engine import (
    DEFAULT_APPLICATION_NAME,
    CatalogConnectionError,
    CatalogError,
    LeakedTransactionError,
    dispose_engines,
    get_engine,
    install_global_idle_checkout_guard,
    install_idle_checkout_guard,
    migrate,
    redact_url,
    remove_global_idle_checkout_guard,
)
from pod_resources.catalog.models import ALLOWED_TRANSITIONS, FINISHED_STATUSES, EpisodeStatus
from pod_resources.catalog.errors import (
    EpisodeNotFoundError,
    InvalidTransitionError,
    RawMediaPurgedError,
)
from pod_resources.catalog.records import (
    Episode,
    Publication,
    Registration,
    RegistrationKind,
    StatusChange,
    UploadRecord,
    version_episode_id,
)
from pod_resources.catalog.repository import Catalog
from pod_resources.catalog.resource import CatalogResource

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DEFAULT_APPLICATION_NAME",
    "Catalog",
    "CatalogConnectionError",
    "CatalogError",
    "CatalogResource",
    "Episode",
    "EpisodeNotFoundError",
    "EpisodeStatus",
    "FINISHED_STATUSES",
    "InvalidTransitionError",
    "LeakedTransactionError",
    "Publication",
    "RawMediaPurgedError",
    "Registration",
    "RegistrationKind",
    "StatusChange",
    "UploadRecord",
    "dispose_engines",
    "get_engine",
    "install_global_idle_checkout_guard",
    "install_idle_checkout_guard",
    "migrate",
    "redact_url",
    "remove_global_idle_checkout_guard",
    "version_episode_id",
]
