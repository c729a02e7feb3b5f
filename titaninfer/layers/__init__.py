"""Model building blocks. Each layer calls a Triton kernel on CUDA and the plain-PyTorch
reference elsewhere (or everywhere when TITANINFER_REFERENCE_KERNELS=1)."""
