"""Training GANime on your own anime: dataset preparation, the VQ-GAN stage and the GPT-2 stage.

Entry points: ``scripts/ganime_prepare_dataset.py`` and ``scripts/ganime_train.py``. Nothing here is
imported by the nodes; the optional extras (``scenedetect``, ``opencv-python``) are imported only by
the dataset preparation that needs them.
"""
