"""gpunet.crypto"""
