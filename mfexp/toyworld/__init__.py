"""The toy world: its vocabulary and rendering (world.py), a tiny text-to-image model for it (t2i.py, train_t2i.py),
the toy detector's backbone pretraining and the tokenizer fixture builder. The benchmark files it makes:
mfexp.datasets.toyworld."""
