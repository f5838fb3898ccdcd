"""Frame interpolation for anime: AnimeInterp, plus duplicate-drawing and scene-cut aware re-timing.

- :mod:`.animeinterp`: the AnimeInterp architecture (RFR flow refinement, feature pyramid, forward
  splatting, GridNet), parameter names as in the released ``anime_interp_full.ckpt``;
- :mod:`.softsplat`: forward splatting ("summation" with normalisation) in plain torch, no cupy;
- :mod:`.loader`: reading the released checkpoint (or a file in its layout), widths from shapes;
- :mod:`.timing`: duplicate frames (animation on twos/threes), scene cuts, and the re-timing plan;
- :mod:`.run`: the clip runner, pair by pair, memory bounded by one pair of frames;
- :mod:`.tiny`: a tiny random-weight model in the released layout, for tests.

Left out: AnimeInterp's segment-guided matching (SGM), which computes the initial flows from
colour-piece segmentation (trapped-ball filling on OpenCV contour maps), VGG-19 features pooled over
the segments and a global matching. It is a slow CPU pre-process with OpenCV and torch_scatter
dependencies and a VGG-19 download; the released repository ships SGM flows only for its test set.
Without it, the recurrent refinement starts from zero flow (the released code's own ``flow_init=None``
branch computes exactly that). The paper introduces SGM for matching across large flat-coloured
regions, so expect weaker results than the paper's where big textureless areas move far; the
refinement alone handles small and medium motion. :meth:`.animeinterp.AnimeInterp.forward` and
:meth:`~.animeinterp.AnimeInterp.pair_flows` still accept initial flows, should they come from elsewhere.
"""
