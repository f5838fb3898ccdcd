"""Long clips in overlapping segments, shared by LVCD colorization and long SVD image-to-video.

- :mod:`.segments`: ``LongVideoOptions``, ``plan_segments(L, N, o, tail)`` -> ``Segment`` list (no frame dropped),
  reference-index helpers;
- :mod:`.sampler`: ``LongSampler(make_denoiser, options, steps, seed, ...)`` with ``.sample(refs, L, (C, h, w))``
  -> ``LongSampleResult`` (final latents of every frame), Overlapped Blending through the EDM sampler's
  denoised hooks, noise reuse, prev-reference plans per pass, ``pass_hooks`` for more per-pass hooks (guides);
- :mod:`.decode`: ``decode_with_context(vae, latents, context_latent, scaling_factor, chunk=10, overlap=3)``, the
  chunked temporal decode with the reference latent as first-frame context (digest B4.5);
- :mod:`.svd_long`: ``long_image_to_video(model, images, SVDRequest, LongVideoOptions, hooks, on_segment_step, guide)``
  -> ``LongSVDResult``, SVD image-to-video of any length on the same scheduler (first segment = stock SVD), with
  an optional whole-clip keyframe/motion-mask guide plan.

LVCD colorization on this scheduler: ``pipelines.lvcd.colorize.colorize``.
"""
