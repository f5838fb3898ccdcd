#!/usr/bin/env python
"""Mutation check: break each named mechanism on purpose and make sure a test notices.

Every entry of ``BREAKS`` is one small deliberate change (a regex over one file and its replacement), the
mechanism it breaks, and the few tests that must fail when it is made. For each break the script copies the
repository into a temporary folder (the working tree is never edited), applies the change there, runs only
those tests (``pytest -x -q`` with a timeout) and reports:

    caught   a test failed, as it should
    MISSED   every test passed with the mechanism broken: the suite does not guard it
    DRIFT    the pattern no longer matches the code (a refactor moved it): update the entry
    ERROR    the break made the code unimportable, the tests timed out or were not found

The exit status is 0 only when every break is caught. ``--list`` prints the breaks, ``-k TEXT`` runs the ones
whose mechanism or id contains TEXT, ``--jobs N`` runs N at a time (default 2), ``--baseline`` first checks
that the selected tests pass on the unbroken copy.

    python scripts/mutation_check.py            # all breaks, a few minutes on 2 cores
    python scripts/mutation_check.py -k lvcd    # only LVCD's

The copy sits in a folder named ``animevideo`` (the repo root is a package; pytest imports it by its folder
name, which must be a Python identifier).
"""
from __future__ import annotations

import argparse
import os
import py_compile
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TIMEOUT = 300


@dataclass(frozen=True)
class Break:
    id: str  # short unique name, "<method>.<what>"
    mechanism: str  # what the break removes or alters, in words
    file: str  # path relative to the repo root
    pattern: str  # regex (re.MULTILINE); must match at least once
    replacement: str  # re.sub replacement
    tests: tuple[str, ...]  # pytest node ids or files, run with -x
    count: int = 1  # how many matches the pattern must have (0 = any number >= 1)


def _t(*ids: str) -> tuple[str, ...]:
    return tuple(ids)


LVCD_MODEL = "tests/test_lvcd_model.py"
CUNET = "tests/test_controlled_unet.py"
LONG = "tests/test_long_video.py"
GUIDED = "tests/test_svd_guided.py"
PARITY = "tests/test_svd_parity.py"
INTERP = "tests/test_interp_model.py"
SPLAT = "tests/test_interp_softsplat.py"
WAN_PACK = "tests/test_anisora_wan_packing.py"
WAN_SAMPLER = "tests/test_anisora_wan_sampler.py"
COGV = "tests/test_anisora_cogvideox.py"
ANIMESR = "tests/test_upscale_animesr.py"
STREAM = "tests/test_upscale_stream.py"
GANIME = "tests/test_ganime_inference.py"
GTOKENS = "tests/test_ganime_tokens.py"
SVD_COND = f"{PARITY}::test_conditioning_is_the_noise_augmented_image_and_the_time_ids_in_float64"
RESIDUALS = f"{CUNET}::test_nonzero_skip_and_mid_residuals_match_diffusers_forward_with_hooks[8-8]"

