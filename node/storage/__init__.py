"""gpunet.storage"""
