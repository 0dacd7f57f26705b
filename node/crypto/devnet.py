"""Keys of local development chains: anvil's well-known development accounts.

The mnemonic is anvil's default and public knowledge; its accounts are funded only on local devnets. Never use
these keys on a real chain.
"""

from __future__ import annotations

from eth_account import Account

DEVNET_MNEMONIC = "test test test test test test test test test test test junk"


def devnet_key(index: int) -> bytes:
    """Private key of anvil's development account ``index`` (derived from the public devnet mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEVNET_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return bytes(acct.key)
