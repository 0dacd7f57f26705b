"""gpunet.consumer"""
