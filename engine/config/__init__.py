"""Typed, frozen settings loaded from config.toml: the dataclasses (``settings.py``), the
parser that checks every value at load (``parse.py``), the key reader (``reader.py``) and the
README's settings table (``docs.py``). Every error names the file and the dotted key so an
operator can fix it without reading code.
"""

from engine.config.parse import config_path, load_config, parse_config
from engine.config.reader import ConfigError, Secret
from engine.config.settings import (
    LABEL_UPLOAD_COVER_S,
    LOGISTIC_MODES,
    REGION_URLS,
    AppSettings,
    ClusterSettings,
    DatabaseSettings,
    HttpSettings,
    OrangeConnexSettings,
    ReconcilerSettings,
    RetentionSettings,
    Settings,
    ShopSettings,
    SyncSettings,
    WebhooksSettings,
    database_passwords,
)

__all__ = [
    "LABEL_UPLOAD_COVER_S",
    "LOGISTIC_MODES",
    "REGION_URLS",
    "AppSettings",
    "ClusterSettings",
    "ConfigError",
    "DatabaseSettings",
    "HttpSettings",
    "OrangeConnexSettings",
    "ReconcilerSettings",
    "RetentionSettings",
    "Secret",
    "Settings",
    "ShopSettings",
    "SyncSettings",
    "WebhooksSettings",
    "config_path",
    "database_passwords",
    "load_config",
    "parse_config",
]
