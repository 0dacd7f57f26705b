"""Offline simulations of the market (no network, no chain), built on the node's pure protocol modules."""
