"""Small shared parts of the tiny random pipelines (CPU tests)."""

from __future__ import annotations


def tiny_t5_encoder(tokenizer, d_model: int):
    """A 2-layer T5 encoder of width `d_model` for the SentencePiece fixture's vocabulary (random weights)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def eval_mode(pipe):
    """Every torch module of a freshly built pipeline in eval mode (a new T5 has dropout 0.1 in train mode)."""
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    return pipe
