"""gpunet.provider"""
