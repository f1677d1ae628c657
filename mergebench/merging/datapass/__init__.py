"""The data passes of the data-dependent methods: validation samples of a domain (samples.py), running a
Hugging Face model over them (model.py: load, tokenize, pad, decoder layers, Gram hooks), the statistics
pass that writes one store per specialist (stats.py: Grams, diagonal Fisher) and Localize-and-Stitch's
mask training (masks.py). They read checkpoints and write statistics through merging/io/; the merge
engine reads those statistics without depending on this package (RegMean++'s layer executor and the
engine's `--data` check use samples and the model plumbing)."""
