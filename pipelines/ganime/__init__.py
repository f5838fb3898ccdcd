"""GANime (Abdalla 2022): first/last-frame in-betweening with a VQ-GAN tokenizer and a GPT-2 transformer.

A PyTorch reimplementation written from the thesis and from the behaviour of the original TensorFlow
code (which has no licence; none of its code is used here):

- ``vqgan``: the frame tokenizer (64x128 frame -> 8x16 = 128 codes from a 50257 x 128 codebook);
- ``tokens``: the transformer's token layout and the remaining-frames values;
- ``transformer``: ``transformers.GPT2LMHeadModel`` plus the learned remaining-frames embedding;
- ``inference``: the in-betweening loop (greedy or seeded top-k sampling, batched variations);
- ``loader``: our safetensors format, architecture read from the weights;
- ``convert_tf``: a best-effort converter from the original TensorFlow checkpoints;
- ``tiny``: tiny random-weight files for tests;
- ``training``: dataset preparation and the two training stages.
"""
