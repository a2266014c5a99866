"""Settings, read once from the environment (prefix ``OPCORE_``) and ``opcore.toml``."""

from config.errors import ConfigError
from config.settings import Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