BREAKS: list[Break] = [
    # ---------------------------------------------------------------- LVCD / controlled SVD UNet
    Break("lvcd.skip_residuals_dropped", "ControlNet skip residuals added to the UNet's skips (s + r -> s)",
          "pipelines/svd/controlled_unet.py", r"s \+ r\.to\(s\.dtype\) for s, r in zip", "s for s, r in zip",
          _t(RESIDUALS)),
    Break("lvcd.skip_residuals_reversed", "each skip residual on its own skip (order reversed)",
          "pipelines/svd/controlled_unet.py", r"zip\(skips, down_block_residuals\)",
          "zip(skips, down_block_residuals[::-1])",
          _t(RESIDUALS)),
    Break("lvcd.mid_residual_dropped", "ControlNet mid residual added after the middle block",
          "pipelines/svd/controlled_unet.py", r"x = x \+ mid_block_residual\.to\(x\.dtype\)", "x = x",
          _t(RESIDUALS)),
    Break("lvcd.overlap_blend_last_step_only", "overlapped blending at every step (only at the last one)",
          "pipelines/long_video/sampler.py", r"if blend is not None:\n(\s+)d\[:, known_pos\] = blend\[st\.step\]",
          r"if blend is not None and st.step == st.total - 1:\n\1d[:, known_pos] = blend[st.step]",
          _t(f"{LONG}::test_overlapped_frames_follow_the_previous_pass_at_every_step")),
    Break("lvcd.overlap_blend_off", "overlapped blending (estimate of known frames replaced)",
          "pipelines/long_video/sampler.py", r"d\[:, known_pos\] = blend\[st\.step\]", "pass",
          _t(f"{LONG}::test_overlapped_frames_follow_the_previous_pass_at_every_step")),
    Break("lvcd.overlap_blend_wrong_step", "overlapped blending uses the same step's estimate",
          "pipelines/long_video/sampler.py", r"d\[:, known_pos\] = blend\[st\.step\]",
          "d[:, known_pos] = blend[max(st.step - 1, 0)]",
          _t(f"{LONG}::test_overlapped_frames_follow_the_previous_pass_at_every_step")),
    Break("lvcd.noise_roll", "known frames reuse the previous pass's noise (digest B4's roll)",
          "pipelines/long_video/sampler.py", r"parts \+= \[prev_of\(seg\.start \+ j\) for j in range\(seg\.known\)\]",
          "parts += [prev_of(seg.start + j + 1) for j in range(seg.known)]",
          _t(f"{LONG}::test_noise_roll_matches_reference_code")),
    Break("lvcd.reference_attention_off", "reference attention: the reference half of the keys",
          "pipelines/reference_attention/attention.py", r"torch\.cat\(\[x\[:, self_idx\], x\[:, ref_idx\]\], dim=2\)",
          "torch.cat([x[:, self_idx], x[:, self_idx]], dim=2)",
          _t(f"{LVCD_MODEL}::test_reference_attention_matches_float64")),
    Break("lvcd.logit_bias_not_log", "the reference half's logit bias is ln(alpha) (alpha used instead)",
          "pipelines/reference_attention/plan.py", r"math\.log\(alpha\) if alpha > 0", "alpha if alpha > 0",
          _t(f"{LVCD_MODEL}::test_prevref_bias_is_ln_alpha_exactly")),
    Break("lvcd.logit_bias_dropped", "the logit bias reaches the attention logits",
          "pipelines/reference_attention/attention.py", r"mask\[:, n:\] = bias\[:, None\]", "mask[:, n:] = 0",
          _t(f"{LVCD_MODEL}::test_reference_attention_matches_float64")),
    Break("lvcd.bias_layer_cutoff", "the bias only in layers <= bias_max_layer",
          "pipelines/reference_attention/attention.py", r"self\.layer_index <= plan\.bias_max_layer", "True",
          _t(f"{LVCD_MODEL}::test_reference_attention_matches_float64")),
    Break("lvcd.prevref_index", "prev-reference attention: overlapped frame reads its prev-ref frame",
          "pipelines/reference_attention/plan.py", r"ref_index\[ov\] = idx\[ov\] - known", "ref_index[ov] = 0",
          _t(f"{LONG}::test_pass_layout_plans_and_concat")),
    Break("lvcd.shift", "new frames' self half reads frame p - shift (Eq. 8)",
          "pipelines/reference_attention/plan.py", r"self_index\[new\] = \(idx\[new\] - shift\)\.clamp_min\(d\)",
          "self_index[new] = idx[new]",
          _t(f"{LONG}::test_pass_layout_plans_and_concat")),
    Break("lvcd.temporal_mask", "temporal attention isolates the reference-path frames",
          "pipelines/reference_attention/attention.py", r"\(is_ref\[:, None\] & \(idx\[:, None\] == idx\[None, :\]\)\) \| ",
          "(is_ref[:, None]) | ",
          _t(f"{LVCD_MODEL}::test_masked_temporal_attention_matches_float64")),
    Break("lvcd.masked_temporal_conv", "temporal convolution zero-interleaves the reference path",
          "pipelines/reference_attention/attention.py", r"self\.weight\[:, :, kt // 2: kt // 2 \+ 1\]",
          "self.weight[:, :, :1]",
          _t(f"{LVCD_MODEL}::test_masked_temporal_conv_matches_float64")),
    Break("lvcd.position_ids", "reference-path frames get temporal position 0",
          "pipelines/reference_attention/attention.py", r"timesteps = \(timesteps - plan\.num_ref_frames\)\.clamp_min\(0\)",
          "timesteps = timesteps", _t(f"{LVCD_MODEL}::test_position_ids_match_float64")),
    Break("lvcd.context_decode_keep", "the context decode drops the context frame's output",
          "pipelines/long_video/decode.py", r"sel = pix\[context \+ keep - start:\]", "sel = pix[keep - start:][:end - keep]",
          _t(f"{LONG}::test_context_decode_first_chunk_equals_whole_decode")),
    Break("lvcd.context_decode_no_context", "each decode chunk starts with the context latent",
          "pipelines/long_video/decode.py", r"parts\.insert\(0, ", "parts.insert(len(parts), ",
          _t(f"{LONG}::test_context_decode_first_chunk_equals_whole_decode")),

    # ---------------------------------------------------------------- SVD sampling and conditioning
    Break("svd.frame_linear_cfg", "CFG rises linearly over the frames",
          "pipelines/svd/sampler.py", r"torch\.linspace\(min_cfg, max_cfg, num_frames, device=device\)",
          "torch.full((num_frames,), float(max_cfg), device=device)",
          _t(f"{PARITY}::test_linear_frame_guidance")),
    Break("svd.cfg_combine", "the guided prediction v_u + g (v_c - v_u)",
          "pipelines/svd/sampler.py", r"v = v_uncond \+ guidance \* \(v_cond - v_uncond\)",
          "v = v_cond + guidance * (v_cond - v_uncond)",
          _t(f"{PARITY}::test_sampler_implements_edm_v_preconditioning_and_euler_in_float64")),
    Break("svd.augmentation", "noise augmentation of the concat image",
          "pipelines/svd/conditioning.py", r"x = x \+ augmentation_level \* aug_noise", "x = x + 0 * aug_noise",
          _t(SVD_COND)),
    Break("svd.time_ids_fps", "time ids are [fps - 1, motion, aug]",
          "pipelines/svd/conditioning.py", r"\[\[fps - 1, motion_bucket_id, augmentation_level\]\]",
          "[[fps, motion_bucket_id, augmentation_level]]",
          _t(SVD_COND)),
    Break("svd.time_ids_order", "time ids order (motion and aug swapped)",
          "pipelines/svd/conditioning.py", r"\[\[fps - 1, motion_bucket_id, augmentation_level\]\]",
          "[[fps - 1, augmentation_level, motion_bucket_id]]",
          _t(SVD_COND)),
    Break("svd.edm_c_skip", "EDM preconditioning c_skip = 1/(s^2+1)",
          "pipelines/svd/sampler.py", r"\(x / \(sigma \*\* 2 \+ 1\)\)", "(x / (sigma ** 2 + 1) ** 0.5)",
          _t(f"{PARITY}::test_sampler_implements_edm_v_preconditioning_and_euler_in_float64")),
    Break("guide.last_step_only", "the guide hook replaces the estimate at every step (only at the last one)",
          "pipelines/svd/guided.py", r"return d \* \(1 - ww\) \+ gg \* ww",
          "return d if state.step < state.total - 1 else d * (1 - ww) + gg * ww",
          _t(f"{GUIDED}::test_held_latents_ride_the_guide_trajectory_at_every_step")),
    Break("guide.strength", "keyframe strength weights the blend",
          "pipelines/svd/guided.py", r"weight\[r\.index\] = r\.keyframe\.strength", "weight[r.index] = 1.0",
          _t(f"{GUIDED}::test_keyframe_strength_blends_the_denoised_estimate")),
    Break("guide.mask_dilation", "the moving region is dilated by one latent pixel",
          "pipelines/svd/guided.py", r"moving = F\.max_pool2d\(moving, kernel_size=2 \* dilate \+ 1",
          "moving = F.max_pool2d(moving, kernel_size=1",
          _t("tests/test_guides.py::test_latent_motion_mask_cells_threshold_and_dilation")),

    # ---------------------------------------------------------------- AniSora (Wan2.1 and CogVideoX V1)
    Break("anisora.mask_first_frame_x4", "frame 0's mask repeated 4 times in front (causal first latent)",
          "pipelines/anisora/packing.py", r"known_lat\[:1\]\.expand\(TEMPORAL, h, w\)",
          "known_lat[:1].expand(TEMPORAL, h, w).roll(1, 0) * torch.tensor([0.0, 1, 1, 1]).view(4, 1, 1)",
          _t(f"{WAN_PACK}::test_first_frame_mask_equals_diffusers_construction")),
    Break("anisora.mask_channel_layout", "mask viewed (T_lat, 4, h, w) then transposed to (4, T_lat, h, w)",
          "pipelines/anisora/packing.py", r"full\.reshape\(-1, TEMPORAL, h, w\)\.transpose\(0, 1\)",
          "full.reshape(TEMPORAL, -1, h, w)", _t(f"{WAN_PACK}::test_pack_mask_reshape_by_hand")),
    Break("anisora.keyframe_slot", "pixel frame i >= 1 lands in latent slot (i-1)//4 + 1",
          "pipelines/anisora/packing.py", r"return \(pixel_index - 1\) // TEMPORAL \+ 1, \(pixel_index - 1\) % TEMPORAL",
          "return pixel_index // TEMPORAL + 1, pixel_index % TEMPORAL", _t(f"{WAN_PACK}::test_latent_slot_table")),
    Break("anisora.strength_counts_as_one", "a keyframe strength >= 0.5 counts as 1 (binary mask)",
          "pipelines/anisora/packing.py", r"keyframes=tuple\(replace\(k, strength=1\.0\) for k in guide\.keyframes\)",
          "keyframes=tuple(guide.keyframes)", _t(f"{WAN_PACK}::test_strength_from_half_counts_as_one",
                                                  f"{WAN_PACK}::test_strength_counts_as_one_in_the_static_region_too")),
    Break("anisora.mask_binary", "soft motion-mask edges rounded at 0.5 (binary mask)",
          "pipelines/anisora/packing.py", r"binary = \(known >= MIN_STRENGTH\)\.float\(\)", "binary = known.float()",
          _t(f"{WAN_PACK}::test_soft_mask_edges_are_binarised")),
    Break("anisora.guide_video_zero_unknown", "the guide video is zero (mid-grey) where nothing is known",
          "pipelines/anisora/packing.py", r"\* 2\.0 - 1\.0\) \* binary\[f\]", "* 2.0 - 1.0)",
          _t(f"{WAN_PACK}::test_motion_mask_keeps_outside_known_on_every_frame")),
    Break("anisora.wan_condition_every_step", "the mask + guide condition enters the transformer at every step",
          "pipelines/anisora/wan.py", r"inp = torch\.cat\(\[x, cond\], dim=1\)",
          "inp = torch.cat([x, cond if float(t) > 500 else torch.zeros_like(cond)], dim=1)",
          _t(f"{WAN_SAMPLER}::test_first_frame_parity_with_diffusers_pipeline")),
    Break("anisora_core.guide_latent_device", "the core route leaves the guide latent where the VAE put it",
          "nodes/anisora_core.py", r'values = \{"concat_latent_image": core\.concat_latent_image,',
          'values = {"concat_latent_image": core.concat_latent_image.to(bridge.intermediate_device()),',
          _t("tests/test_anisora_core_device.py::test_guide_latent_keeps_the_vaes_device_and_dtype")),
    Break("anisora_core.conditioning_copied", "the core route copies the incoming conditioning's options",
          "nodes/anisora_core.py", r"return \[\[t\[0\], \{\*\*t\[1\], \*\*values\}\] for t in conditioning\]",
          "return [[t[0], t[1].update(values) or t[1]] for t in conditioning]",
          _t("tests/test_anisora_core_device.py::test_incoming_conditioning_is_not_modified")),
    Break("queue_many.seed_per_clip", "queue_many gives clip i the seed first + i",
          "scripts/queue_many.py", r"\{n: first_seed \+ i for n in SEED_INPUTS\}", "{n: first_seed for n in SEED_INPUTS}",
          _t("tests/test_queue_many.py::test_clips_go_round_robin_with_one_seed_each")),
    Break("anisora.v1_blend_last_step_only", "V1 motion mask: static region reset after every step (last only)",
          "pipelines/anisora/cogvideox.py", r"if blend is not None:\n(\s+)prev = ",
          r"if blend is not None and i == len(timesteps) - 1:\n\1prev = ",
          _t(f"{COGV}::test_motion_mask_resets_the_static_region_after_every_step")),
    Break("anisora.v1_blend_noise_level", "V1 static region noised to the previous step's timestep",
          "pipelines/anisora/cogvideox.py", r"prev = int\(t\.item\(\)\) - scheduler\.config\.num_train_timesteps // steps",
          "prev = int(t.item())", _t(f"{COGV}::test_motion_mask_resets_the_static_region_after_every_step")),
    Break("anisora.v1_keyframe_strength", "V1 guide latent times the keyframe strength",
          "pipelines/anisora/cogvideox.py", r"\* scale \* r\.keyframe\.strength", "* scale",
          _t(f"{COGV}::test_guide_latents_layout")),
    Break("anisora.v1_keyframe_slot", "V1 keyframe i at latent slot (i-1)//4 + 1",
          "pipelines/anisora/cogvideox.py", r"return 0 if i == 0 else \(i - 1\) // TEMPORAL_RATIO \+ 1",
          "return 0 if i == 0 else i // TEMPORAL_RATIO", _t(f"{COGV}::test_guide_latents_layout")),

    # ---------------------------------------------------------------- AnimeSR and the upscaler
    Break("animesr.state_dropped", "AnimeSR's hidden state carried to the next frame",
          "pipelines/upscale/animesr.py", r"return sr, F\.leaky_relu\(out\[:, sr_ch:\], LRELU\)",
          "return sr, 0 * F.leaky_relu(out[:, sr_ch:], LRELU)",
          _t(f"{ANIMESR}::test_cell_matches_the_functional_reference")),
    Break("animesr.feedback_dropped", "the previous SR frame fed back (pixel-unshuffled)",
          "pipelines/upscale/animesr.py", r"F\.pixel_unshuffle\(prev_sr, s\), state\)",
          "F.pixel_unshuffle(prev_sr * 0, s), state)",
          _t(f"{ANIMESR}::test_cell_matches_the_functional_reference")),
    Break("animesr.window_order", "the LR window is (t-1, t, t+1)",
          "pipelines/upscale/animesr.py", r"window = torch\.cat\(\(x\[:, max\(i - 1, 0\)\], x\[:, i\], x\[:, min\(i \+ 1, n - 1\)\]\)",
          "window = torch.cat((x[:, min(i + 1, n - 1)], x[:, i], x[:, max(i - 1, 0)])",
          _t(f"{ANIMESR}::test_forward_reuses_border_frames_and_starts_from_zeros")),
    Break("animesr.state_across_chunks", "the recurrent state survives chunk borders in the streaming runner",
          "pipelines/upscale/stream.py", r"prev_sr, state = self\.animesr_step\(window, prev_sr, state\)",
          "prev_sr, state = self.animesr_step(window, prev_sr, state if i % self.chunk else state * 0)",
          _t(f"{STREAM}::test_animesr_streaming_equals_whole_clip_across_chunk_borders")),
    Break("upscale.tile_ramp", "tile seams blended with linear ramps",
          "pipelines/svd/decode.py", r"r = \(torch\.arange\(overlap, dtype=torch\.float32\) \+ 0\.5\) / overlap",
          "r = ((torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap) ** 2",
          _t(f"{STREAM}::test_tile_seams_are_blended_with_linear_ramps_float64")),
    Break("upscale.tile_normalisation", "blended tiles divided by the summed weights",
          "pipelines/upscale/stream.py", r"self\.inv = 1\.0 / wsum", "self.inv = 1.0 / wsum.amax()",
          _t(f"{STREAM}::test_tile_seams_are_blended_with_linear_ramps_float64")),
    Break("upscale.tile_placement", "each tile's output placed at scale x its input box",
          "pipelines/upscale/stream.py", r"acc\[\.\.\., y0 \* s:y1 \* s, x0 \* s:x1 \* s\] \+= o\.float\(\) \* wt",
          "acc[..., y0 * s:y1 * s, x0 * s:x1 * s] += o.float().flip(-1) * wt",
          _t(f"{STREAM}::test_tile_seams_are_blended_with_linear_ramps_float64")),

    # ---------------------------------------------------------------- GANime
    Break("ganime.previous_order", "previous frames in the context oldest first",
          "pipelines/ganime/inference.py", r"suffix = torch\.cat\(\[context\[:, j\] for j in step\.previous\], dim=1\)",
          "suffix = torch.cat([context[:, j] for j in reversed(step.previous)], dim=1)",
          _t(f"{GANIME}::test_generate_feeds_the_thesis_layout_at_every_step")),
    Break("ganime.remaining_value", "remaining-frames value r = n - 1 - c",
          "pipelines/ganime/tokens.py", r"return n_frames - 1 - c$", "return n_frames - c",
          _t(f"{GTOKENS}::test_remaining_frames_values")),
    Break("ganime.cache_causal", "the cached (shared-prefix) pass keeps the suffix causal",
          "pipelines/ganime/transformer.py", r"allowed\[:, p_len:\] = torch\.ones\(s_len, s_len, dtype=torch\.bool, device=xs\.device\)\.tril\(\)",
          "allowed[:, p_len:] = torch.ones(s_len, s_len, dtype=torch.bool, device=xs.device)",
          _t(f"{GANIME}::test_shared_prefix_equals_the_hugging_face_forward")),
    Break("ganime.cache_positions", "suffix positions continue after the prefix",
          "pipelines/ganime/transformer.py", r"xs = self\._embed\(suffix_ids, r_emb\[prefix_of_row\], p_len\)",
          "xs = self._embed(suffix_ids, r_emb[prefix_of_row], 0)",
          _t(f"{GANIME}::test_shared_prefix_equals_the_hugging_face_forward")),
    Break("ganime.remaining_embedding", "the remaining-frames embedding added at every position",
          "pipelines/ganime/transformer.py", r"return tr\.wte\(ids\) \+ tr\.wpe\(pos\)\[None\] \+ r_emb\[:, None, :\]",
          "return tr.wte(ids) + tr.wpe(pos)[None]",
          _t(f"{GANIME}::test_shared_prefix_equals_the_hugging_face_forward")),

    # ---------------------------------------------------------------- AnimeInterp
    Break("interp.correlation_scale", "correlation volume scaled by 1/sqrt(d) (1/d instead)",
          "pipelines/interpolate/animeinterp.py", r"/ math\.sqrt\(d\)", "/ d",
          _t(f"{INTERP}::test_correlation_volume_matches_float64")),
    Break("interp.pyramid_pooling", "correlation pyramid levels average-pooled 2x",
          "pipelines/interpolate/animeinterp.py", r"corr = F\.avg_pool2d\(corr, 2, stride=2\)",
          "corr = F.max_pool2d(corr, 2, stride=2)",
          _t(f"{INTERP}::test_correlation_pyramid_lookup_matches_float64")),
    Break("interp.lookup_window_order", "lookup window: x offset along the first axis (RAFT's order)",
          "pipelines/interpolate/animeinterp.py", r"torch\.stack\(\[ox, oy\], dim=-1\)", "torch.stack([oy, ox], dim=-1)",
          _t(f"{INTERP}::test_correlation_pyramid_lookup_matches_float64")),
    Break("interp.refine_update", "flow refinement: each iteration adds the update block's delta",
          "pipelines/interpolate/animeinterp.py", r"coords1 = coords1 \+ delta\.float\(\)",
          "coords1 = coords1 + 0.5 * delta.float()",
          _t(f"{INTERP}::test_flow_refinement_loop_matches_its_float64_rederivation")),
    Break("interp.refine_init_twice", "the initial flow is added twice (released RFR)",
          "pipelines/interpolate/animeinterp.py", r"coords1 = coords1 \+ 2 \* flow_init\.float\(\)",
          "coords1 = coords1 + flow_init.float()",
          _t(f"{INTERP}::test_flow_refinement_loop_matches_its_float64_rederivation")),
    Break("interp.convex_upsample", "convex upsampling scales the flow by 8",
          "pipelines/interpolate/animeinterp.py", r"F\.unfold\(UPSAMPLE \* flow", "F.unfold(flow",
          _t(f"{INTERP}::test_convex_upsample_matches_float64")),
    Break("interp.splat_bilinear", "forward splatting's bilinear corner weights",
          "pipelines/interpolate/softsplat.py", r"\(1, 0, fx \* \(1 - fy\)\)", "(1, 0, fy * (1 - fx))",
          _t(f"{SPLAT}::test_matches_float64_reference_on_random_flows")),
    Break("interp.splat_normalisation", "splatted values divided by the splatted ones-image",
          "pipelines/interpolate/softsplat.py", r"total / torch\.where\(positive, weight, torch\.ones_like\(weight\)\)",
          "total", _t(f"{SPLAT}::test_normalised_splat_divides_by_the_splatted_ones_where_positive")),
    Break("interp.synthesis_time", "synthesis splats frame 2 by (1 - t) F21",
          "pipelines/interpolate/animeinterp.py", r"flow = torch\.cat\(\[t \* F12, \(1 - t\) \* F21\]\)\n(\s+)top",
          r"flow = torch.cat([t * F12, t * F21])\n\1top",
          _t(f"{INTERP}::test_synthesis_matches_its_float64_composition")),
    Break("interp.synthesis_order", "GridNet gets [frame 1, frame 2] per level",
          "pipelines/interpolate/animeinterp.py", r"torch\.cat\(\[x\[:n\], x\[n:\]\], dim=1\)",
          "torch.cat([x[n:], x[:n]], dim=1)",
          _t(f"{INTERP}::test_synthesis_matches_its_float64_composition")),
    # ---------------------------------------------------------------- managed models (the real-ComfyUI side:
    # tests/integration/test_managed_models_in_comfyui.py, which needs a ComfyUI and is not run here)
    Break("models.ref_keeps_model", "a loader output lets go of its model on Unload Models (ModelRef.release)",
          "pipelines/model_cache.py", r"def release\(self\):\n        self\._model = None",
          "def release(self):\n        pass",
          _t("tests/test_model_cache.py::test_a_model_ref_holds_the_model_until_release_all_and_loads_it_again_after")),
    Break("models.kept_after_run", "keep_on_gpu off: the model goes back to the offload device after a run",
          "nodes/comfy_bridge.py", r"        if not keep_on_gpu:\n            off = offload_device\(\)",
          "        if False:\n            off = offload_device()",
          _t("tests/test_loader_factory.py::test_outside_comfyui_a_run_moves_the_model_and_puts_it_back_unless_kept")),
    # ---------------------------------------------------------------- Wan2.2 experts, StreamingT2V, text-to-video
    Break("wan22.expert_switch", "t >= boundary*1000 goes to the high-noise expert, the rest to the low-noise one",
          "pipelines/anisora/wan.py", r"return self\.boundary is None or float\(t\) >= self\.boundary",
          "return True", _t("tests/test_anisora_wan22.py::test_both_experts_matter")),
    Break("stt2v.merger_groupnorm", "the CAM merger normalises x (GroupNorm over C/G, F, H, W) before attending",
          "pipelines/streaming_t2v/model.py", r"xn = self\.norm\(x\.permute\(0, 2, 1, 3, 4\)\)",
          "xn = x.permute(0, 2, 1, 3, 4)",
          _t("tests/test_streaming_t2v_model.py::test_cam_merger_matches_float64_rederivation")),
    Break("stt2v.apm_gate", "APM image tokens enter through SiLU(alpha), not alpha",
          "pipelines/streaming_t2v/model.py", r"return text \+ mixed \* F\.silu\(attn\.alpha\)",
          "return text + mixed * attn.alpha",
          _t("tests/test_streaming_t2v_model.py::test_apm_token_mixing_matches_float64_rederivation")),
    Break("stt2v.appends_last_8", "each chunk appends its LAST 8 frames",
          "pipelines/streaming_t2v/extend.py", r"chunk\[CHUNK_FRAMES - NEW_FRAMES:\]", "chunk[:NEW_FRAMES]",
          _t("tests/test_streaming_t2v_extend.py::test_loop_appends_the_last_8_frames_of_each_chunk")),
    Break("t2v.cfg", "classifier-free guidance: uncond + s * (cond - uncond) on the [uncond; cond] batch",
          "pipelines/t2v/sampler.py", r"uncond, cond = pred\.chunk\(2\)", "cond, uncond = pred.chunk(2)",
          _t("tests/test_t2v_parity.py::test_modelscope_matches_diffusers")),
    Break("registry.svd_vae", "the registry tells an SVD VAE by its temporal decoder",
          "pipelines/svd/detect.py", r"any\(k\.startswith\(\"decoder\.\"\) and \(\"\.time_stack\.\" in k or \"time_mix\" in k\) for k in ks\)",
          "False", _t("tests/test_registry.py::test_svd_parts_alone_are_identified_with_and_without_their_prefix")),
]


