"""gpunet.p2p"""
