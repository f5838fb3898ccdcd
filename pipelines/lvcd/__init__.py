"""LVCD (reference-based lineart video colorization, SIGGRAPH Asia 2024) on Stable Video Diffusion.

Public API (other modules build on exactly these names):

``pipelines.reference_attention.plan`` (data only; shared with ``pipelines.long_video``)
    ``FramePlan``, ``stock_plan(T)``, ``normal_plan(d, V)``, ``prevref_plan(overlap, V, ...)``.

``controlnet``
    ``SVDControlNet(unet_config: dict, conditioning_channels=3, conditioning_embedding_out_channels=(16, 32, 96, 256))``
        the SVD UNet encoder half (conv_in, time_proj, time_embedding, add_time_proj, add_embedding, down_blocks,
        mid_block) + ``controlnet_cond_embedding`` (added after conv_in) + one 1x1 ``controlnet_down_blocks[i]``
        per skip + ``controlnet_mid_block``. ``unet_config`` = ``UNetSpatioTemporalConditionModel`` kwargs.
    ``SVDControlNet.from_unet(unet, conditioning_channels=3, conditioning_embedding_out_channels=...)``
        copies the encoder weights (zero-initialised hint output / zero convs).
    ``forward(sample [B,F,C_in,h,w], timestep, encoder_hidden_states [B,1,D], added_time_ids [B,3],
              hint [B*F,3,H,W] (0..1, white lines on black, H = 8h), conditioning_scale=1.0)
        -> (down_residuals: list[Tensor [B*F,C,h',w']], mid_residual: Tensor [B*F,C,h'',w''])``
        the layout ``pipelines.svd.controlled_unet.svd_unet_forward`` takes.

``pipelines.reference_attention.attention``
    ``install_lvcd_attention(module) -> LVCDAttention`` (idempotent: a second call returns the same handle) on an SVD
        UNet or an ``SVDControlNet``: spatial attn1 -> reference attention, temporal attn1 -> masked, temporal
        Conv3d -> zero-interleaved, temporal position ids -> 0 for reference-path frames. No weights change.
    ``LVCDAttention``: ``.plan`` (``FramePlan | None``; ``None`` = stock SVD behaviour for any frame count),
        ``.set_plan(plan)``, ``with handle.use(plan): ...`` (restores the previous plan), ``.remove()``,
        ``.num_spatial_layers`` (16 UNet / 7 ControlNet at real size; index order down -> mid -> up).
    ``get_lvcd_attention(module) -> LVCDAttention | None``; helpers ``temporal_mask(plan) -> [T,T] bool`` and
        ``position_ids(plan) -> [T] long``.
    The plan's ``num_frames`` must equal the T of every forward call while it is set (B*T batches, any B; a
    mismatch raises ValueError). Install after any attention-backend switch (xformers): the stock path delegates
    to the processor present at install time; installing again after a switch re-wraps the replaced processors
    (``LVCDAttention.refresh()``). Note (as in LVCD's own code): the temporal res blocks' GroupNorm
    still pools statistics over all T frames, so the reference path is isolated in attention/conv/positions only.

``keymap``
    ``CONTROL_PREFIX = "control_model."``, ``UNET_PREFIX = "model.diffusion_model."``
    ``control_key_to_diffusers(key, layers_per_block, hint_levels=4) -> str`` / ``control_key_to_sgm(...)``
        (keys without ``control_model.``; unknown keys raise KeyError)
    ``split_lvcd_state_dict(sd, layers_per_block) -> (controlnet_sd, unet_overlay_sd)`` (diffusers names)
    ``lvcd_state_dict_to_sgm(controlnet_sd, unet_overlay_sd, layers_per_block, up_levels_with_attention) -> dict``
        (inverse, for writers); ``is_lvcd_unet_key(diffusers_key)`` (spatial/temporal attn1); ``hint_levels_of(keys)``

``loader``
    ``LVCDModel`` (dataclass): ``svd: SVDModel``, ``controlnet: SVDControlNet``, ``unet_attention`` and
        ``controlnet_attention`` (installed ``LVCDAttention`` handles), ``dtype``, ``svd_source``, ``lvcd_source``;
        ``.unet``, ``.device``, ``.to(device)``, ``.modules_for_memory()``, ``.set_plan(plan)``,
        ``with model.use_plan(plan): ...``.
    ``load_lvcd(svd_path, lvcd_path, dtype) -> LVCDModel`` (``svd_path``: sgm single file or diffusers folder, as
        ``pipelines.svd.loader.load_svd``; ``lvcd_path``: ``lvcd.ckpt`` Lightning file or ``lvcd-fp16.safetensors``;
        a wrong file or a base of another architecture raises ``AnimeVideoModelError`` naming what was found).
        The returned networks are in inference mode (``.eval()``, requires_grad False), on CPU, plan None (stock).
    ``detect_controlnet_config(control_shapes) -> (unet_encoder_kwargs, conditioning_channels, hint_widths)``.

``denoiser``
    ``LVCDDenoiser(model: LVCDModel, hints: Tensor [T,3,H,W], plan: FramePlan | None, control_scale=1.0)``: the
        ``pipelines.svd.sampler.Denoiser`` protocol, ``__call__(x_in, c_noise, hidden, time_ids, cond_latents, step)
        -> v [B,T,4,h,w]``; hints are repeated over the (CFG) batch; the plan is set on both networks for the call.

``tiny``
    ``TINY_FILES = ("lvcd/lvcd-fp16.safetensors", "checkpoints/svd.safetensors")``, ``TINY_HINT_CHANNELS``
    ``write_tiny_lvcd(models_dir, seed=0) -> list[str]`` (the two files above, real layouts)
    ``build_tiny_lvcd(seed=0) -> (unet, vae, clip, controlnet, overlay)``: the tiny SVD base modules, a random
        ControlNet and the random fine-tuned UNet attn1 tensors (diffusers names) the LVCD file overlays;
    ``lvcd_state_dict(unet, controlnet, overlay=None) -> dict`` (released layout, sgm names);
    ``write_tiny_lvcd_safetensors(path, unet, controlnet, overlay=None)`` (fp16) and
    ``write_tiny_lvcd_ckpt(path, unet, controlnet, overlay=None)`` (Lightning ``{"state_dict": ...}``, fp32).
"""
