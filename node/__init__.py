"""gpunet: a decentralized GPU marketplace node."""
