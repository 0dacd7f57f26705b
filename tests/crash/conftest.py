"""The devnet of the integration tests (anvil, contracts with windows of seconds, funded dev wallets)."""

from tests.integration.conftest import devnet  # noqa: F401 - the module-scoped fixture, shared
