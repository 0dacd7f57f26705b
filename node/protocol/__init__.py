"""gpunet.protocol"""
