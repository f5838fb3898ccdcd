"""The pack's methods as plain torch/diffusers code. Nothing in here imports ComfyUI."""
