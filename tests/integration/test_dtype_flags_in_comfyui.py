"""ComfyUI's dtype flags reach the pack's ``auto`` dtypes inside a real ComfyUI (issue 10): booted with
``--fp16-unet --bf16-vae``, Load SVD on auto loads its UNet in fp16, the Wan transformer's auto is fp16, the VAE
role is bf16; an explicit dtype and the roles without a flag are untouched (dtype_flags_probe.py)."""
from probes import run_probe


def test_comfyui_dtype_flags_reach_auto_loads(comfy, tmp_path):
    r = run_probe(comfy, "dtype_flags_probe.py", tmp_path)
    print(r)
    assert r["flags"] == {"fp16_unet": True, "bf16_vae": True}
    assert r["svd_auto"] == "torch.float16" and r["svd_auto_unet"] == "torch.float16"
    assert r["svd_fp32"] == "torch.float32"
    assert r["wan_auto"] == ["torch.float16", "None"]
    assert r["vae_auto"] == "torch.bfloat16"
    assert r["other_auto"] == "torch.float32"
