"""StreamingT2V (Henschel et al. 2024), the ModelScope variant, as the anime pipeline paper's extension stage.

- :mod:`.model`: the ModelScope UNet3D (diffusers' ``UNet3DConditionModel``) with the CAM mergers and the APM token
  mixing attached under the official names, the CAM encoder (``CAMEncoder``), the APM resampler;
- :mod:`.keys`: the released ``streaming_t2v.ckpt`` layout (prefixes, architecture from shapes, the ModelScope
  scheduler config);
- :mod:`.loader`: ``load_streaming_t2v(path)`` -> ``StreamingT2VModel`` (UNet, CAM, resampler, image encoder, text
  encoder, VAE from the one checkpoint), ``load_tokenizer``;
- :mod:`.extend`: ``adapt_clip`` (any clip -> 16 square frames), ``plan_extension`` (L + 8 k frames),
  ``extend_clip`` (the autoregressive loop: DDIM eta 1, CFG 7.5, 50 steps, one chunk of memory);
- :mod:`.refine`: the optional MS-Vid2Vid-XL refinement's math (trim, SDEdit start, randomized blending);
- :mod:`.tiny`: a tiny random ``streaming_t2v.ckpt`` in the released layout for tests.
"""