# ------------------------------------------------------------------------------------------------------------
def _ignore(dirpath, names):
    skip = {".git", "__pycache__", ".pytest_cache", ".venv", "tiny_models", ".whl", ".gl"}
    return [n for n in names if n in skip]


def copy_repo(dest_parent: str) -> str:
    dest = os.path.join(dest_parent, "animevideo")
    shutil.copytree(ROOT, dest, ignore=_ignore, symlinks=True)
    return dest


def find_matches(b: Break, root: str = ROOT) -> int:
    with open(os.path.join(root, b.file), encoding="utf-8") as fh:
        return len(re.findall(b.pattern, fh.read(), flags=re.MULTILINE))


def drift(b: Break, root: str = ROOT) -> str | None:
    """None when the break applies to the code as it is, else what is wrong."""
    path = os.path.join(root, b.file)
    if not os.path.exists(path):
        return f"{b.file} does not exist"
    n = find_matches(b, root)
    if n == 0 or (b.count and n != b.count):
        return f"pattern matches {n} time(s) in {b.file}, expected {b.count or '>= 1'}"
    for t in b.tests:
        file, _, name = t.partition("::")
        tpath = os.path.join(root, file)
        if not os.path.exists(tpath):
            return f"test file {file} does not exist"
        if name:
            with open(tpath, encoding="utf-8") as fh:
                if not re.search(rf"^def {re.escape(name.split('[')[0])}\(", fh.read(), flags=re.MULTILINE):
                    return f"test {name} not found in {file}"
    return None


