"""gpunet.api"""
