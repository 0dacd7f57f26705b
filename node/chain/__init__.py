"""gpunet.chain"""