def apply_break(b: Break, root: str):
    path = os.path.join(root, b.file)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    new, n = re.subn(b.pattern, b.replacement, text, flags=re.MULTILINE)
    if n == 0 or new == text:
        raise RuntimeError(f"{b.id}: the pattern did not change {b.file}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(new)
    py_compile.compile(path, doraise=True)


_RUNNING: set[subprocess.Popen] = set()
_LOCK = threading.Lock()


def run_tests(root: str, tests, timeout: int) -> tuple[int | None, str]:
    # one thread per pytest: the jobs share the machine's cores instead of oversubscribing them
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", ANIMEVIDEO_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with _LOCK:
        _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "timeout"
    finally:
        with _LOCK:
            _RUNNING.discard(proc)
    lines = out.strip().splitlines()
    failed = next((ln for ln in lines if ln.startswith("FAILED")), "")
    return proc.returncode, failed or (lines[-1] if lines else "")


def check_one(b: Break, timeout: int, baseline: bool, workdir: str) -> tuple[str, str, float]:
    start = time.time()
    problem = drift(b)
    if problem:
        return "DRIFT", problem, 0.0
    tmp = tempfile.mkdtemp(prefix=b.id.replace(".", "_") + "_", dir=workdir)
    try:
        root = copy_repo(tmp)
        if baseline:
            rc, line = run_tests(root, b.tests, timeout)
            if rc != 0:
                return "ERROR", f"tests fail before the break: {line}", time.time() - start
        try:
            apply_break(b, root)
        except (RuntimeError, py_compile.PyCompileError) as e:
            return "ERROR", f"the break does not compile: {e}", time.time() - start
        rc, line = run_tests(root, b.tests, timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.time() - start
    if rc == 1:
        return "caught", line.removeprefix("FAILED ").split(" - ")[0], took
    if rc == 0:
        return "MISSED", "all selected tests passed", took
    return "ERROR", f"pytest exit {rc}: {line}", took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", dest="select", default="", help="only breaks whose id or mechanism contains this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per pytest run")
    ap.add_argument("--baseline", action="store_true", help="check the tests pass unbroken first")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    chosen = [b for b in BREAKS if args.select.lower() in (b.id + " " + b.mechanism).lower()]
    if args.list:
        for b in chosen:
            print(f"{b.id:38s} {b.file}  ->  {' '.join(b.tests)}")
        return 0
    if not chosen:
        print(f"no break matches '{args.select}'")
        return 2
    print(f"{len(chosen)} breaks, {args.jobs} at a time", flush=True)
    results = {}
    # Every copy lives under one folder that is removed however the run ends (Ctrl-C, SIGTERM included); the
    # working tree itself is never written to.
    workdir = tempfile.mkdtemp(prefix="mutation_check_")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
    try:
        futures = {b.id: pool.submit(check_one, b, args.timeout, args.baseline, workdir) for b in chosen}
        for b in chosen:
            status, detail, took = futures[b.id].result()
            results[b.id] = (status, detail)
            print(f"  {status:7s} {b.id} ({took:.0f} s)", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping the running tests", flush=True)
        pool.shutdown(wait=False, cancel_futures=True)
        with _LOCK:
            for proc in list(_RUNNING):
                proc.kill()
        return 130
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| break | mechanism | result | caught by |")
    print("|---|---|---|---|")
    for b in chosen:
        status, detail = results[b.id]
        print(f"| `{b.id}` | {b.mechanism} | {status} | {detail} |")
    bad = [b.id for b in chosen if results[b.id][0] != "caught"]
    print()
    print(f"{len(chosen) - len(bad)}/{len(chosen)} caught" + (f"; not caught: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
