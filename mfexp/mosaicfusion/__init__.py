"""MosaicFusion: mosaic layout, region diffusion, cross-attention capture and masks."""
