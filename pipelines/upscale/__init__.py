"""Video upscaling: AnimeSR (our own module, recurrent) and spandrel's single-image models (Real-ESRGAN anime
family and others), run frame by frame in chunks with bounded working memory.

- :mod:`.animesr`: the MSRSWVSR architecture under the official parameter names (strict loading);
- :mod:`.loader`: reads a file from ``upscale_models`` and tells which architecture it holds;
- :mod:`.stream`: the chunked runner (recurrent state across chunks, tiles, OOM fallback, Lanczos rescaling);
- :mod:`.tiny`: tiny random-weight files in the released formats, for tests and CPU demos.
"""
