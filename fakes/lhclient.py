"""Pointing a LittleHorse client at a test server (the fake or the real one)."""

from __future__ import annotations

from littlehorse.config import LHConfig


def client_env(host: str, port: int) -> dict[str, str]:
    """``LHC_*`` variables pointing a worker (e.g. a subprocess) at ``host:port``."""
    return {"LHC_API_HOST": host, "LHC_API_PORT": str(port), "LHC_API_PROTOCOL": "PLAINTEXT"}


def client_config(host: str, port: int, **extra: str) -> LHConfig:
    """An ``LHConfig`` pointed at ``host:port``; ``extra`` adds ``LHC_``/``LHW_`` keys.

    This address wins over ``LHC_*`` variables in the process environment, so a test
    never talks to a server the machine happens to be configured for.
    """
    config = LHConfig()
    values = {**client_env(host, port), **extra}
    config.load(values)
    config._configs.update(values)  # load() gives the environment precedence
    return config
